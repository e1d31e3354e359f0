"""Running rollguard's real processes in tests: config files, subprocesses, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from coordinator.devfleet.broker import free_port
from coordinator.devfleet.fleet import to_toml
from shared.config.common import MqttConfig

BIN = Path(sys.executable).parent
T = TypeVar("T")


def mqtt_table(mqtt: MqttConfig) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(mqtt).items() if v is not None}


def public_key(tmp: Path) -> str:
    """A coordinator public key under ``tmp`` (made once): an agent refuses to start
    without one."""
    from shared.signing import PUBLIC_KEY_NAME, generate_keypair

    directory = tmp / "keys"
    if not (directory / PUBLIC_KEY_NAME).exists():
        generate_keypair(directory)
    return str(directory / PUBLIC_KEY_NAME)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def coordinator_config(tmp: Path, mqtt: MqttConfig, **extra: Any) -> tuple[Path, int]:
    port = free_port()
    data: dict[str, Any] = {
        "node": "test-coordinator",
        "state_dir": str(tmp / "coordinator-state"),
        "mqtt": mqtt_table(mqtt),
        "log": {"level": "info", "format": "json"},
        "http": {"listen": "127.0.0.1", "port": port},
    }
    data.update(extra)
    return write_config(tmp / "coordinator.toml", data), port


@contextmanager
def running(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process, yield it, and make sure it is gone afterwards."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def script(name: str) -> list[str]:
    """The installed console script, so tests exercise the real entry point."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install the project (pip install -e .)")
    return [str(path)]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (OSError, ValueError) as exc:  # not up yet
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # an answer such as 503 holds its socket until closed
            last = exc
        else:
            if found:
                return found
            last = found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
