"""Blue-green in staging, end to end: deploy to the idle slot, judge that slot alone for
the health window, switch every host, watch; a switch back on rollback; and a bad
version that never gets traffic. Real agents with the hooks strategy and two slots per
host on the demo app (coordinator/fleet.py's ``blue_green_agent``)."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.devfleet.fleet import STABLE, DevFleet, wait_for
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import (
    assert_nothing_executed_twice,
    deployment_while_running,
    events,
    executed,
    retained_statuses,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["web-1", "web-2", "web-3"]


def slots(fleet: DevFleet) -> dict[str, str | None]:
    hosts: list[dict[str, Any]] = fleet.api.get("/api/v1/hosts")["hosts"]
    return {h["host"]: h["slot"] for h in hosts}


def serving(fleet: DevFleet) -> dict[str, str]:
    """The version each host's traffic reaches (what the demo app serves)."""
    return {h: fleet.linked_version(h) for h in HOSTS}


def started_blue_green(make_fleet: FleetFactory) -> DevFleet:
    fleet = make_fleet(HOSTS, blue_green=True)
    wait_for(
        lambda: all("application_green" in h["checks"] for h in fleet.online_hosts()),
        20,
        "every agent probing its idle (green) slot",
    )
    assert slots(fleet) == dict.fromkeys(HOSTS, "blue")
    return fleet


def test_blue_green_deploys_to_the_idle_slot_then_switches(make_fleet: FleetFactory) -> None:
    fleet = started_blue_green(make_fleet)
    started = fleet.deploy("2.0.0", environment="staging")
    assert started["strategy"] == "blue-green"
    assert [s["name"] for s in started["steps"]] == ["inactive slot", "switch"]

    # Through the health window the new version runs on green and serves nobody.
    wait_for(
        lambda: deployment_while_running(fleet, started["id"])["state"] == "baking",
        20,
        "the health window",
    )
    assert serving(fleet) == dict.fromkeys(HOSTS, STABLE)
    assert slots(fleet) == dict.fromkeys(HOSTS, "blue")

    final = wait_settled(fleet, started["id"], 90)

    assert final["state"] == "completed", final["summary"]
    assert slots(fleet) == dict.fromkeys(HOSTS, "green")
    assert serving(fleet) == dict.fromkeys(HOSTS, "2.0.0")
    versions = {h["host"]: h["version"] for h in fleet.api.get("/api/v1/hosts")["hosts"]}
    assert versions == dict.fromkeys(HOSTS, "2.0.0")
    for host in HOSTS:
        assert [(a, v) for _, a, v in executed(fleet, host)] == [
            ("deploy", "2.0.0"),
            ("switch", "green"),
        ]
    assert_nothing_executed_twice(fleet)
    log = events(fleet, started["id"])
    passed = [e for e in log if e["kind"] == "deployment.bake_passed"]
    assert len(passed) == 2  # the health window on green, then the watch after the switch
    health = next(r for r in passed[0]["evidence"]["rules"] if r["rule"] == "error_rate")
    assert health["verdict"] == "pass"
    assert "deployment.verified" in [e["kind"] for e in log]


def test_blue_green_switches_back_on_rollback(make_fleet: FleetFactory) -> None:
    fleet = started_blue_green(make_fleet)
    started = fleet.deploy("2.0.0", environment="staging")
    wait_for(
        lambda: (
            (d := deployment_while_running(fleet, started["id"]))["state"] == "baking"
            and d["step"] == 1
        ),
        60,
        "the switch and its watch",
    )
    assert serving(fleet) == dict.fromkeys(HOSTS, "2.0.0")
    fleet.api.post(f"/api/v1/deployments/{started['id']}/rollback", {"reason": "switch back"})

    final = wait_settled(fleet, started["id"], 60)

    assert final["state"] == "rolled_back", final["summary"]
    assert slots(fleet) == dict.fromkeys(HOSTS, "blue")
    assert serving(fleet) == dict.fromkeys(HOSTS, STABLE)
    for host in HOSTS:
        assert [(a, v) for _, a, v in executed(fleet, host)] == [
            ("deploy", "2.0.0"),
            ("switch", "green"),
            ("switch", "blue"),
        ]
    assert_nothing_executed_twice(fleet)


def test_a_bad_version_fails_its_health_window_and_never_serves(
    make_fleet: FleetFactory,
) -> None:
    fleet = started_blue_green(make_fleet)
    started = fleet.deploy("2.1.0", environment="staging")

    final = wait_settled(fleet, started["id"], 60)

    assert final["state"] == "rolled_back", final["summary"]
    assert final["step"] == 0
    assert slots(fleet) == dict.fromkeys(HOSTS, "blue")
    assert serving(fleet) == dict.fromkeys(HOSTS, STABLE)
    # Nothing was switched, so nothing had to be switched back.
    assert all([a for _, a, _ in executed(fleet, h)] == ["deploy"] for h in HOSTS)
    decision = next(e for e in events(fleet, started["id"]) if e["kind"] == "deployment.fail")
    assert "error_rate" in decision["evidence"]["failed"]


def versions(fleet: DevFleet) -> dict[str, str | None]:
    """The version each host reports (its agent's retained status, via the API)."""
    hosts: list[dict[str, Any]] = fleet.api.get("/api/v1/hosts")["hosts"]
    return {h["host"]: h["version"] for h in hosts}


def test_blue_green_hosts_report_the_version_they_serve(make_fleet: FleetFactory) -> None:
    """A hooks agent cannot see what runs: it reports deploy.initial_version on its
    initial slot, then the version of whichever slot it switched to."""
    fleet = started_blue_green(make_fleet)
    assert versions(fleet) == dict.fromkeys(HOSTS, STABLE)
    started = fleet.deploy("2.0.0", environment="staging")
    assert started["from_version"] == STABLE
    wait_for(
        lambda: (
            (d := deployment_while_running(fleet, started["id"]))["state"] == "baking"
            and d["step"] == 1
        ),
        60,
        "the switch and its watch",
    )
    assert versions(fleet) == dict.fromkeys(HOSTS, "2.0.0")
    fleet.api.post(f"/api/v1/deployments/{started['id']}/rollback", {"reason": "switch back"})

    final = wait_settled(fleet, started["id"], 60)

    assert final["state"] == "rolled_back", final["summary"]
    # The switch-back names only the slot; the agent knows blue still holds 1.0.0.
    assert slots(fleet) == dict.fromkeys(HOSTS, "blue")
    assert versions(fleet) == dict.fromkeys(HOSTS, STABLE)
    assert {h: s.version for h, s in retained_statuses(fleet).items()} == dict.fromkeys(
        HOSTS, STABLE
    )
    rolling_back = next(
        e for e in events(fleet, started["id"]) if "stable_version" in (e["evidence"] or {})
    )
    assert rolling_back["evidence"]["stable_version"] == STABLE
