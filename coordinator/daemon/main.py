"""``rollguard-coordinator --config FILE``: the coordinator daemon.

Under systemd (``Type=notify``) it says READY=1 once its store is open and feeds the
watchdog only while its loop and store make progress (``liveness.py``); its stderr
lines carry journald priorities (``shared.logs``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from shared import __version__, logs
from shared.config import CoordinatorConfig, load
from shared.config.files import coordinator_files
from shared.errors import RollguardError
from shared.sdnotify import Notifier


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollguard-coordinator", description="rollguard's coordinator daemon"
    )
    parser.add_argument("--config", required=True, help="coordinator TOML config file")
    parser.add_argument(
        "--version", action="version", version=f"rollguard-coordinator {__version__}"
    )
    return parser


async def _serve(config: CoordinatorConfig) -> None:
    from coordinator.daemon.liveness import supervise
    from coordinator.daemon.service import Coordinator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    coordinator = Coordinator(config)
    notifier = Notifier()
    # A store call answers within its timeout (or fails); twice that is a stall. The
    # ticker steps the engine when due, or within a few housekeeping periods.
    limit = 2 * config.store.timeout
    supervisor = asyncio.create_task(
        supervise(
            coordinator,
            notifier,
            stop,
            store_limit=limit,
            engine_limit=limit + 4 * config.engine.housekeeping,
            poll=config.engine.housekeeping,
        ),
        name="supervisor",
    )
    try:
        await coordinator.run(stop)
    finally:
        notifier.notify("STOPPING=1")
        stop.set()
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        notifier.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(CoordinatorConfig, args.config)
        try:
            coordinator_files(config)
        except RollguardError as exc:
            raise type(exc)(f"{args.config}: {exc}") from exc
    except RollguardError as exc:
        print(f"rollguard-coordinator: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log.level or "info", config.log.format)
    try:
        import uvloop

        uvloop.run(_serve(config))
    except RollguardError as exc:
        print(f"rollguard-coordinator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
