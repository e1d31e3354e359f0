"""Reading what a fleet did: the agents' own records, the coordinator's event log and
metrics, the broker's retained statuses."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from typing import Any

import msgspec

from coordinator.devfleet.fleet import DevFleet, wait_for
from coordinator.setup.credentials import OPERATOR_USER
from shared import topics
from shared.config.common import MqttConfig
from shared.messages import HostStatus
from shared.mqtt import make_client

_EXECUTING = re.compile(r"executing (\w+) (\S*) for deployment (\S+) \(command ([^)]+)\)")


def runs(fleet: DevFleet, host: str) -> list[tuple[str, str]]:
    """``(deployment, version)`` for every deploy or rollback the host carried out."""
    path = fleet.directory / "runs" / host
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        deployment, version = line.split()
        out.append((deployment, version))
    return out


def executed(fleet: DevFleet, host: str) -> list[tuple[str, str, str]]:
    """``(command id, action, version or slot)`` for every command the agent started,
    from its log (kept across agent restarts)."""
    text = (fleet.directory / "logs" / f"{host}.log").read_text(errors="replace")
    out = []
    for line in text.splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError, TypeError):
            continue
        match = _EXECUTING.search(message)
        if match:
            out.append((match.group(4), match.group(1), match.group(2)))
    return out


def assert_nothing_executed_twice(fleet: DevFleet) -> dict[str, list[tuple[str, str, str]]]:
    by_host = {host: executed(fleet, host) for host in fleet.hosts}
    for host, commands in by_host.items():
        repeated = [cid for cid, n in Counter(c[0] for c in commands).items() if n > 1]
        assert not repeated, f"{host} executed {repeated} more than once"
        # Every deploy and rollback ran the restart command once (a switch runs none).
        restarts = [c for c in commands if c[1] != "switch"]
        assert len(runs(fleet, host)) == len(restarts), (host, runs(fleet, host), commands)
    return by_host


def events(fleet: DevFleet, deployment: str) -> list[dict[str, Any]]:
    reply: dict[str, list[dict[str, Any]]] = fleet.api.get(
        f"/api/v1/deployments/{deployment}/events"
    )
    return reply["events"]


def kinds(fleet: DevFleet, deployment: str) -> list[str]:
    return [e["kind"] for e in events(fleet, deployment)]


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def operator_mqtt(fleet: DevFleet) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1",
        port=fleet.broker.port,
        username=OPERATOR_USER,
        password_file=str(fleet.broker.password_file(OPERATOR_USER)),
        keepalive=5,
    )


def retained_statuses(fleet: DevFleet, timeout: float = 5.0) -> dict[str, HostStatus]:
    """The broker's retained status of every host, as a new subscriber sees it."""

    async def collect() -> dict[str, HostStatus]:
        found: dict[str, HostStatus] = {}
        async with make_client(operator_mqtt(fleet), identifier="test-observer") as client:
            await client.subscribe(topics.ALL_STATUS, qos=1)
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes | bytearray)
                    status = msgspec.json.decode(payload, type=HostStatus)
                    found[status.host] = status
                    if len(found) == len(fleet.hosts):
                        break
        return found

    return asyncio.run(collect())


FINISHED = frozenset({"completed", "rolled_back", "failed", "refused"})
# Holds that end by themselves: missing data clears when every judged host reports again
# (or rolls back after the grace), unreachable hosts when enough are back. A stall of a
# few seconds on a loaded machine can cause either; neither waits for an operator.
SELF_CLEARING = frozenset({"missing_data", "unreachable"})


def for_an_operator(dep: dict[str, Any]) -> bool:
    """Whether ``dep`` is held until someone acts."""
    return dep["state"] == "held" and dep.get("hold_reason") not in SELF_CLEARING


def wait_settled(fleet: DevFleet, deployment: str, timeout: float) -> dict[str, Any]:
    """Wait until the deployment finished or is held for an operator (which, in a test,
    means it will not finish by itself: fail at once rather than at the timeout)."""
    final: dict[str, Any] = wait_for(
        lambda: (
            ((d := fleet.deployment(deployment))["state"] in FINISHED or for_an_operator(d)) and d
        ),
        timeout,
        f"deployment {deployment} to finish or be held for an operator",
    )
    if final.get("finished") is not None:
        # The API shows the engine's state at once; the step that finished it (its
        # events) is stored a moment later. Tests read the event log next: wait for it.
        finished = final["finished"]
        wait_for(
            lambda: any(
                e["time"] >= finished and e["kind"].startswith("deployment.")
                for e in events(fleet, deployment)
            ),
            15,
            f"the step that finished {deployment} to be stored",
        )
    return final


def deployment_while_running(fleet: DevFleet, deployment: str) -> dict[str, Any]:
    """The deployment, asserting it has neither finished nor been held: a wait on a
    running deployment fails at once when it settles instead of at its timeout."""
    dep = fleet.deployment(deployment)
    assert dep["state"] not in FINISHED and not for_an_operator(dep), (
        f"{dep['state']}: {dep['summary']}"
    )
    return dep
