"""SIGKILL a writer in the middle of persisting engine steps, restart it, repeat: the
store holds exactly the committed steps, each whole, and the writer resumes from them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from coordinator.store import Store
from tests.store.conftest import Backend
from tests.store.crash_writer import HOSTS

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 4
STEPS_PER_ROUND = 15


def _run_until_killed(backend: Backend) -> int:
    """Start the writer, let it commit some steps, SIGKILL it; the last step it printed
    (it may have run ahead of what we read, so the rest of its output counts too)."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", backend.name, backend.target],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    lines = []
    try:
        for line in writer.stdout:
            lines.append(line)
            if len(lines) == STEPS_PER_ROUND:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        rest, stderr = writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL, stderr
    lines += rest.splitlines(keepends=True)
    complete = [int(line) for line in lines if line.endswith("\n")]
    assert len(complete) >= STEPS_PER_ROUND, stderr
    return complete[-1]


async def test_sigkill_mid_write_keeps_exactly_the_committed_steps(
    backend: Backend, store: Store
) -> None:
    printed = 0
    for _ in range(ROUNDS):
        # Blocking on purpose: the writer is another process and the store is idle.
        confirmed = _run_until_killed(backend)
        assert confirmed > printed  # each round resumed after the last one's steps
        printed = confirmed

        saved = await store.get_deployment("d-1")
        assert saved is not None
        stored = int(saved.body)
        # Everything it confirmed is there; at most one more step committed unconfirmed.
        assert stored in {printed, printed + 1}

        commands = await store.commands("d-1")
        assert sorted(c.id for c in commands) == sorted(
            f"cmd-{step}-{host}" for step in range(1, stored + 1) for host in HOSTS
        )
        events = await store.events(deployment="d-1", limit=10_000)
        assert [e.evidence["step"] for e in events] == list(range(1, stored + 1))
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        printed = stored
