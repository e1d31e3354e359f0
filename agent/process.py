"""Running a configured command: argv only (never a shell), a timeout, the output's tail.

The child gets its own process group, so a timeout ends the command and everything it
started (SIGTERM, then SIGKILL after a grace period). Output is read as it comes and
only the last ``tail`` bytes are kept, so a chatty hook cannot grow the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

from agent.checks.base import describe

KILL_GRACE: Final = 5.0
# systemd's notify channel is the agent's alone: a hook must not ping on its behalf.
_PRIVATE_ENV: Final = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})
TAIL_BYTES: Final = 2500


class ProcessResult(NamedTuple):
    argv: tuple[str, ...]
    returncode: int | None
    output: str
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.returncode == 0

    def summary(self) -> str:
        """e.g. ``exit 1``, ``timed out after 30s``, ``cannot start /x: no such file``."""
        if self.error is not None:
            return self.error
        if self.timed_out:
            return "timed out"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit {self.returncode}"


async def run(
    argv: Sequence[str],
    *,
    time_limit: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    tail: int = TAIL_BYTES,
) -> ProcessResult:
    args = tuple(argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return ProcessResult(args, None, "", error=f"cannot start {args[0]}: {describe(exc)}")
    kept = bytearray()

    async def read_output() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(4096):
            kept.extend(chunk)
            del kept[:-tail]

    timed_out = False
    try:
        async with asyncio.timeout(time_limit):
            await read_output()
            await process.wait()
    except TimeoutError:
        timed_out = True
        await _end(process)
    finally:
        if process.returncode is None:  # cancelled: the agent is stopping
            await asyncio.shield(_end(process))
    output = kept.decode("utf-8", "replace")
    if timed_out:
        return ProcessResult(
            args,
            process.returncode,
            output,
            timed_out=True,
            error=f"timed out after {time_limit:g}s",
        )
    return ProcessResult(args, process.returncode, output)


async def _end(process: asyncio.subprocess.Process) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_GRACE):
                await process.wait()
                return
