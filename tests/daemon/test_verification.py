"""Post-deployment verification, end to end: the coordinator runs the environment's
``verify`` commands as real processes once every host reports the new version; one
that fails rolls the fleet back with its output tail in the evidence, one that passes
lets the deployment complete. Real agents, broker, demo app and coordinator."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from coordinator.devfleet.fleet import STABLE, wait_for
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import events, wait_settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["web-1", "web-2"]


def verify(*commands: dict[str, object]) -> dict[str, object]:
    return {"environments": {"production": {"verify": list(commands)}}}


def stored(fleet: Any, deployment: str, kind: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = wait_for(
        lambda: (
            (found := events(fleet, deployment)) and any(e["kind"] == kind for e in found) and found
        ),
        15,
        f"{kind} in the event log",
    )
    return log


def test_a_failing_verification_rolls_the_fleet_back(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(
        HOSTS,
        coordinator_extra=verify(
            {
                "name": "smoke",
                "argv": [
                    "/bin/sh",
                    "-c",
                    'echo "checking $ROLLGUARD_VERSION"; echo "GET /orders: 502" >&2; exit 4',
                ],
                "timeout": 20.0,
            },
            {"name": "never-run", "argv": ["/bin/true"]},
        ),
    )
    started = fleet.deploy("2.0.0")
    final = wait_settled(fleet, started["id"], 120)

    assert final["state"] == "rolled_back", final["summary"]
    assert "verification command smoke failed" in final["summary"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, STABLE)
    log = stored(fleet, started["id"], "deployment.fail")
    kinds = [e["kind"] for e in log]
    # Verification started only after every host reported the new version.
    assert kinds.index("deployment.steps_done") < kinds.index("verification.started")
    assert kinds.index("verification.reported") < kinds.index("deployment.fail")
    reported = [e for e in log if e["kind"] == "verification.reported"]
    assert [e["evidence"]["name"] for e in reported] == ["smoke"]
    assert reported[0]["evidence"]["ok"] is False
    fail = next(e for e in log if e["kind"] == "deployment.fail")
    assert fail["evidence"]["rule"] == "verification"
    tail = fail["evidence"]["verification"]["output_tail"]
    assert "checking 2.0.0" in tail
    assert "GET /orders: 502" in tail
    assert "[smoke: exit status 4" in tail
    assert sorted(fail["evidence"]["hosts"]) == HOSTS
    assert "deployment.verified" not in kinds


def test_a_passing_verification_completes_the_deployment(make_fleet: FleetFactory) -> None:
    script = 'test "$ROLLGUARD_VERSION" = "$1" && echo "verified $1 for $ROLLGUARD_DEPLOYMENT_ID"'
    fleet = make_fleet(
        HOSTS,
        coordinator_extra=verify(
            {"name": "smoke", "argv": ["/bin/sh", "-c", script, "sh", "{version}"]}
        ),
    )
    started = fleet.deploy("2.0.0")
    final = wait_settled(fleet, started["id"], 120)

    assert final["state"] == "completed", final["summary"]
    assert "verification passed (smoke)" in final["summary"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "2.0.0")
    log = stored(fleet, started["id"], "deployment.verified")
    reported = next(e for e in log if e["kind"] == "verification.reported")
    assert reported["evidence"]["ok"] is True
    assert f"verified 2.0.0 for {started['id']}" in reported["evidence"]["output_tail"]
    verified = next(e for e in log if e["kind"] == "deployment.verified")
    assert verified["evidence"]["verification"] == [{"name": "smoke", "ok": True}]
    # The API's deployment shows each verification command with its outcome.
    shown = fleet.deployment(started["id"])["verification"]
    assert [(v["name"], v["ok"]) for v in shown] == [("smoke", True)]
    assert f"verified 2.0.0 for {started['id']}" in shown[0]["output_tail"]


def test_a_coordinator_killed_mid_verification_runs_it_again_and_counts_it_once(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    marks, release = tmp_path / "runs", tmp_path / "release"
    # Records each run, then waits (at most 30 s) for the test to let it pass.
    script = (
        'echo $$ >> "$1"; i=0; while [ ! -e "$2" ] && [ $i -lt 300 ]; do sleep 0.1; '
        'i=$((i+1)); done; [ -e "$2" ] && echo "smoke passed"'
    )
    fleet = make_fleet(
        HOSTS,
        coordinator_extra=verify(
            {
                "name": "smoke",
                "argv": ["/bin/sh", "-c", script, "sh", str(marks), str(release)],
                "timeout": 60.0,
            }
        ),
    )
    started = fleet.deploy("2.0.0")
    wait_for(
        lambda: marks.exists() and marks.read_text().strip(),
        120,
        "the verification command to start",
    )
    fleet.kill("coordinator")
    first = int(marks.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(first, signal.SIGKILL)  # the dead coordinator's command: not ours to keep
    fleet.start_coordinator()
    wait_for(
        lambda: len(marks.read_text().split()) == 2, 30, "the restored coordinator to re-run it"
    )
    assert fleet.deployment(started["id"])["state"] == "verifying"
    release.touch()

    final = wait_settled(fleet, started["id"], 60)
    assert final["state"] == "completed", final["summary"]
    log = stored(fleet, started["id"], "deployment.verified")
    reported = [e for e in log if e["kind"] == "verification.reported"]
    assert [(e["evidence"]["name"], e["evidence"]["ok"]) for e in reported] == [("smoke", True)]
    assert "smoke passed" in reported[0]["evidence"]["output_tail"]
    assert [e["kind"] for e in log].count("verification.started") == 1
