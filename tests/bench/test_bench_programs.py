"""The programs `make bench` runs: every executable file directly in bench/ (a package
folder is not one), each a wrapper that starts its benchmark with the project's Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def make_bench_programs() -> list[str]:
    """What the Makefile's loop `[ -x "$b" ] && [ -f "$b" ]` over bench/* runs."""
    return sorted(p.name for p in BENCH_DIR.iterdir() if p.is_file() and os.access(p, os.X_OK))


def test_make_bench_runs_each_benchmark_once() -> None:
    programs = make_bench_programs()
    # Each benchmark is one wrapper; its Python module is not a second program.
    assert [name for name in programs if name.endswith(".py")] == []
    assert {"agent_footprint", "coordinator_ingest", "decisions", "faults"} <= set(programs)
    for name in programs:
        assert (BENCH_DIR / name).read_text().startswith("#!"), name


def run_coordinator_ingest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH_DIR / "coordinator_ingest"), *args],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_coordinator_ingest_wrapper_starts_its_package() -> None:
    done = run_coordinator_ingest("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bench/coordinator_ingest")
    for option in ("--quick", "--phases", "--ingest-rates", "--fleet-window", "--keep"):
        assert option in done.stdout
    # The child processes' own options are not the operator's business.
    assert "--role" not in done.stdout
    assert "--spec" not in done.stdout


def test_an_unknown_phase_is_refused_before_anything_starts() -> None:
    done = run_coordinator_ingest("--phases", "ingest,rolback")
    assert done.returncode == 2
    assert "unknown phase rolback" in done.stderr
    assert done.stdout == ""
