"""The first end-to-end path: a real agent process, the real broker, a real coordinator
process; malformed and oversized messages counted and ignored; SIGKILL -> offline."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared import topics
from shared.mqtt import make_client
from shared.views import HostList, HostView
from tests.conftest import Broker
from tests.processes import (
    coordinator_config,
    mqtt_table,
    public_key,
    running,
    script,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Api:
    def __init__(self, port: int, token_path: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token_path = token_path

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.base + path,
            headers={"Authorization": f"Bearer {self.token_path.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api") else body.decode()

    def host(self, name: str) -> HostView | None:
        hosts = msgspec.convert(self.get("/api/v1/hosts"), HostList).hosts
        return next((h for h in hosts if h.host == name), None)

    def counter(self, name: str, label: str) -> float:
        for line in self.get("/metrics").splitlines():
            if line.startswith(f"{name}{{") and label in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def agent_config(tmp: Path, broker: Broker, host: str) -> Path:
    mqtt = mqtt_table(broker.mqtt(host))
    mqtt["keepalive"] = 5
    return write_config(
        tmp / f"{host}.toml",
        {
            "host": host,
            "environment": "production",
            "labels": {"zone": "a"},
            "state_dir": str(tmp / f"{host}-state"),
            "public_key_file": public_key(tmp),
            "mqtt": mqtt,
            "log": {"level": "info", "format": "json"},
            "checks": {
                "jitter": 0.0,
                "cpu": {"interval": 0.5},
                "memory": {"interval": 0.5},
                "disk": {"interval": 0.5},
            },
        },
    )


async def publish_as(broker: Broker, host: str, payloads: list[bytes]) -> None:
    async with make_client(broker.mqtt(host), identifier=f"{host}-intruder") as client:
        for payload in payloads:
            await client.publish(topics.metrics(host), payload, qos=1)


def test_agent_to_coordinator_through_the_real_broker(broker: Broker, tmp_path: Path) -> None:
    coordinator_toml, port = coordinator_config(tmp_path, broker.coordinator())
    api = Api(port, tmp_path / "coordinator-state" / "api.token")
    with running(
        [*script("rollguard-coordinator"), "--config", str(coordinator_toml)],
        tmp_path / "coordinator.log",
    ) as coordinator:
        wait_for(lambda: api.get("/readyz"), 15, "the coordinator to be ready")
        with running(
            [*script("rollguard-agent"), "--config", str(agent_config(tmp_path, broker, "host-a"))],
            tmp_path / "agent.log",
        ) as agent:
            # Birth status, then cpu, memory and disk samples from psutil.
            def sampled() -> HostView | None:
                host = api.host("host-a")
                return host if host and {"cpu", "memory", "disk"} <= set(host.checks) else None

            seen = wait_for(sampled, 20, "host-a's samples at the coordinator")
            assert seen.online is True
            assert seen.environment == "production"
            assert seen.labels == {"zone": "a"}
            assert 0.0 <= (seen.value("cpu", "percent") or -1.0) <= 100.0
            assert 0.0 < (seen.value("memory", "percent") or -1.0) < 100.0
            batches_before = seen.batches

            # A malformed payload and a 1 MiB payload are counted and ignored. Sent by
            # another host (its credential, its topics): host-a's own credential would
            # replace the agent's connection, the broker making a username the client id.
            asyncio.run(publish_as(broker, "host-b", [b"{not json", b"x" * (1024 * 1024)]))
            wait_for(
                lambda: (
                    api.counter("rollguard_messages_rejected_total", 'reason="malformed"') == 1
                    and api.counter("rollguard_messages_rejected_total", 'reason="oversized"') == 1
                ),
                10,
                "the two bad messages to be counted",
            )
            # The coordinator is still alive and still ingesting.
            wait_for(
                lambda: (h := api.host("host-a")) and h.batches > batches_before + 1,
                10,
                "more batches",
            )
            assert coordinator.poll() is None

            # SIGKILL the agent: its Will marks it offline within the keepalive window.
            agent.send_signal(signal.SIGKILL)
            agent.wait(5)
            wait_for(
                lambda: (h := api.host("host-a")) and h.online is False,
                15,
                "host-a offline by its Will",
            )
            assert coordinator.poll() is None
