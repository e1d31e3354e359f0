"""Preflight commands run for real: exit codes, timeouts that kill the whole process
group, output tails, a missing executable, and a real pg_dump."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from coordinator.daemon.preflight import PreflightOutcome, run_preflight
from shared.config.coordinator import PreflightCommand


def cmd(name: str, *argv: str, timeout: float = 10.0) -> PreflightCommand:
    return PreflightCommand(name=name, argv=list(argv), timeout=timeout)


async def run_single(command: PreflightCommand) -> PreflightOutcome:
    [outcome] = await run_preflight([command])
    return outcome


def process_gone(pid: int) -> bool:
    """Gone or a zombie: a container's PID 1 may never reap an orphan, but a zombie
    runs nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until_gone(pid: int, bound: float = 5.0) -> None:
    deadline = time.monotonic() + bound
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


async def test_true_succeeds() -> None:
    outcome = await run_single(cmd("env-check", "true"))
    assert outcome.ok
    assert outcome.exit_code == 0
    assert not outcome.timed_out
    assert not outcome.skipped
    assert outcome.error is None
    assert outcome.output_tail == ""
    assert outcome.duration >= 0


async def test_false_fails_with_its_exit_code() -> None:
    outcome = await run_single(cmd("env-check", "false"))
    assert not outcome.ok
    assert outcome.exit_code == 1
    assert not outcome.timed_out


async def test_first_failure_stops_the_rest() -> None:
    outcomes = await run_preflight(
        [
            cmd("first", "true"),
            # The argv runs sh on purpose; run_preflight itself never uses a shell.
            cmd("backup", "sh", "-c", "echo hi; echo oops >&2; exit 3"),
            cmd("after", "true"),
            cmd("later", "true"),
        ]
    )
    assert [(o.name, o.ok, o.skipped) for o in outcomes] == [
        ("first", True, False),
        ("backup", False, False),
        ("after", False, True),
        ("later", False, True),
    ]
    backup = outcomes[1]
    assert backup.exit_code == 3
    # stdout and stderr in one stream, in order.
    assert backup.output_tail == "hi\noops\n"
    assert outcomes[2].exit_code is None
    assert outcomes[2].argv == ["true"]


async def test_arguments_are_not_interpreted_by_a_shell() -> None:
    outcome = await run_single(cmd("echo", "echo", "$HOME; rm -rf /", "`id`"))
    assert outcome.ok
    assert outcome.output_tail == "$HOME; rm -rf / `id`\n"


async def test_missing_executable_is_an_error_outcome() -> None:
    outcomes = await run_preflight(
        [cmd("missing", "/nonexistent/rollguard-no-such-binary", "x"), cmd("next", "true")]
    )
    missing, following = outcomes
    assert not missing.ok
    assert missing.exit_code is None
    assert missing.error is not None
    assert "rollguard-no-such-binary" in missing.error
    assert following.skipped


async def test_missing_executable_on_path() -> None:
    outcome = await run_single(cmd("missing", "rollguard-no-such-binary-on-path"))
    assert not outcome.ok
    assert outcome.error is not None


async def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; echo started; wait"
    started = time.monotonic()
    outcome = await run_single(cmd("slow", "sh", "-c", script, timeout=0.5))
    elapsed = time.monotonic() - started

    assert outcome.timed_out
    assert not outcome.ok
    assert outcome.exit_code == -9
    assert "started" in outcome.output_tail
    assert elapsed < 10, "a timed-out command must not hold the caller"
    child = int(pidfile.read_text())
    wait_until_gone(child)
    assert process_gone(child), f"child {child} of the timed-out command is still running"


async def test_straggler_holding_the_output_open_is_killed(tmp_path: Path) -> None:
    """A command that exits 0 but leaves a child holding stdout must neither hang the
    preflight until its timeout nor leave the child running."""
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; echo done"
    outcome = await run_single(cmd("leaky", "sh", "-c", script, timeout=20))
    assert outcome.ok
    assert outcome.duration < 10
    assert outcome.output_tail == "done\n"
    child = int(pidfile.read_text())
    wait_until_gone(child)
    assert process_gone(child)


async def test_large_output_keeps_only_the_tail() -> None:
    code = "import sys; sys.stdout.write('x' * 200_000 + 'THE END\\n')"
    outcome = await run_single(cmd("loud", sys.executable, "-c", code))
    assert outcome.ok
    assert outcome.output_bytes == 200_008
    assert len(outcome.output_tail) == 4096
    assert outcome.output_tail.endswith("xTHE END\n")


async def test_tail_size_is_configurable() -> None:
    [outcome] = await run_preflight([cmd("loud", "sh", "-c", "seq 1 1000")], tail_bytes=9)
    assert outcome.output_tail == "999\n1000\n"


async def test_env_is_added_to_the_coordinator_environment() -> None:
    [outcome] = await run_preflight(
        [cmd("env", "sh", "-c", 'echo "$ROLLGUARD_PREFLIGHT_TEST:$HOME"')],
        env={"ROLLGUARD_PREFLIGHT_TEST": "set"},
    )
    assert outcome.ok, outcome
    assert outcome.output_tail == f"set:{os.environ.get('HOME', '')}\n"


async def test_no_commands_means_nothing_to_run() -> None:
    assert await run_preflight([]) == []


@pytest.mark.integration
async def test_real_pg_dump_of_the_test_database(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE releases (id serial PRIMARY KEY, version text NOT NULL)")
        conn.execute("INSERT INTO releases (version) VALUES ('2.4.0'), ('2.4.1')")
    dump = tmp_path / "backup.sql"
    outcomes = await run_preflight(
        [
            cmd("backup", "pg_dump", "--no-password", "-f", str(dump), pg_url, timeout=60),
            cmd("check", "grep", "-c", "2.4.1", str(dump)),
        ]
    )
    assert [o.ok for o in outcomes] == [True, True], outcomes
    text = dump.read_text()
    assert "CREATE TABLE public.releases" in text
    assert "2.4.1" in text


@pytest.mark.integration
async def test_failed_pg_dump_stops_the_deployment(pg_url: str, tmp_path: Path) -> None:
    missing_db = pg_url.rsplit("/", 1)[0] + "/rollguard_no_such_database"
    outcomes = await run_preflight(
        [
            cmd("backup", "pg_dump", "--no-password", "-f", str(tmp_path / "b.sql"), missing_db),
            cmd("deploy-check", "true"),
        ]
    )
    backup, after = outcomes
    assert not backup.ok
    assert backup.exit_code not in (0, None)
    assert "rollguard_no_such_database" in backup.output_tail
    assert after.skipped


async def test_cancelled_preflight_kills_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    task = asyncio.create_task(run_preflight([cmd("slow", "sh", "-c", script, timeout=60)]))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    wait_until_gone(int(pidfile.read_text()))
    assert process_gone(int(pidfile.read_text()))
