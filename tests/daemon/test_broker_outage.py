"""The broker goes away for longer than the ack timeout while a step's commands are
being carried out, end to end: the agents finish and keep their answers, the
coordinator (which hears nobody meanwhile) lets no ack timeout run out, and when the
broker is back the answers arrive and the release goes on. Real agents, broker, demo
app and coordinator."""

from __future__ import annotations

import time

import pytest

from coordinator.devfleet.fleet import FAST_POLICY
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import assert_nothing_executed_twice, events, runs, wait_settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = [f"web-{i}" for i in range(1, 5)]
ACK_TIMEOUT = float(FAST_POLICY["ack_timeout"])


def test_a_broker_outage_longer_than_the_ack_timeout_fails_no_good_step(
    make_fleet: FleetFactory,
) -> None:
    # A restart that takes 3 s keeps the first step's command in flight when the
    # broker stops.
    fleet = make_fleet(HOSTS, restart_delay=3.0)
    started = fleet.deploy("2.0.0")
    deployment = started["id"]
    canary = started["steps"][0]["orders"][0]["host"]
    fleet.wait_state(deployment, {"deploying"}, 30)
    # The command is at the canary within milliseconds; its restart takes 3 s.
    time.sleep(1.0)
    assert runs(fleet, canary) == [], "the canary answered before the broker stopped"
    fleet.broker.stop()
    down_at = time.monotonic()
    # Longer than the ack timeout, and than the missing-data grace.
    time.sleep(ACK_TIMEOUT + 5.0)
    # The canary carried its command out meanwhile; its answer waits on its disk.
    assert runs(fleet, canary) == [(deployment, "2.0.0")]
    fleet.broker.start()
    assert time.monotonic() - down_at > ACK_TIMEOUT

    final = wait_settled(fleet, deployment, 150)
    log = events(fleet, deployment)
    kinds = [e["kind"] for e in log]
    assert final["state"] == "completed", [(e["kind"], e["host"], e["message"]) for e in log]
    assert "deployment.fail" not in kinds and "deployment.hold" not in kinds, kinds
    # Each host carried the deploy out once: nothing was sent again as if lost.
    assert all(runs(fleet, h) == [(deployment, "2.0.0")] for h in HOSTS)
    assert_nothing_executed_twice(fleet)
    # The coordinator's first answer from the canary came after the outage.
    acked = next(e for e in log if e["kind"] == "deployment.acked")
    assert acked["evidence"]["hosts"] == [canary]
