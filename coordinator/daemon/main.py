"""``rollguard-coordinator --config FILE``: the coordinator daemon."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from shared import logs
from shared.config import CoordinatorConfig, load
from shared.errors import RollguardError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollguard-coordinator", description="rollguard's coordinator daemon"
    )
    parser.add_argument("--config", required=True, help="coordinator TOML config file")
    return parser


async def _serve(config: CoordinatorConfig) -> None:
    from coordinator.daemon.service import Coordinator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Coordinator(config).run(stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(CoordinatorConfig, args.config)
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
