"""Canary in production, end to end: a bad version rolled back on its evidence, a good
one promoted through every step. Real agents, broker, demo app and coordinator."""

from __future__ import annotations

import pytest

from coordinator.devfleet.fleet import STABLE
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import (
    assert_nothing_executed_twice,
    events,
    metric,
    retained_statuses,
    runs,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Five hosts give every canary step a host of its own: 10 % -> 1, 25 % -> 2, 50 % -> 3.
HOSTS = [f"web-{i}" for i in range(1, 6)]


def test_bad_canary_is_rolled_back_with_its_evidence(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(HOSTS)
    started = fleet.deploy("2.1.0")
    canary = started["steps"][0]["orders"][0]["host"]

    final = wait_settled(fleet, started["id"], 90)

    assert final["state"] == "rolled_back", final["summary"]
    assert final["step"] == 0, "the bad version never left its first step"
    # Every host runs the stable version: on disk, in its retained status, in the API.
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, STABLE)
    statuses = retained_statuses(fleet)
    assert {h: s.version for h, s in statuses.items()} == dict.fromkeys(HOSTS, STABLE)
    assert all(s.online for s in statuses.values())
    api_hosts = {h["host"]: h for h in fleet.api.get("/api/v1/hosts")["hosts"]}
    assert {h: api_hosts[h]["version"] for h in HOSTS} == dict.fromkeys(HOSTS, STABLE)
    # Only the canary was touched: deployed once, rolled back once.
    assert runs(fleet, canary) == [(started["id"], "2.1.0"), (started["id"], STABLE)]
    assert all(runs(fleet, h) == [] for h in HOSTS if h != canary)
    assert_nothing_executed_twice(fleet)

    # The decision is in the event log with its evidence: rule, window, numbers, hosts.
    log = events(fleet, started["id"])
    decision = next(e for e in log if e["kind"] == "deployment.fail")
    evidence = decision["evidence"]
    assert evidence["stable_version"] == STABLE
    assert "error_rate" in evidence["failed"]
    rule = next(r for r in evidence["rules"] if r["rule"] == "error_rate")
    assert rule["verdict"] == "fail"
    assert rule["cohort"] == "canary"
    assert rule["hosts"] == [canary]
    assert rule["window_start"] < rule["window_end"]
    numbers = rule["numbers"]
    assert 0 < numbers["events"] <= numbers["trials"]
    assert numbers["lower"] > numbers["threshold"] == 0.01
    assert "error_rate" in decision["message"]
    done = next(e for e in log if e["kind"] == "deployment.rollback_done")
    assert done["evidence"]["not_on_stable"] == {}
    assert [c["host"] for c in done["evidence"]["commands"]] == [canary]

    # The coordinator's own metrics count the decisions and the commands' round trips.
    text = fleet.api.get("/metrics")
    assert metric(text, "rollguard_decisions_total", kind="deployment.fail") == 1
    assert metric(text, "rollguard_decisions_total", kind="deployment.rollback_done") == 1
    assert (metric(text, "rollguard_command_roundtrip_seconds_count") or 0) >= 2
    assert metric(text, "rollguard_hosts_online") == len(HOSTS)
    assert metric(text, "rollguard_deployments", state="rolled_back") == 1
    assert (metric(text, "rollguard_messages_ingested_total", kind="metrics") or 0) > 0
    # Where a decision's time went: the batches through the engine (those ingested while
    # it was active), the ticks, the stored steps.
    judged = metric(text, "rollguard_engine_step_seconds_count", event="MetricsReceived") or 0
    assert 0 < judged <= (metric(text, "rollguard_messages_ingested_total", kind="metrics") or 0)
    assert (metric(text, "rollguard_engine_step_seconds_count", event="Tick") or 0) > 0
    assert (metric(text, "rollguard_step_stored_seconds_count") or 0) >= 2


def test_good_version_is_promoted_through_every_step(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(HOSTS)
    started = fleet.deploy("2.0.0")
    assert [s["percent"] for s in started["steps"]] == [10.0, 25.0, 50.0, 100.0]

    final = wait_settled(fleet, started["id"], 150)

    assert final["state"] == "completed", final["summary"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "2.0.0")
    statuses = retained_statuses(fleet)
    assert {h: s.version for h, s in statuses.items()} == dict.fromkeys(HOSTS, "2.0.0")
    for host in HOSTS:
        assert runs(fleet, host) == [(started["id"], "2.0.0")]
    assert_nothing_executed_twice(fleet)
    log = events(fleet, started["id"])
    promoted = [e["evidence"]["percent"] for e in log if e["kind"] == "deployment.next_step"]
    assert promoted == [25.0, 50.0, 100.0]
    passed = [e for e in log if e["kind"] == "deployment.bake_passed"]
    assert len(passed) == 4
    assert all(e["evidence"]["outcome"] == "pass" for e in passed)
    assert any(e["kind"] == "deployment.verified" for e in log)
