"""``rollguard demo``: a private broker from the project's config, the coordinator and
agents as real processes on this machine, and a narration of what the coordinator sees.

Everything it starts lives under one directory and is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from coordinator.broker import LocalBroker, free_port
from coordinator.credentials import COORDINATOR_USER

DEMO_HOSTS: Final = ["demo-1", "demo-2"]
ZONES: Final = ["a", "b", "c"]


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _toml_str(value: str) -> str:
    return json.dumps(value)


def _mqtt_table(broker: LocalBroker, user: str, keepalive: int = 10) -> str:
    return (
        "[mqtt]\n"
        f'host = "{broker.host}"\nport = {broker.port}\n'
        f"username = {_toml_str(user)}\n"
        f"password_file = {_toml_str(str(broker.password_file(user)))}\n"
        f"keepalive = {keepalive}\nreconnect_min = 0.2\nreconnect_max = 2.0\n"
    )


def write_coordinator_config(directory: Path, broker: LocalBroker, http_port: int) -> Path:
    path = directory / "coordinator.toml"
    path.write_text(
        f'node = "demo"\nstate_dir = {_toml_str(str(directory / "coordinator"))}\n'
        + _mqtt_table(broker, COORDINATOR_USER)
        + f'[http]\nlisten = "127.0.0.1"\nport = {http_port}\n'
        + '[log]\nlevel = "warning"\n',
        encoding="utf-8",
    )
    return path


def write_agent_config(directory: Path, broker: LocalBroker, host: str, zone: str) -> Path:
    path = directory / f"{host}.toml"
    path.write_text(
        f'host = "{host}"\nenvironment = "production"\n'
        f"state_dir = {_toml_str(str(directory / host))}\n"
        f'[labels]\nzone = "{zone}"\n'
        + _mqtt_table(broker, host)
        + '[log]\nlevel = "warning"\n'
        + "[checks]\njitter = 0.05\n[checks.cpu]\ninterval = 2.0\n"
        + "[checks.memory]\ninterval = 2.0\n[checks.disk]\ninterval = 5.0\n",
        encoding="utf-8",
    )
    return path


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


class Processes:
    """Every child the demo starts, stopped together (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.children.append((name, process))
        return process

    def stop_all(self) -> None:
        for _, process in self.children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 6
        for _, process in self.children:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(2)


class DemoApi:
    def __init__(self, port: int, token_path: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token_path = token_path

    def get(self, path: str) -> Any:
        token = self.token_path.read_text().strip() if self.token_path.exists() else ""
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            self.base + path, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.loads(response.read())


@contextlib.contextmanager
def demo_environment(
    directory: Path, hosts: list[str]
) -> Iterator[tuple[LocalBroker, Processes, DemoApi]]:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    broker = LocalBroker(directory / "broker", list(hosts))
    (directory / "broker").mkdir()
    processes = Processes(directory)
    try:
        broker.start()
        _say(
            f"broker: mosquitto on 127.0.0.1:{broker.port} with the project's mosquitto.conf "
            "(auth on, per-host ACL)"
        )
        http_port = free_port()
        config = write_coordinator_config(directory, broker, http_port)
        processes.start("coordinator", [_bin("rollguard-coordinator"), "--config", str(config)])
        api = DemoApi(http_port, directory / "coordinator" / "api.token")
        _wait(lambda: api.get("/api/v1/hosts") is not None, 20, "the coordinator's API")
        _say(f"coordinator: API on http://127.0.0.1:{http_port}")
        for index, host in enumerate(hosts):
            agent_config = write_agent_config(directory, broker, host, ZONES[index % len(ZONES)])
            processes.start(host, [_bin("rollguard-agent"), "--config", str(agent_config)])
        _say(f"agents: {', '.join(hosts)} started as separate processes")
        yield broker, processes, api
    finally:
        processes.stop_all()
        broker.stop()
        _say(f"stopped every process; logs are in {directory}")


def _wait(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            if probe():
                return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _describe(host: dict[str, Any]) -> str:
    checks = host.get("checks", {})
    parts = [
        f"{name} {checks[name]['values']['percent']:.1f}%"
        for name in ("cpu", "memory", "disk")
        if "percent" in checks.get(name, {}).get("values", {})
    ]
    state = "online" if host["online"] else "OFFLINE"
    return f"{host['host']:<8} {state:<7} zone={host['labels'].get('zone', '-')}  " + ", ".join(
        parts
    )


def run_demo(directory: Path, *, seconds: float = 20.0) -> int:
    directory = directory.resolve()
    try:
        with demo_environment(directory, DEMO_HOSTS) as (_, _, api):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(2.0)
                hosts = api.get("/api/v1/hosts")["hosts"]
                _say(f"the coordinator sees {len(hosts)} host(s):")
                for host in hosts:
                    print("    " + _describe(host), flush=True)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except (TimeoutError, OSError) as exc:
        _say(f"failed: {exc}")
        return 1
    return 0
