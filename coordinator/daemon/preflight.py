"""Preflight commands: the configured checks (a database backup, an environment check)
that must all succeed before a deployment starts.

Each command runs as an argv, never through a shell, in a session of its own so that a
timeout kills everything it started. Failures are outcomes, not exceptions: the daemon
stores them with their output tail and feeds them to the engine's preflight gate.

A command learns what it runs for (:class:`HookContext`): the deployment's id, version,
previous version, environment and strategy, as ``ROLLGUARD_*`` environment variables and
as the placeholders ``{deployment_id}``, ``{version}``, ``{previous_version}``,
``{environment}`` and ``{strategy}`` in its argv (``["pg_dump", "-f",
"/backups/before-{version}.sql"]``). Only those five names are replaced; any other brace
is passed on as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Mapping
from typing import Final

import msgspec

from shared.config.coordinator import PreflightCommand

log = logging.getLogger(__name__)

TAIL_BYTES: Final = 4096
# Once the command itself has exited, how long a descendant may keep its output open
# before it is killed: long enough to flush, short enough not to hold a deployment.
EXIT_GRACE: Final = 1.0


class HookContext(msgspec.Struct, frozen=True, kw_only=True):
    """The deployment a hook runs for."""

    deployment_id: str
    version: str
    # What the target hosts ran before (the rollback target); "" for a first deployment.
    previous_version: str | None
    environment: str
    strategy: str

    def fields(self) -> dict[str, str]:
        return {
            "deployment_id": self.deployment_id,
            "version": self.version,
            "previous_version": self.previous_version or "",
            "environment": self.environment,
            "strategy": self.strategy,
        }

    def env(self) -> dict[str, str]:
        """``ROLLGUARD_DEPLOYMENT_ID``, ``ROLLGUARD_VERSION``, ..."""
        return {f"ROLLGUARD_{name.upper()}": value for name, value in self.fields().items()}

    def expand(self, argv: list[str]) -> list[str]:
        """``argv`` with the context's placeholders replaced, other braces left alone."""
        values = self.fields()
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in argv]


_PLACEHOLDER: Final = re.compile(
    r"\{(deployment_id|version|previous_version|environment|strategy)\}"
)


class PreflightOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one preflight command did. ``ok`` is the only field the gate needs."""

    name: str
    argv: list[str]
    ok: bool
    # Not run because an earlier command failed.
    skipped: bool = False
    # The exit status; negative for a signal (-9 after a timeout); None if never started.
    exit_code: int | None = None
    duration: float = 0.0
    timed_out: bool = False
    # The last bytes of stdout and stderr interleaved, decoded leniently.
    output_tail: str = ""
    output_bytes: int = 0
    # Why the command could not be started (missing executable, permission).
    error: str | None = None


async def run_preflight(
    commands: list[PreflightCommand],
    *,
    env: Mapping[str, str] | None = None,
    context: HookContext | None = None,
    tail_bytes: int = TAIL_BYTES,
    label: str = "preflight",
) -> list[PreflightOutcome]:
    """Run ``commands`` in order, stopping at the first failure.

    A failed backup must stop the deployment, and the commands after it may depend on
    it, so they are reported as skipped rather than run. ``env`` (and the ``context``'s
    variables) are added to the coordinator's own environment (so ``PATH`` still finds
    the executables); the ``context``'s placeholders are replaced in each argv.
    """
    extra = {**(env or {}), **(context.env() if context else {})}
    full_env = {**os.environ, **extra} if extra else None
    outcomes: list[PreflightOutcome] = []
    failed = False
    for command in commands:
        if failed:
            outcomes.append(
                PreflightOutcome(name=command.name, argv=command.argv, ok=False, skipped=True)
            )
            continue
        run = command
        if context is not None:
            run = msgspec.structs.replace(command, argv=context.expand(command.argv))
        outcome = await run_one(run, env=full_env, tail_bytes=tail_bytes, label=label)
        outcomes.append(outcome)
        failed = not outcome.ok
    return outcomes


async def run_one(
    command: PreflightCommand,
    *,
    env: Mapping[str, str] | None = None,
    tail_bytes: int = TAIL_BYTES,
    label: str = "preflight",
) -> PreflightOutcome:
    """Run one command with its timeout; ``env`` replaces the environment when given.
    ``label`` names the hook in the log (preflight, verification)."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        # A protocol rather than Process.wait(): wait() also waits for the pipes to
        # close, which a background child holding stdout can postpone forever.
        transport, protocol = await loop.subprocess_exec(
            lambda: _Collector(loop, tail_bytes),
            *command.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            # Its own process group, so a timeout can kill the children it spawned too.
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("%s %s: cannot start %s: %s", label, command.name, command.argv[0], exc)
        return PreflightOutcome(
            name=command.name,
            argv=command.argv,
            ok=False,
            duration=time.monotonic() - started,
            error=f"{command.argv[0]}: {exc.strerror or exc}",
        )

    pid = transport.get_pid()
    timed_out = False
    try:
        try:
            async with asyncio.timeout(command.timeout):
                # Shielded: the timeout must cancel our wait, not the future itself.
                await asyncio.shield(protocol.exited)
        except TimeoutError:
            timed_out = True
            _kill_group(pid)
            await protocol.exited
        # Let the rest of the pipe arrive: the last lines are the useful ones.
        done, _ = await asyncio.wait({protocol.output_closed}, timeout=EXIT_GRACE)
        if not done and not timed_out:
            # The pipe is still open, so a descendant is still alive and the group id
            # cannot have been reused: killing the group is safe and leaves no strays.
            log.warning("%s %s: killing processes left running after exit", label, command.name)
            _kill_group(pid)
    except asyncio.CancelledError:
        # A cancelled preflight (daemon shutting down) must not leave a backup running.
        if not protocol.exited.done():
            _kill_group(pid)
            # And reap it (bounded): a killed child not yet reaped when the transport is
            # collected is a zombie, and its Popen warns that it still runs.
            await asyncio.wait({protocol.exited}, timeout=EXIT_GRACE)
        raise
    finally:
        transport.close()

    duration = time.monotonic() - started
    code = transport.get_returncode()
    ok = not timed_out and code == 0
    if not ok:
        log.warning(
            "%s %s failed: %s",
            label,
            command.name,
            f"timed out after {command.timeout:g} s" if timed_out else f"exit {code}",
        )
    return PreflightOutcome(
        name=command.name,
        argv=command.argv,
        ok=ok,
        exit_code=code,
        duration=duration,
        timed_out=timed_out,
        output_tail=protocol.text(),
        output_bytes=protocol.total,
    )


def _kill_group(pgid: int) -> None:
    # SIGKILL, not SIGTERM: the command has used up its time, and a child that ignores
    # TERM would otherwise outlive the deployment it was meant to guard.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Collector(asyncio.SubprocessProtocol):
    """Keeps only the last ``limit`` bytes of the output, counting all of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.total = 0
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self.total += len(data)
        self.buffer += data
        if len(self.buffer) > self.limit:
            del self.buffer[: len(self.buffer) - self.limit]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.output_closed.done():
            self.output_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def text(self) -> str:
        # The cut may split a UTF-8 sequence; a replacement character beats an error.
        return self.buffer.decode("utf-8", errors="replace")
