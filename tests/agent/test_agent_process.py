"""``rollguard-agent`` as a real process: birth and samples end to end, SIGTERM, config
errors, the systemd notify protocol, and lazy imports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared import topics
from shared.messages import HostStatus, MetricBatch, decode
from tests.agent.conftest import listening
from tests.conftest import Broker
from tests.processes import mqtt_table, public_key, running, script, write_config

pytestmark = [pytest.mark.integration]


def config_file(tmp: Path, broker: Broker, **extra: Any) -> Path:
    mqtt = mqtt_table(broker.mqtt("host-a"))
    data: dict[str, Any] = {
        "host": "host-a",
        "environment": "staging",
        "labels": {"zone": "eu-1"},
        "state_dir": str(tmp / "state"),
        "public_key_file": public_key(tmp),
        "mqtt": mqtt,
        "log": {"level": "info", "format": "json"},
        "publish": {"linger": 0.1},
        "checks": {
            "jitter": 0.0,
            "cpu": {"interval": 0.5},
            "memory": {"interval": 0.5},
            "disk": {"interval": 0.5},
            "system": {"interval": 0.5},
        },
    }
    data.update(extra)
    return write_config(tmp / "agent.toml", data)


def statuses(payloads: list[bytes]) -> list[HostStatus]:
    return [decode(HostStatus, p) for p in payloads]


async def test_agent_process_publishes_birth_and_host_samples(
    broker: Broker, tmp_path: Path
) -> None:
    config = config_file(tmp_path, broker)
    with running(
        [*script("rollguard-agent"), "--config", str(config)], tmp_path / "agent.log"
    ) as agent:
        async with listening(broker.operator(), ["rollguard/v1/hosts/host-a/#"]) as seen:
            batches = await seen.wait(
                lambda: (
                    (b := [decode(MetricBatch, p) for p in seen.on(topics.metrics("host-a"))])
                    and {"cpu", "memory", "disk", "system"}
                    <= {s.check for x in b for s in x.samples}
                    and b
                ),
                within=20,
            )
        assert agent.poll() is None
    # A late subscriber gets the retained birth status.
    (birth,) = statuses(seen.on(topics.status("host-a")))[:1]
    assert birth.online and birth.session >= 1
    assert (birth.environment, birth.labels, birth.agent_version) == (
        "staging",
        {"zone": "eu-1"},
        "0.1.0",
    )
    assert [b.seq for b in batches] == list(range(batches[0].seq, batches[0].seq + len(batches)))
    samples = {s.check: s for b in batches for s in b.samples}
    assert 0 <= samples["cpu"].values["percent"] <= 100
    assert 0 < samples["memory"].values["percent"] < 100
    assert samples["disk"].values["percent"] == samples["disk"].values["percent:/"]


async def test_retained_birth_is_there_for_a_late_subscriber(
    broker: Broker, tmp_path: Path
) -> None:
    config = config_file(tmp_path, broker)
    with running([*script("rollguard-agent"), "--config", str(config)], tmp_path / "agent.log"):
        await asyncio.sleep(1.5)
        async with listening(broker.operator(), [topics.status("host-a")]) as seen:
            await seen.wait(lambda: seen.messages, within=10)
    _, payload, retained = seen.messages[0]
    assert retained is True
    assert decode(HostStatus, payload).online is True


async def test_sigterm_publishes_offline_and_exits_0_within_5_seconds(
    broker: Broker, tmp_path: Path
) -> None:
    config = config_file(tmp_path, broker)
    with running(
        [*script("rollguard-agent"), "--config", str(config)], tmp_path / "agent.log"
    ) as agent:
        async with listening(broker.operator(), [topics.status("host-a")]) as seen:
            (birth,) = await seen.wait(
                lambda: [s for s in statuses(seen.on(topics.status("host-a"))) if s.online],
                within=15,
            )
            started = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(agent.wait, 10)
            elapsed = time.monotonic() - started
            offline = await seen.wait(
                lambda: [s for s in statuses(seen.on(topics.status("host-a"))) if not s.online]
            )
    assert code == 0
    assert elapsed < 5.0
    assert offline[-1].session == birth.session  # the same session, not a new one
    # Retained: what a newcomer sees is the offline status.
    async with listening(broker.operator(), [topics.status("host-a")], "late") as late:
        await late.wait(lambda: late.messages, within=10)
    assert late.messages[0][2] is True
    assert decode(HostStatus, late.messages[0][1]).online is False
    lines = (tmp_path / "agent.log").read_text().splitlines()
    entries = [msgspec.json.decode(line) for line in lines]  # JSON lines, as configured
    assert {e["level"] for e in entries} <= {"info", "warning"}
    assert "session 1: offline status published" in [e["message"] for e in entries]


def test_config_errors_name_the_file_and_key_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('host = "host-a"\n[mqtt]\nport = 70000\n')
    result = subprocess.run(
        [*script("rollguard-agent"), "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rollguard-agent: {bad}: Expected `int` <= 65535 - at `$.mqtt.port`"
    )
    missing_key = tmp_path / "nokey.toml"
    missing_key.write_text(f'host = "host-a"\npublic_key_file = "{tmp_path / "nope.pub"}"\n')
    result = subprocess.run(
        [*script("rollguard-agent"), "--config", str(missing_key), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"rollguard-agent: {missing_key}: public_key_file: ")


def test_check_config_accepts_the_examples() -> None:
    root = Path(__file__).resolve().parents[2] / "deploy" / "examples"
    for name in ("agent.toml", "agent-dev.toml", "agent-staging.toml"):
        text = (root / name).read_text()
        from shared.config import AgentConfig, loads

        config = loads(AgentConfig, text, source=name)
        assert config.host
    prod = loads(AgentConfig, (root / "agent.toml").read_text())
    assert prod.environment == "production" and prod.public_key_file
    assert all(
        getattr(prod.checks, c) is not None for c in ("database", "cache", "network", "application")
    )
    assert prod.checks.application is not None and prod.checks.application.slot_urls == {}
    staging = loads(AgentConfig, (root / "agent-staging.toml").read_text())
    assert staging.environment == "staging" and staging.deploy.strategy == "hooks"
    assert staging.deploy.switch_hook and staging.checks.application is not None
    assert set(staging.checks.application.slot_urls) == {"blue", "green"}
    assert staging.deploy.initial_slot == "blue" and staging.deploy.initial_version == "1.0.0"


def notify_socket(tmp_path: Path, abstract: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"rollguard-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(15)
    return sock, address


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_agent_process_sends_ready_and_watchdog_pings(
    broker: Broker, tmp_path: Path, abstract: bool
) -> None:
    sock, address = notify_socket(tmp_path, abstract)
    config = config_file(tmp_path, broker)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"}  # pings every 0.3 s
    with (
        sock,
        running(
            [*script("rollguard-agent"), "--config", str(config)], tmp_path / "agent.log", env=env
        ) as agent,
    ):
        received: list[bytes] = []
        while received.count(b"WATCHDOG=1") < 3:
            received.append(sock.recv(4096))
        assert received[0].startswith(b"READY=1\nSTATUS=collecting 4 checks")
        agent.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096)) != b"STOPPING=1":
            assert message == b"WATCHDOG=1"
        assert agent.wait(10) == 0


def test_lazy_imports_follow_the_configured_checks(tmp_path: Path) -> None:
    probe = (
        "import sys, msgspec\n"
        "from shared.config import AgentConfig\n"
        "from agent.checks import build_checks\n"
        "config = msgspec.convert(__import__('json').loads(sys.argv[1]), AgentConfig)\n"
        "checks = build_checks(config.checks)\n"
        "import agent.app, agent.main\n"
        "print(' '.join(sorted(m for m in ('psycopg', 'redis', 'aiohttp', 'cryptography')"
        " if m in sys.modules)))\n"
    )

    def loaded(config: dict[str, Any]) -> str:
        result = subprocess.run(
            [sys.executable, "-c", probe, msgspec.json.encode(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()

    assert loaded({"host": "host-a"}) == ""
    assert (
        loaded(
            {
                "host": "host-a",
                "checks": {"network": {"endpoints": ["127.0.0.1:1"]}, "application": {}},
            }
        )
        == ""
    )
    with_drivers = loaded(
        {
            "host": "host-a",
            "checks": {"database": {"url": "postgresql://x/y"}, "cache": {"url": "redis://x"}},
        }
    ).split()
    assert {"psycopg", "redis"} <= set(with_drivers) and "aiohttp" not in with_drivers
