"""The coordinator's HTTP API against a running fleet: the token, errors that name the
field, 404 and 409 with the engine's reasons, and the server-sent events stream."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from coordinator.devfleet.broker import mosquitto_binary
from coordinator.devfleet.fleet import ApiError, DevFleet
from tests.conftest import service_missing
from tests.daemon.conftest import restart_log
from tests.daemon.observe import wait_settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["web-1", "web-2"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevFleet]:
    """One fleet for the module, with one bad deployment already rolled back."""
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    directory = tmp_path_factory.mktemp("api") / "fleet"
    (directory / "runs").mkdir(parents=True)
    running = DevFleet(directory, HOSTS, agent_extra=restart_log(directory))
    try:
        running.start()
        running.wait_ready(60)
        first = running.deploy("2.1.0")
        wait_settled(running, first["id"], 90)
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def raw(
    fleet: DevFleet, method: str, path: str, body: bytes | None, token: str | None
) -> tuple[int, Any]:
    """Status and JSON body of one request with exactly this token (None: no header)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = fleet.api.base + path
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def token(fleet: DevFleet) -> str:
    return fleet.api.token_path.read_text().strip()


def first_deployment(fleet: DevFleet) -> dict[str, Any]:
    deployments: list[dict[str, Any]] = fleet.api.get("/api/v1/deployments")["deployments"]
    return deployments[-1]


@pytest.mark.parametrize("given", [None, "", "not-the-token", "x" * 43])
def test_an_unknown_token_is_refused(fleet: DevFleet, given: str | None) -> None:
    for method, path in [
        ("GET", "/api/v1/deployments"),
        ("GET", "/api/v1/hosts"),
        ("POST", "/api/v1/deployments"),
        ("GET", "/api/v1/events"),
    ]:
        body = b'{"version": "2.0.0"}' if method == "POST" else None
        status, reply = raw(fleet, method, path, body, given)
        assert status == 401, (method, path)
        assert "token" in reply["error"]


def test_probes_and_metrics_need_no_token(fleet: DevFleet) -> None:
    assert raw(fleet, "GET", "/healthz", None, None) == (200, {"ok": True})
    status, ready = raw(fleet, "GET", "/readyz", None, None)
    assert status == 200
    assert ready["ready"] is True
    assert ready["role"] == "leader"
    assert "rollguard_decisions_total" in fleet.api.get("/metrics")


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b'{"version": "../etc"}', "$.version"),
        (b'{"version": "2.0.0", "environment": "prod"}', "$.environment"),
        (b'{"version": "2.0.0", "hosts": ["Web 1"]}', "$.hosts[0]"),
        (b'{"versoin": "2.0.0"}', "versoin"),
        (b'{"version": 2}', "$.version"),
        (b'{"version": "2.0.0"', "truncated"),
    ],
)
def test_a_malformed_request_is_a_400_naming_the_field(
    fleet: DevFleet, body: bytes, names: str
) -> None:
    status, reply = raw(fleet, "POST", "/api/v1/deployments", body, token(fleet))
    assert status == 400
    assert names in reply["error"]


def test_an_unknown_deployment_is_a_404(fleet: DevFleet) -> None:
    for method, path in [
        ("GET", "/api/v1/deployments/d-nope"),
        ("GET", "/api/v1/deployments/d-nope/events"),
        ("POST", "/api/v1/deployments/d-nope/rollback"),
    ]:
        status, reply = raw(fleet, method, path, b"{}" if method == "POST" else None, token(fleet))
        assert status == 404, path
        assert "d-nope" in reply["error"]
    dep = first_deployment(fleet)
    path = f"/api/v1/deployments/{dep['id']}/explode"
    status, reply = raw(fleet, "POST", path, b"{}", token(fleet))
    assert status == 404
    assert "explode" in reply["error"]


def test_a_request_the_engine_refuses_is_a_409_with_its_reasons(fleet: DevFleet) -> None:
    dep = first_deployment(fleet)
    assert dep["state"] == "rolled_back"
    with pytest.raises(ApiError) as refused:
        fleet.api.post(f"/api/v1/deployments/{dep['id']}/promote", {"reason": "ship it"})
    assert refused.value.status == 409
    assert refused.value.body["reasons"]
    assert refused.value.body["error"].startswith("refused: ")
    with pytest.raises(ApiError) as unknown_host:
        fleet.deploy("2.0.0", hosts=["web-9"])
    assert unknown_host.value.status == 409
    assert unknown_host.value.body["reasons"] == ["web-9: unknown host"]


Until = Callable[[list[dict[str, Any]]], "bool | str"]


async def read_events(
    fleet: DevFleet, after: int, until: Until, trigger: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Server-sent events from ``?after=``, until ``until(events)``; ``trigger()`` runs
    (in a thread) once the stored ones have been read."""
    got: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token(fleet)}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{fleet.api.base}/api/v1/events?after={after}", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        async for line in response.content:
            text = line.decode().rstrip("\n")
            if text:
                field, _, value = text.partition(": ")
                frame[field] = value
                continue
            event = json.loads(frame["data"])
            assert int(frame["id"]) == event["seq"] and frame["event"] == event["kind"]
            got.append(event)
            frame = {}
            if trigger is not None and until(got) == "stored":
                await asyncio.to_thread(trigger)
                trigger = None
            if until(got) is True:
                return got
    return got


def test_the_event_stream_replays_stored_events_then_live_ones(fleet: DevFleet) -> None:
    dep = first_deployment(fleet)
    stored = fleet.api.get(f"/api/v1/deployments/{dep['id']}/events")["events"]
    last = stored[-1]["seq"]
    started: dict[str, Any] = {}

    def start() -> None:
        started.update(fleet.deploy("2.1.0"))

    def until(events: list[dict[str, Any]]) -> bool | str:
        mine = [e for e in events if e["deployment"] == started.get("id")]
        if any(e["kind"] == "deployment.fail" for e in mine):
            return True
        return "stored" if events[-1]["seq"] >= last else False

    events = asyncio.run(read_events(fleet, 0, until, start))

    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "in order, no duplicates"
    assert {e["seq"] for e in stored} <= set(seqs)
    live = [e for e in events if e["deployment"] == started["id"]]
    assert live[0]["kind"] == "deployment.created"
    assert live[-1]["kind"] == "deployment.fail"
    assert all(e["seq"] > last for e in live)
    # A reconnecting client resumes after the last seq it saw.
    again = asyncio.run(read_events(fleet, seqs[-1] - 1, lambda got: True))
    assert [e["seq"] for e in again] == [seqs[-1]]
    wait_settled(fleet, started["id"], 90)


def test_deployments_are_listed_and_read(fleet: DevFleet) -> None:
    listed = fleet.api.get("/api/v1/deployments")["deployments"]
    assert listed
    one = fleet.deployment(listed[0]["id"])
    assert one["id"] == listed[0]["id"]
    assert {"state", "percent", "step_name", "bake_remaining"} <= set(one)
