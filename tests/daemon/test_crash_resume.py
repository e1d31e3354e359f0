"""Crash-resume: SIGKILL the coordinator mid-bake and mid-step, start it again; the
deployment goes on from the store with the bake time it had, no agent runs anything
twice, and it ends as an uninterrupted run would. SQLite and PostgreSQL. And a store
that stops answering holds the coordinator (no promotion, no command) until it returns."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from coordinator.devfleet.fleet import ApiError, DevFleet, wait_for
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import (
    assert_nothing_executed_twice,
    deployment_while_running,
    events,
    executed,
    runs,
    wait_settled,
)
from tests.store.proxy import StallingProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = [f"web-{i}" for i in range(1, 6)]
DOWNTIME = 4.0
# Each deploy's restart takes this long, so a step's commands are in flight for a while.
RESTART_DELAY = 2.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}  # the default: a file in the state directory
    return {"store": {"url": request.getfixturevalue("pg_url")}}


def answered_from_memory(fleet: DevFleet) -> int:
    """How many re-sent commands the agents answered without running them again."""
    count = 0
    for host in fleet.hosts:
        text = (fleet.directory / "logs" / f"{host}.log").read_text(errors="replace")
        count += text.count("seen before: answering") + text.count("still running; not")
    return count


def test_sigkill_mid_bake_and_mid_step_resumes_from_the_store(
    make_fleet: FleetFactory, store: dict[str, Any]
) -> None:
    fleet = make_fleet(HOSTS, coordinator_extra=store, restart_delay=RESTART_DELAY)
    started = fleet.deploy("2.0.0")
    dep_id = started["id"]

    # 1. Mid-bake: half of the first step's 10 s bake is done.
    wait_for(
        lambda: (
            (d := deployment_while_running(fleet, dep_id))["state"] == "baking"
            and d["bake_elapsed"] >= 5
        ),
        40,
        "half of the first bake",
        interval=0.1,
    )
    before = fleet.deployment(dep_id)["bake_elapsed"]
    fleet.kill("coordinator")
    time.sleep(DOWNTIME)
    fleet.start_coordinator()
    ready = time.monotonic()
    after = fleet.deployment(dep_id)
    since_ready = time.monotonic() - ready

    assert after["state"] == "baking"
    assert after["step"] == 0
    # Kept (minus at most the last checkpoint interval), and the downtime is not bake.
    assert before - 1.5 <= after["bake_elapsed"] <= before + since_ready + 1.0
    resumed = [e for e in events(fleet, dep_id) if e["kind"] == "deployment.resumed_after_restart"]
    assert len(resumed) == 1
    assert before - 1.5 <= resumed[0]["evidence"]["bake_elapsed"] <= before + 1.0
    assert resumed[0]["evidence"]["bake_length"] >= 10.0

    # 2. Mid-step: the next step's commands reached an agent, which is still restarting.
    second = {o["host"] for o in started["steps"][1]["orders"]}
    wait_for(
        lambda: (
            deployment_while_running(fleet, dep_id)
            and any(executed(fleet, host) for host in second)
        ),
        60,
        "the second step's deploy to start on an agent",
        interval=0.05,
    )
    fleet.kill("coordinator")
    fleet.start_coordinator()

    final = wait_settled(fleet, dep_id, 150)

    assert final["state"] == "completed", final["summary"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "2.0.0")
    for host in HOSTS:
        assert runs(fleet, host) == [(dep_id, "2.0.0")], host
    assert_nothing_executed_twice(fleet)
    # The restarted coordinator re-sent what it had not seen answered, with the same ids.
    assert answered_from_memory(fleet) >= 1
    kinds = [e["kind"] for e in events(fleet, dep_id)]
    assert kinds.count("deployment.resumed_after_restart") == 2
    assert kinds.count("deployment.bake_passed") == 4


class ThreadedProxy:
    """tests/store/proxy.py's StallingProxy on an event loop of its own, for a test
    that blocks on processes."""

    def __init__(self, host: str, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = StallingProxy(host, port)
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(5)

    @property
    def port(self) -> int:
        return self.proxy.port

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.stall)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.resume)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def stalling_pg(pg_url: str) -> Iterator[tuple[str, ThreadedProxy]]:
    """The test database's URL through a proxy that can go silent."""
    parts = urlsplit(pg_url)
    proxy = ThreadedProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = f"{parts.username}@" if parts.username else ""
    try:
        yield f"postgresql://{user}127.0.0.1:{proxy.port}{parts.path}", proxy
    finally:
        proxy.close()


def readyz(fleet: DevFleet) -> tuple[int, dict[str, Any]]:
    try:
        return 200, fleet.api.get("/readyz")
    except ApiError as exc:
        return exc.status, exc.body


def test_unreachable_store_holds_the_coordinator_until_it_returns(
    stalling_pg: tuple[str, ThreadedProxy], make_fleet: FleetFactory
) -> None:
    # (The proxy is set up first so that it is torn down after the fleet has stopped.)
    url, proxy = stalling_pg
    fleet = make_fleet(HOSTS, coordinator_extra={"store": {"url": url, "timeout": 2.0}})
    started = fleet.deploy("2.0.0")
    dep_id = started["id"]
    wait_for(
        lambda: deployment_while_running(fleet, dep_id)["state"] == "baking",
        40,
        "the first bake",
        interval=0.1,
    )
    executed_before = {h: runs(fleet, h) for h in HOSTS}

    proxy.stall()
    stalled = time.monotonic()
    _, body = wait_for(
        lambda: (r := readyz(fleet))[0] == 503 and r, 20, "/readyz to report the hold"
    )
    assert body["ready"] is False
    assert body["store"] is False
    assert body["engine"] is False
    assert "store" in body["reason"]
    # Reads that need the store say so instead of failing obscurely.
    with pytest.raises(ApiError) as refused:
        fleet.api.get(f"/api/v1/deployments/{dep_id}")
    assert refused.value.status == 503
    # Hold for longer than the whole first bake: nothing is promoted, nothing is sent.
    time.sleep(max(0.0, 12.0 - (time.monotonic() - stalled)))
    assert readyz(fleet)[0] == 503
    assert {h: runs(fleet, h) for h in HOSTS} == executed_before

    proxy.resume()
    wait_for(lambda: readyz(fleet)[0] == 200, 30, "/readyz to recover")
    final = wait_settled(fleet, dep_id, 150)

    assert final["state"] == "completed", final["summary"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "2.0.0")
    for host in HOSTS:
        assert runs(fleet, host) == [(dep_id, "2.0.0")], host
    assert_nothing_executed_twice(fleet)
    kinds = [e["kind"] for e in events(fleet, dep_id)]
    assert "deployment.resumed_after_restart" in kinds
