"""Notifications end to end: a rolled-back deployment tells each webhook of its
environment once that it started and once that it was rolled back, with the reason
and its evidence, retried after a receiver's 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from coordinator.devfleet.fleet import wait_for
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import wait_settled
from tests.daemon.webhooks import Delivery, Receiver, receiving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = [f"web-{i}" for i in range(1, 4)]


def received(receiver: Receiver, path: str) -> list[Delivery]:
    """Accepted deliveries, alerts left out (the hosts share one machine)."""
    return [
        d for d in receiver.deliveries if d.path == path and d.status == 200 and not _is_alert(d)
    ]


def _is_alert(delivery: Delivery) -> bool:
    body = delivery.body
    text = body.get("text", "")
    return (
        body.get("kind", "").startswith("alert_")
        or "alert fired" in text
        or ("alert resolved" in text)
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(Receiver(fail_first=frozenset({"json"}))) as server:
        yield server


def test_a_rollback_is_notified_once_with_its_reason_after_a_retry(
    receiver: Receiver, make_fleet: FleetFactory
) -> None:
    webhooks = [
        {"url": receiver.url("json"), "format": "json", "timeout": 2.0},
        {"url": receiver.url("slack"), "format": "slack", "timeout": 2.0},
    ]
    fleet = make_fleet(
        HOSTS, coordinator_extra={"environments": {"production": {"webhooks": webhooks}}}
    )
    started = fleet.deploy("2.1.0")
    final = wait_settled(fleet, started["id"], 90)
    assert final["state"] == "rolled_back", final["summary"]
    wait_for(lambda: len(received(receiver, "json")) >= 2, 20, "two notifications")
    time.sleep(2.0)  # anything more would arrive now

    json_deliveries = received(receiver, "json")
    assert [d.body["kind"] for d in json_deliveries] == ["deployment_started", "rolled_back"]
    # The first attempt got a 500 and was retried with the same idempotency key.
    first = next(d for d in receiver.deliveries if d.path == "json")
    assert first.status == 500
    assert first.key == json_deliveries[0].key
    assert len({d.key for d in json_deliveries}) == 2
    rolled_back = json_deliveries[1].body
    assert rolled_back["deployment"] == started["id"]
    assert rolled_back["environment"] == "production"
    assert rolled_back["version"] == "2.1.0"
    assert "error_rate" in rolled_back["message"]
    assert rolled_back["evidence"]["stable_version"] == "1.0.0"
    assert "error_rate" in rolled_back["evidence"]["failed"]
    # The Slack-shaped target got the same two, as text and blocks.
    slack = received(receiver, "slack")
    assert len(slack) == 2
    assert "rolled back" in slack[1].body["text"]
    assert "error_rate" in slack[1].body["text"]
    assert json.dumps(slack[1].body["blocks"])
