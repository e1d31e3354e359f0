"""What the notifier adds for people: a link to the deployment's page when
http.public_url is set, every fired alert logged at warning with its evidence (webhook
or not), and the deliveries of each alert remembered for ``GET /api/v1/alerts``."""

from __future__ import annotations

import logging

import pytest

from coordinator.daemon.notify import AlertDeliveries, Notification, Notifier, slack_payload
from shared.config.coordinator import HttpConfig, Webhook
from shared.kinds import NotifyKind

HOOK = Webhook(url="https://hooks.example.com/services/SECRET", format="json")


def fired(time: float = 100.0) -> Notification:
    return Notification(
        kind=NotifyKind.ALERT_FIRED,
        environment="production",
        host="web-1",
        message="web-1: memory alert: memory at 95 % (threshold 90 %)",
        evidence={"rule": "memory", "value": 95.0, "threshold": 90.0},
        time=time,
        key=f"web-1@{time}",
    )


def test_a_fired_alert_is_logged_at_warning_without_any_webhook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier({})
    with caplog.at_level(logging.WARNING, logger="coordinator.daemon.notify"):
        assert notifier.notify(fired()) is False  # nobody to send it to...
    [record] = caplog.records
    assert record.levelno == logging.WARNING  # ...but the journal has it
    assert "memory alert" in record.getMessage()
    assert '"threshold": 90.0' in record.getMessage()


def test_a_deployment_notification_links_to_its_page() -> None:
    http = HttpConfig(public_url="https://rollguard.example.com/")
    link = http.deployment_link("d1")
    assert link == "https://rollguard.example.com/deployments/d1"
    assert HttpConfig().deployment_link("d1") is None
    with pytest.raises(ValueError, match="public_url must be an http"):
        HttpConfig(public_url="rollguard.example.com")
    notification = Notification(
        kind=NotifyKind.ROLLED_BACK,
        environment="production",
        deployment="d1",
        time=1.0,
        link=link,
    )
    context = slack_payload(notification)["blocks"][-1]["elements"][0]["text"]
    assert "<https://rollguard.example.com/deployments/d1|open the deployment>" in context


def test_the_deliveries_of_each_firing_are_remembered() -> None:
    ledger = AlertDeliveries(limit=2)
    ledger.record("sent", fired(100.0), HOOK)
    [told] = ledger.told("memory:web-1", 100.0)
    assert told.target == "https://hooks.example.com/…"  # the secret path is not shown
    assert told.outcome == "sent"
    assert told.kind == "alert_fired"
    # A later firing of the same alert starts its own list; retries are not deliveries.
    ledger.record("retried", fired(200.0), HOOK)
    ledger.record("failed", fired(200.0), HOOK)
    assert [d.outcome for d in ledger.told("memory:web-1", 200.0)] == ["failed"]
    assert ledger.told("memory:web-1", 100.0) == []
    # Bounded: the oldest alerts are forgotten first.
    for host in ("web-2", "web-3"):
        other = Notification(
            kind=NotifyKind.ALERT_FIRED,
            environment="production",
            host=host,
            evidence={"rule": "cpu"},
            time=300.0,
        )
        ledger.record("sent", other, HOOK)
    assert ledger.told("memory:web-1", 200.0) == []
    assert len(ledger.told("cpu:web-3", 300.0)) == 1
