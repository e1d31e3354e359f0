"""Every engine notification reaches webhooks under a kind people read correctly."""

from __future__ import annotations

from coordinator.daemon.notify import Notification, headline
from shared.kinds import NOTICES, EventKind, NotifyKind, notify_kind


def test_every_notifier_kind_has_a_headline() -> None:
    for kind in NotifyKind:
        text = headline(Notification(kind=kind, environment="production", time=1.0))
        assert text.startswith(":") and "production" in text


def test_every_notice_but_the_verified_rollback_reaches_webhooks() -> None:
    sent = {kind: notify_kind(kind) for kind in NOTICES}
    assert [k for k, told in sent.items() if told is None] == [EventKind.DEPLOYMENT_ROLLED_BACK]
    # Every webhook kind is used by some notice.
    assert {told for told in sent.values() if told is not None} == set(NotifyKind)


def test_an_automatic_hold_is_not_called_a_pause() -> None:
    assert notify_kind(EventKind.DEPLOYMENT_HELD) is NotifyKind.HELD
    assert notify_kind(EventKind.DEPLOYMENT_PAUSED) is NotifyKind.PAUSED
    held = Notification(
        kind=NotifyKind.HELD,
        environment="production",
        version="2.4.1",
        time=1.0,
        message="fleet-wide incident: the baseline breaches as badly as the canary",
    )
    assert "held for an operator" in headline(held)
    assert "paused" not in headline(held)


def test_a_refusal_is_not_called_a_failure() -> None:
    assert notify_kind(EventKind.DEPLOYMENT_REFUSED) is NotifyKind.REFUSED
    refused = Notification(
        kind=NotifyKind.REFUSED, environment="staging", version="3.0.0", time=1.0
    )
    assert "refused before it started" in headline(refused)
