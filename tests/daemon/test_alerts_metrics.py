"""Alerts people receive and metrics for Prometheus, against a real fleet: an alert that
fires is stored, listed by ``GET /api/v1/alerts`` and ``rollguard alerts`` with its
evidence and the webhook that was told, logged at warning, and counted by
``rollguard_alerts_firing``; a running canary's rules, the hosts' gauges and the
notifier's deliveries are on ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from coordinator.devfleet.fleet import ApiError, wait_for
from tests.cli.run import rollguard
from tests.daemon.conftest import FleetFactory
from tests.daemon.observe import deployment_while_running, metric, wait_settled
from tests.daemon.webhooks import Receiver, receiving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["web-1", "web-2", "web-3"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(Receiver()) as server:
        yield server


def test_an_alert_is_listed_logged_counted_and_its_deliveries_shown(
    receiver: Receiver, make_fleet: FleetFactory
) -> None:
    fleet = make_fleet(
        HOSTS,
        coordinator_extra={
            # Every host's memory is over 1 %: each fires a memory alert.
            "alerts": {"memory_percent": 1.0},
            "environments": {
                "production": {"webhooks": [{"url": receiver.url("hook"), "timeout": 2.0}]}
            },
        },
    )

    def firing_memory() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = fleet.api.get("/api/v1/alerts")["alerts"]
        found = [a for a in alerts if a["rule"] == "memory" and a["resolved"] is None]
        told = all(any(d["outcome"] == "sent" for d in a["told"]) for a in found)
        return found if len(found) == len(HOSTS) and told else []

    alerts = wait_for(firing_memory, 40, "a memory alert firing on every host, delivered")
    alert = alerts[0]
    assert alert["evidence"]["rule"] == "memory"
    assert alert["evidence"]["threshold"] == 1.0
    assert alert["evidence"]["value"] > 1.0
    assert alert["environment"] == "production"
    assert alert["told"][0]["target"] == f"http://127.0.0.1:{receiver.port}/…"
    assert alert["told"][0]["kind"] == "alert_fired"
    assert any(
        b["kind"] == "alert_fired" and b["evidence"]["rule"] == "memory"
        for b in receiver.bodies("hook")
    )

    # The CLI shows the same, as a table and as JSON.
    table = rollguard("alerts", fleet=fleet)
    assert table.returncode == 0, table.stderr
    assert "FIRING" in table.stdout
    assert "memory" in table.stdout
    assert f"http://127.0.0.1:{receiver.port}/…" in table.stdout
    as_json = rollguard("alerts", "--json", fleet=fleet)
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)["alerts"]
    assert {a["host"] for a in listed if a["rule"] == "memory"} >= set(HOSTS)
    bad = rollguard("alerts", "--limit", "0", fleet=fleet)
    assert bad.returncode != 0
    assert "--limit must be between 1 and 500" in bad.stderr
    with pytest.raises(ApiError) as refused:
        fleet.api.get("/api/v1/alerts?limit=nope")
    assert refused.value.status == 400

    # The journal has it without any webhook: a warning with the evidence.
    log = (fleet.directory / "logs" / "coordinator.log").read_text()
    fired = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and "alert fired" in line
    ]
    assert fired, "no 'alert fired' line in the coordinator's log"
    assert fired[0]["level"].lower() == "warning"
    assert '"rule": "memory"' in fired[0]["message"]

    text = fleet.api.get("/metrics")
    assert metric(text, "rollguard_alerts_firing", rule="memory") == len(HOSTS)
    assert (metric(text, "rollguard_host_memory_percent", host="web-1") or 0) > 1.0
    assert metric(text, "rollguard_host_online", host="web-1") == 1.0
    assert metric(text, "rollguard_host_series_omitted") == 0.0
    sent = metric(
        text,
        "rollguard_notifier_deliveries_total",
        environment="production",
        kind="alert_fired",
        outcome="sent",
    )
    assert sent is not None and sent >= len(HOSTS)


def test_a_canarys_rules_are_on_metrics_and_its_rollback_notice_links_to_its_page(
    receiver: Receiver, make_fleet: FleetFactory
) -> None:
    fleet = make_fleet(
        HOSTS,
        coordinator_extra={
            "http": {"public_url": "https://rollguard.example.com/"},
            "environments": {
                "production": {"webhooks": [{"url": receiver.url("hook"), "timeout": 2.0}]}
            },
        },
    )
    # A bad release: while its canary bakes, /metrics carries its rules' numbers; the
    # rollback's notification links to the deployment's page.
    started = fleet.deploy("2.1.0")

    def judged() -> str | None:
        if deployment_while_running(fleet, started["id"])["state"] not in {"baking", "held"}:
            return None
        text: str = fleet.api.get("/metrics")
        labels = {"deployment": started["id"], "rule": "error_rate", "cohort": "canary"}
        if metric(text, "rollguard_rule_threshold", **labels) is None:
            return None
        return text

    text = wait_for(judged, 60, "the canary's rules on /metrics")
    labels = {"deployment": started["id"], "rule": "error_rate", "cohort": "canary"}
    assert metric(text, "rollguard_rule_threshold", **labels) == 0.01
    estimate = metric(text, "rollguard_rule_estimate", **labels)
    lower = metric(text, "rollguard_rule_lower_bound", **labels)
    upper = metric(text, "rollguard_rule_upper_bound", **labels)
    assert estimate is not None and lower is not None and upper is not None
    assert lower <= estimate <= upper
    verdicts = [
        metric(text, "rollguard_rule_verdict", **labels, verdict=v)
        for v in ("pass", "fail", "inconclusive", "no_data")
    ]
    assert sum(v or 0 for v in verdicts) == 1.0

    final = wait_settled(fleet, started["id"], 90)
    assert final["state"] == "rolled_back"
    wait_for(
        lambda: any(b["kind"] == "rolled_back" for b in receiver.bodies("hook")), 20, "the rollback"
    )
    rolled = next(b for b in receiver.bodies("hook") if b["kind"] == "rolled_back")
    assert rolled["link"] == f"https://rollguard.example.com/deployments/{started['id']}"
    # Finished: nothing of it is left on /metrics.
    after = fleet.api.get("/metrics")
    assert metric(after, "rollguard_rule_threshold", deployment=started["id"]) is None
