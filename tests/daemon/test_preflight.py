"""Preflight commands before a production deployment: a real ``pg_dump`` whose outcome
and output tail land in the event log before the first host is touched, and a failing
check that refuses the deployment."""

from __future__ import annotations

import shutil

import pytest

from coordinator.devfleet.fleet import wait_for
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import deployment_while_running, events, runs, wait_settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["web-1", "web-2"]


def preflight(*commands: dict[str, object]) -> dict[str, object]:
    return {"environments": {"production": {"preflight": list(commands)}}}


def test_a_database_backup_runs_and_is_recorded_before_the_deployment(
    make_fleet: FleetFactory, pg_url: str
) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.skip("pg_dump is not installed")
    fleet = make_fleet(
        HOSTS,
        coordinator_extra={
            "store": {"url": pg_url},  # so there is a real schema to dump
            **preflight(
                {"name": "backup", "argv": [pg_dump, "--schema-only", pg_url], "timeout": 30.0}
            ),
        },
    )
    started = fleet.deploy("2.0.0")
    assert started["state"] == "preflight"
    wait_for(
        lambda: deployment_while_running(fleet, started["id"])["state"] == "baking",
        40,
        "the deployment to pass its preflight",
    )

    log = events(fleet, started["id"])
    kinds = [e["kind"] for e in log]
    assert kinds.index("preflight.reported") < kinds.index("deployment.preflight_passed")
    reported = next(e for e in log if e["kind"] == "preflight.reported")
    assert reported["evidence"]["name"] == "backup"
    assert reported["evidence"]["ok"] is True
    tail = reported["evidence"]["output_tail"]
    assert "PostgreSQL database dump complete" in tail
    assert "[backup: exit status 0" in tail
    passed = next(e for e in log if e["kind"] == "deployment.preflight_passed")
    assert passed["evidence"]["preflight"] == [{"name": "backup", "ok": True}]


def test_a_failing_preflight_command_refuses_the_deployment(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(
        HOSTS,
        coordinator_extra=preflight(
            {
                "name": "env-check",
                "argv": ["/bin/sh", "-c", "echo checking; echo 'disk /srv 97% full' >&2; exit 3"],
            },
            {"name": "never-run", "argv": ["/bin/false"]},
        ),
    )
    started = fleet.deploy("2.0.0")
    final = wait_settled(fleet, started["id"], 30)

    assert final["state"] == "refused"
    assert "env-check" in final["summary"]
    # The API shows the engine's state at once; its step reaches the event log when
    # stored, a moment later.
    log = wait_for(
        lambda: (
            (found := events(fleet, started["id"]))
            and any(e["kind"] == "deployment.preflight_failed" for e in found)
            and found
        ),
        15,
        "the refusal in the event log",
    )
    reported = [e for e in log if e["kind"] == "preflight.reported"]
    assert [e["evidence"]["name"] for e in reported] == ["env-check"]
    assert reported[0]["evidence"]["ok"] is False
    tail = reported[0]["evidence"]["output_tail"]
    assert "checking" in tail
    assert "disk /srv 97% full" in tail
    assert "[env-check: exit status 3" in tail
    refused = next(e for e in log if e["kind"] == "deployment.preflight_failed")
    assert "disk /srv 97% full" in refused["evidence"]["output_tail"]
    # Nothing reached a host.
    assert all(runs(fleet, h) == [] for h in HOSTS)
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "1.0.0")


def test_a_preflight_command_is_told_what_it_runs_for(make_fleet: FleetFactory) -> None:
    script = (
        'echo "id=$ROLLGUARD_DEPLOYMENT_ID v=$ROLLGUARD_VERSION'
        " from=$ROLLGUARD_PREVIOUS_VERSION env=$ROLLGUARD_ENVIRONMENT"
        ' strategy=$ROLLGUARD_STRATEGY file=$1"'
    )
    fleet = make_fleet(
        HOSTS,
        coordinator_extra=preflight(
            {"name": "backup", "argv": ["/bin/sh", "-c", script, "sh", "/backups/{version}.sql"]}
        ),
    )
    started = fleet.deploy("2.0.0")
    log = wait_for(
        lambda: (
            (found := events(fleet, started["id"]))
            and any(e["kind"] == "preflight.reported" for e in found)
            and found
        ),
        30,
        "the preflight report in the event log",
    )
    reported = next(e for e in log if e["kind"] == "preflight.reported")
    assert reported["evidence"]["ok"] is True
    assert (
        f"id={started['id']} v=2.0.0 from=1.0.0 env=production strategy=canary"
        " file=/backups/2.0.0.sql"
    ) in reported["evidence"]["output_tail"]
