"""Active/standby with real Redis and PostgreSQL: two coordinator processes, the leader
killed with SIGKILL mid-deployment; the standby takes over within the lease time,
finishes the deployment under a new fencing token, and the store shuts out the old
leader."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from coordinator.devfleet.broker import free_port
from coordinator.devfleet.fleet import Api, ApiError, wait_for
from coordinator.store import DeploymentRow, StaleLeaderError, open_store
from shared.config.coordinator import StoreConfig
from shared.messages import Command
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import (
    assert_nothing_executed_twice,
    deployment_while_running,
    events,
    runs,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = [f"web-{i}" for i in range(1, 6)]
LEASE_TTL = 3.0


def role(api: Api) -> tuple[str, bool]:
    ready = api.get("/readyz")
    return ready["role"], ready["engine"]


def stored_commands(pg_url: str, deployment: str) -> list[Command]:
    async def read() -> list[Command]:
        store = open_store(StoreConfig(url=pg_url), "/nonexistent")
        await store.open()
        try:
            records = await store.commands(deployment)
        finally:
            await store.close()
        return [msgspec.json.decode(r.payload, type=Command) for r in records]

    return asyncio.run(read())


def write_as(pg_url: str, fencing: int, deployment: str) -> None:
    """What a stale leader would try: save a deployment row under its old token."""

    async def write() -> None:
        store = open_store(StoreConfig(url=pg_url), "/nonexistent")
        await store.open()
        try:
            stale = DeploymentRow(
                id=deployment,
                environment="production",
                version="2.0.0",
                strategy="canary",
                state="baking",
                body=b"stale",
                fencing=fencing,
                created=time.time(),
                updated=time.time(),
            )
            await store.write(lambda tx: tx.save_deployment(stale))
        finally:
            await store.close()

    asyncio.run(write())


def test_standby_takes_over_when_the_leader_dies_mid_deployment(
    make_fleet: FleetFactory, pg_url: str, redis_prefix: tuple[str, str]
) -> None:
    redis_url, prefix = redis_prefix
    ha: dict[str, Any] = {
        "store": {"url": pg_url},
        "ha": {"redis_url": redis_url, "key_prefix": prefix, "lease_ttl": LEASE_TTL},
    }
    fleet = make_fleet(HOSTS, coordinator_extra={**ha, "node": "alpha"})
    leader = fleet.api
    wait_for(lambda: role(leader) == ("leader", True), 20, "alpha to lead")
    standby = fleet.start_coordinator(
        "coordinator-b", {"node": "beta", "http": {"port": free_port()}}
    )
    assert role(standby) == ("standby", False)
    assert standby.get("/readyz")["ready"] is True  # a healthy standby is ready

    started = fleet.deploy("2.0.0")
    dep_id = started["id"]
    with pytest.raises(ApiError) as refused:
        standby.post(f"/api/v1/deployments/{dep_id}/pause", {"reason": "not the leader"})
    assert refused.value.status == 503
    assert "standby" in refused.value.body["error"]
    wait_for(
        lambda: (
            (d := deployment_while_running(fleet, dep_id))["state"] == "baking"
            and d["bake_elapsed"] >= 3
        ),
        40,
        "the first bake to be under way",
        interval=0.1,
    )
    old_token = max(c.fencing for c in stored_commands(pg_url, dep_id))
    assert old_token >= 1

    fleet.kill("coordinator")
    killed = time.monotonic()
    wait_for(lambda: role(standby) == ("leader", True), LEASE_TTL + 10, "beta to take over")
    # The lease expires within its ttl and the standby tries every third of it.
    assert time.monotonic() - killed < LEASE_TTL * 2 + 3
    fleet.api = standby

    final = wait_settled(fleet, dep_id, 150)

    assert final["state"] == "completed", final["summary"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "2.0.0")
    for host in HOSTS:
        assert runs(fleet, host) == [(dep_id, "2.0.0")], host
    assert_nothing_executed_twice(fleet)
    commands = stored_commands(pg_url, dep_id)
    new_token = max(c.fencing for c in commands)
    assert new_token > old_token
    # The first step's command went out under alpha's token, every later one under beta's.
    assert [c.host for c in commands][:1] == [started["steps"][0]["orders"][0]["host"]]
    assert commands[0].fencing == old_token
    assert {c.fencing for c in commands[1:]} == {new_token}
    assert any(e["kind"] == "deployment.resumed_after_restart" for e in events(fleet, dep_id))
    # The store refuses the dead leader's token: nothing of its write is applied.
    with pytest.raises(StaleLeaderError):
        write_as(pg_url, old_token, dep_id)
    assert fleet.deployment(dep_id)["state"] == "completed"
