"""A host that dies for good mid-bake, end to end: the deployment completes on the
hosts it can reach and lists the dead one; when its agent is started again, it is
brought to the new version. Real agents, broker, demo app and coordinator."""

from __future__ import annotations

import signal

import pytest

from coordinator.devfleet.fleet import STABLE, wait_for
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import (
    assert_nothing_executed_twice,
    events,
    retained_statuses,
    runs,
    wait_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = [f"web-{i}" for i in range(1, 6)]
# One host of five away is 20 %: tolerated here, so the step goes on without it.
TOLERANT = {"environments": {"production": {"unreachable_share": 0.2}}}


def test_a_baseline_agent_killed_mid_bake_is_listed_then_converged(
    make_fleet: FleetFactory,
) -> None:
    fleet = make_fleet(HOSTS, coordinator_extra=TOLERANT)
    started = fleet.deploy("2.0.0")
    deployment = started["id"]
    # A host of the 50 % step: a baseline host while the 10 % step bakes.
    dead = started["steps"][2]["orders"][0]["host"]
    fleet.wait_state(deployment, {"baking"}, 30)
    fleet.kill(dead, signal.SIGKILL)

    final = wait_settled(fleet, deployment, 150)

    assert final["state"] == "completed", final["summary"]
    assert final["unreachable"] == [dead]
    assert f"{dead} unreachable" in final["summary"]
    alive = [h for h in HOSTS if h != dead]
    assert {h: fleet.linked_version(h) for h in alive} == dict.fromkeys(alive, "2.0.0")
    assert fleet.linked_version(dead) == STABLE
    assert runs(fleet, dead) == [], "an unreachable host is never commanded"
    log = events(fleet, deployment)
    assert not [e for e in log if e["kind"] in ("deployment.fail", "deployment.rollback")]
    skipped = [
        e for e in log if e["kind"] == "deployment.next_step" and e["evidence"].get("unreachable")
    ]
    assert [e["evidence"]["unreachable"] for e in skipped] == [[dead]]

    # The agent is started again: its birth status brings it to the new version.
    fleet.start_agent(dead)
    wait_for(lambda: fleet.linked_version(dead) == "2.0.0", 60, f"{dead} converged")
    wait_for(
        lambda: (
            (s := retained_statuses(fleet).get(dead)) is not None
            and s.online
            and s.version == "2.0.0"
        ),
        30,
        f"{dead} to report 2.0.0",
    )
    assert runs(fleet, dead) == [(deployment, "2.0.0")]
    converging = wait_for(
        lambda: [e for e in events(fleet, deployment) if e["kind"] == "host.converging"],
        15,
        "the convergence to be stored",
    )
    assert len(converging) == 1
    assert converging[0]["host"] == dead
    assert converging[0]["evidence"]["because"] == "completed"
    assert converging[0]["evidence"]["version"] == "2.0.0"
    assert_nothing_executed_twice(fleet)


def test_a_host_back_while_the_coordinator_was_down_is_converged_on_restart(
    make_fleet: FleetFactory,
) -> None:
    """The coordinator rebuilds the fleet from the retained statuses when it restarts:
    a host that came back meanwhile is converged then, by one command."""
    fleet = make_fleet(HOSTS, coordinator_extra=TOLERANT)
    started = fleet.deploy("2.0.0")
    deployment = started["id"]
    dead = started["steps"][2]["orders"][0]["host"]
    fleet.wait_state(deployment, {"baking"}, 30)
    fleet.kill(dead, signal.SIGKILL)
    final = wait_settled(fleet, deployment, 150)
    assert final["state"] == "completed", final["summary"]
    assert final["unreachable"] == [dead]

    fleet.kill("coordinator", signal.SIGKILL)
    fleet.start_agent(dead)
    wait_for(
        lambda: (s := retained_statuses(fleet).get(dead)) is not None and s.online,
        30,
        f"{dead} back online",
    )
    assert fleet.linked_version(dead) == STABLE
    fleet.start_coordinator()

    wait_for(lambda: fleet.linked_version(dead) == "2.0.0", 60, f"{dead} converged")
    converging = wait_for(
        lambda: [e for e in events(fleet, deployment) if e["kind"] == "host.converging"],
        15,
        "the convergence to be stored",
    )
    assert [(e["host"], e["evidence"]["because"]) for e in converging] == [(dead, "completed")]
    assert runs(fleet, dead) == [(deployment, "2.0.0")]
    assert_nothing_executed_twice(fleet)
