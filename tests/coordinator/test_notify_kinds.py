"""Every engine notification reaches webhooks under a kind people read correctly."""

from __future__ import annotations

import typing

from coordinator.daemon.notify import Kind, Notification, headline
from coordinator.daemon.pipeline import NOTIFY_KINDS


def test_every_mapped_kind_has_a_headline() -> None:
    for kind in {k for k in NOTIFY_KINDS.values() if k is not None}:
        text = headline(Notification(kind=kind, environment="production", time=1.0))
        assert text.startswith(":") and "production" in text
    assert {k for k in NOTIFY_KINDS.values() if k} <= set(typing.get_args(Kind))


def test_an_automatic_hold_is_not_called_a_pause() -> None:
    assert NOTIFY_KINDS["deployment.held"] == "held"
    assert NOTIFY_KINDS["deployment.paused"] == "paused"
    held = Notification(
        kind="held",
        environment="production",
        version="2.4.1",
        time=1.0,
        message="fleet-wide incident: the baseline breaches as badly as the canary",
    )
    assert "held for an operator" in headline(held)
    assert "paused" not in headline(held)


def test_a_refusal_is_not_called_a_failure() -> None:
    assert NOTIFY_KINDS["deployment.refused"] == "refused"
    refused = Notification(kind="refused", environment="staging", version="3.0.0", time=1.0)
    assert "refused before it started" in headline(refused)
