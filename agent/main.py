"""``rollguard-agent --config FILE``: load and check the config, log, run on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Final

from agent import __version__
from shared import logs
from shared.config import AgentConfig, ConfigError, load
from shared.config.files import AGENT_UNIT, agent_files
from shared.errors import SignatureError

EXIT_CONFIG: Final = 2
EXECUTOR_GRACE: Final = 0.5
# The guide's logging per environment: debug, info, warn.
DEFAULT_LEVEL: Final = {"development": "debug", "staging": "info", "production": "warning"}
log = logging.getLogger("agent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rollguard-agent",
        description="rollguard host agent: measures this host and its app, publishes "
        "over MQTT, and runs signed deploy commands.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="agent TOML config")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config (and the files it names) and exit",
    )
    parser.add_argument("--version", action="version", version=f"rollguard-agent {__version__}")
    return parser.parse_args(argv)


def check_files(config: AgentConfig, source: str, *, unit: str | None = AGENT_UNIT) -> None:
    """What the TOML cannot show: the files it names are there and usable, and the
    releases root is one the agent (and its unit) may write."""
    from agent.signature import load_public_key

    try:
        check_drivers(config)
        agent_files(config, unit=unit)
        assert config.public_key_file is not None  # agent_files requires it
        load_public_key(config.public_key_file)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except SignatureError as exc:
        raise ConfigError(f"{source}: public_key_file: {exc}") from exc


# The checks whose driver comes with an extra: (config section, module, extra).
DRIVERS: Final = (("database", "psycopg", "postgres"), ("cache", "redis", "redis"))


def check_drivers(config: AgentConfig) -> None:
    """A configured database or cache check needs its driver, which a plain
    ``pip install rollguard`` leaves out."""
    for section, module, extra in DRIVERS:
        if getattr(config.checks, section) is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"checks.{section} needs {module}, which is not installed: "
                f"pip install 'rollguard[{extra}]'"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load(AgentConfig, args.config)
        check_files(config, args.config)
    except ConfigError as exc:
        print(f"rollguard-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: ok")
        return 0
    logs.setup(config.log.level or DEFAULT_LEVEL[config.environment], config.log.format)
    if config.mqtt.username is not None and config.mqtt.username != config.host:
        # The broker's ACL lets a credential write only under its own name: every
        # publish would be refused (and MQTT 5 refusals still complete the publish).
        log.warning(
            "mqtt.username %r differs from host %r: the broker's ACL will refuse "
            "this agent's status, metrics and results",
            config.mqtt.username,
            config.host,
        )
    try:
        code = _run(config, args.config)
    except (ConfigError, OSError) as exc:
        log.critical("%s", exc)
        return EXIT_CONFIG if isinstance(exc, ConfigError) else 1
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        # A connect stuck in an executor thread must not hold the exit past systemd's
        # stop timeout: the store is closed and the offline status sent by now.
        log.warning("leaving a blocked worker thread behind on exit")
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(config: AgentConfig, source: str) -> int:
    import uvloop

    from agent.app import Agent
    from agent.watchdog import Notifier

    async def run() -> int:
        try:
            agent = Agent(config, notifier=Notifier())
        except SignatureError as exc:
            raise ConfigError(f"{source}: public_key_file: {exc}") from exc
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        return await agent.run()

    # Not uvloop.run(): its exit waits without limit for the default executor, where a
    # connect to an unanswering broker may sit for the connect timeout. Here the wait
    # is bounded, and main() leaves a stuck thread behind (os._exit) instead.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        with contextlib.suppress(TimeoutError):
            loop.run_until_complete(
                asyncio.wait_for(loop.shutdown_default_executor(), EXECUTOR_GRACE)
            )
        loop.close()
