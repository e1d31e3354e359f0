"""A whole rollguard installation on this machine: a private broker from the project's
``mosquitto.conf``, a signing key pair, the demo app, the coordinator and N agents,
each a real process. ``rollguard demo`` narrates one; the end-to-end tests drive one.

Durations are compressed (seconds, not hours) through the same config keys an
operator would set; nothing in the code paths differs from production.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from coordinator.devfleet.broker import LocalBroker, free_port
from coordinator.setup.credentials import COORDINATOR_USER, coordinator_user
from shared.signing import generate_keypair

ZONES: Final = ("a", "b", "c")
# What each demo version does: 2.0.0 is a good release, 2.1.0 a bad one.
PROFILES: Final = {
    "1.0.0": {"error_rate": 0.0005, "latency_ms": 40.0},
    "2.0.0": {"error_rate": 0.0005, "latency_ms": 35.0},
    "2.1.0": {"error_rate": 0.15, "latency_ms": 90.0},
}
STABLE: Final = "1.0.0"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. in a list of webhooks
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML for config files we generate: tables, scalars and lists."""
    scalars = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = ("[" + prefix + "]\n" if prefix and scalars else "") + "".join(s + "\n" for s in scalars)
    for key, value in data.items():
        if isinstance(value, dict):
            out += to_toml(value, f"{prefix}.{key}" if prefix else key)
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def bin_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


# Seconds instead of hours, for the demo and the tests that run a fleet on one machine.
# Every simulated host measures this one machine's CPU: a machine busy running the whole
# fleet is neither a bad release nor an incident, so CPU is left out of judging (and of
# alerts, with ``"alerts": {"cpu_percent": 100.0}``).
FAST_POLICY: Final[dict[str, Any]] = {
    "cpu_percent": 100.0,
    "confidence": 0.99,
    "ack_timeout": 20.0,
    "missing_data_grace": 8.0,
    "inconclusive_extension": 1.0,
}
FAST_ENGINE: Final[dict[str, Any]] = {
    "housekeeping": 0.5,
    "check_intervals": {
        "application": 1.0,
        "cpu": 1.0,
        "memory": 1.0,
        "disk": 2.0,
        "system": 2.0,
    },
}


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Api:
    """The coordinator's HTTP API, synchronously (for tests and the demo)."""

    def __init__(self, port: int, token_path: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token_path = token_path

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        token = self.token_path.read_text().strip() if self.token_path.exists() else ""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:  # its socket, closed rather than left to the garbage collector
                raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiError(exc.code, parsed) from exc
        return json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, body or {})


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, ValueError, ApiError, urllib.error.URLError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@dataclass
class DevFleet:
    """Everything under ``directory``; ``start()``, then ``stop()`` (or ``with``)."""

    directory: Path
    hosts: list[str]
    coordinator_extra: dict[str, Any] = field(default_factory=dict)
    # Merged into every agent's config; a function of the host for per-host values.
    agent_extra: dict[str, Any] | Callable[[str], dict[str, Any]] = field(default_factory=dict)
    # Staging hosts with a blue and a green slot each (see blue_green_agent).
    blue_green: bool = False
    broker: LocalBroker = field(init=False)
    api: Api = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.http_port = free_port()
        self.app_port = free_port()
        self.broker = LocalBroker(
            self.directory / "broker",
            list(self.hosts),
            services=[coordinator_user(str(self.coordinator_extra.get("node", "demo")))],
        )
        self.api = Api(self.http_port, self.directory / "coordinator" / "api.token")

    # -- layout -------------------------------------------------------------------

    def prepare(self) -> None:
        for sub in ("broker", "keys", "apps", "logs", "agents"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        if not (self.directory / "keys" / "coordinator.key").exists():
            generate_keypair(self.directory / "keys")
        (self.directory / "profiles.json").write_text(json.dumps(PROFILES), encoding="utf-8")
        for host in self.hosts:
            root = self.directory / "apps" / host
            for version in PROFILES:
                (root / "releases" / version).mkdir(parents=True, exist_ok=True)
            current = root / "current"
            if not current.is_symlink():
                current.symlink_to(Path("releases") / STABLE)
            if self.blue_green:
                # The stable version serves from the blue slot; green is empty.
                blue = self.directory / "apps" / f"{host}.blue"
                blue.mkdir(exist_ok=True)
                if not (blue / "current").is_symlink():
                    (blue / "current").symlink_to(Path("releases") / STABLE)

    def mqtt(self, user: str) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.broker.port,
            "username": user,
            "password_file": str(self.broker.password_file(user)),
            "keepalive": 5,
            "reconnect_min": 0.2,
            "reconnect_max": 2.0,
        }

    def coordinator_config(
        self, name: str = "coordinator", extra: dict[str, Any] | None = None
    ) -> Path:
        """``<name>.toml``: the fleet's coordinator config with ``coordinator_extra``,
        then ``extra`` (a second coordinator's node and port), merged in."""
        base: dict[str, Any] = {
            "node": "demo",
            "state_dir": str(self.directory / "coordinator"),
            "private_key_file": str(self.directory / "keys" / "coordinator.key"),
            "command_ttl": 120.0,
            "mqtt": self.mqtt(COORDINATOR_USER),
            "log": {"level": "info", "format": "json"},
            "http": {"listen": "127.0.0.1", "port": self.http_port},
            "engine": FAST_ENGINE,
            "alerts": {"cpu_percent": 100.0},
            "environments": {
                "production": {
                    **FAST_POLICY,
                    "canary": {"first_bake": 10.0, "step_bake": 5.0, "post_watch": 5.0},
                },
                "staging": {
                    **FAST_POLICY,
                    "blue_green": {"health_window": 8.0, "watch": 5.0},
                },
            },
        }
        config = deep_merge(deep_merge(base, self.coordinator_extra), extra or {})
        if config["mqtt"]["username"] == COORDINATOR_USER:
            # The broker makes a client's username its client id: each coordinator of an
            # HA pair needs a credential of its own, or they would take turns kicking
            # each other off.
            user = coordinator_user(str(config["node"]))
            self.broker.add_services([user])
            config["mqtt"] = {
                **config["mqtt"],
                "username": user,
                "password_file": str(self.broker.password_file(user)),
            }
        path = self.directory / f"{name}.toml"
        path.write_text(to_toml(config), encoding="utf-8")
        return path

    def agent_config(self, host: str, index: int) -> Path:
        app = f"http://127.0.0.1:{self.app_port}/{host}"
        base: dict[str, Any] = {
            "host": host,
            "environment": "production",
            "state_dir": str(self.directory / "agents" / host),
            "public_key_file": str(self.directory / "keys" / "coordinator.pub"),
            "labels": {"zone": ZONES[index % len(ZONES)]},
            "mqtt": self.mqtt(host),
            "log": {"level": "info", "format": "json"},
            "checks": {
                "jitter": 0.05,
                "cpu": {"interval": 1.0},
                "memory": {"interval": 1.0},
                "disk": {"interval": 2.0},
                "system": {"interval": 2.0},
                "application": {
                    "url": f"{app}/health",
                    "metrics_url": f"{app}/metrics",
                    "interval": 1.0,
                    "timeout": 1.0,
                    "requests": 5,
                },
            },
            "deploy": {
                "strategy": "releases",
                "root": str(self.directory / "apps" / host),
                "restart_command": ["/bin/true"],
                "timeout": 20.0,
            },
        }
        if self.blue_green:
            base = deep_merge(base, self.blue_green_agent(host))
        extra = self.agent_extra(host) if callable(self.agent_extra) else self.agent_extra
        path = self.directory / "agents" / f"{host}.toml"
        path.write_text(to_toml(deep_merge(base, extra)), encoding="utf-8")
        return path

    def blue_green_agent(self, host: str) -> dict[str, Any]:
        """A staging host with two slots on the demo app: each slot is an instance of
        its own (the app serves ``<host>.<slot>`` from ``apps/<host>.<slot>/current``),
        a deploy links the release into the idle slot, a switch points the host's own
        ``current`` (the traffic) at the slot's release."""
        app = f"http://127.0.0.1:{self.app_port}"
        return {
            "environment": "staging",
            "checks": {
                "application": {
                    "slot_urls": {s: f"{app}/{host}.{s}/health" for s in ("blue", "green")},
                    # The idle slot has no traffic: its probes are all the health window
                    # judges. At the default 5 a second, a health window of seconds
                    # left a bad version (15 % errors) inconclusive, held instead of
                    # rolled back, about once in 2,000 runs, and a good one often
                    # needed the extension.
                    "requests": 20,
                }
            },
            "deploy": {
                "strategy": "hooks",
                "initial_slot": "blue",
                "initial_version": STABLE,
                "deploy_hook": [
                    "/bin/sh",
                    "-c",
                    "mkdir -p {root}.{slot} && ln -sfn releases/{version} {root}.{slot}/current",
                ],
                "switch_hook": [
                    "/bin/sh",
                    "-c",
                    "cp -P {root}.{slot}/current {root}/current.new"
                    " && mv -T {root}/current.new {root}/current",
                ],
            },
        }

    # -- processes ----------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.directory / "logs" / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        return process

    def start_coordinator(
        self, name: str = "coordinator", extra: dict[str, Any] | None = None
    ) -> Api:
        """Start a coordinator and wait until it is ready; return its API. Another one
        (active/standby) needs its own ``name`` and, in ``extra``, node and http.port."""
        port = (extra or {}).get("http", {}).get("port", self.http_port)
        api = self.api if port == self.http_port else Api(port, self.api.token_path)
        config = self.coordinator_config(name, extra)
        self.spawn(name, [bin_path("rollguard-coordinator"), "--config", str(config)])
        wait_for(lambda: api.get("/readyz")["ready"], 30, f"{name} to be ready")
        return api

    def start_agent(self, host: str) -> None:
        index = self.hosts.index(host)
        self.spawn(
            host, [bin_path("rollguard-agent"), "--config", str(self.agent_config(host, index))]
        )

    def start(self, before_agents: Callable[[], None] | None = None) -> None:
        """Start the broker, the app, the coordinator and the agents; ``before_agents``
        runs once the rest is up (a benchmark's witness subscribes there)."""
        self.prepare()
        self.broker.start()
        self.spawn(
            "app",
            [
                sys.executable,
                "-m",
                "coordinator.devfleet.demo_app",
                "--root",
                str(self.directory / "apps"),
                "--port",
                str(self.app_port),
                "--profiles",
                str(self.directory / "profiles.json"),
            ],
        )
        self.start_coordinator()
        if before_agents is not None:
            before_agents()
        for host in self.hosts:
            self.start_agent(host)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()
        self.broker.stop()

    def __enter__(self) -> DevFleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing ----------------------------------------------------------------

    def online_hosts(self) -> list[dict[str, Any]]:
        hosts: list[dict[str, Any]] = self.api.get("/api/v1/hosts")["hosts"]
        return [h for h in hosts if h["online"] and "application" in h.get("checks", {})]

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(
            lambda: len(self.online_hosts()) == len(self.hosts),
            timeout,
            "every agent online with application samples",
        )

    def deploy(self, version: str, **extra: Any) -> dict[str, Any]:
        body = {"version": version, "actor": "demo", **extra}
        reply: dict[str, dict[str, Any]] = self.api.post("/api/v1/deployments", body)
        return reply["deployment"]

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        reply: dict[str, dict[str, Any]] = self.api.get(f"/api/v1/deployments/{deployment_id}")
        return reply["deployment"]

    def wait_state(self, deployment_id: str, states: set[str], timeout: float) -> dict[str, Any]:
        result: dict[str, Any] = wait_for(
            lambda: (d := self.deployment(deployment_id))["state"] in states and d,
            timeout,
            f"deployment {deployment_id} to reach {sorted(states)}",
        )
        return result

    def linked_version(self, host: str) -> str:
        return (self.directory / "apps" / host / "current").readlink().name
