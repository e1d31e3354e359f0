"""The kinds' values are stored in event logs and published on the MQTT events topic:
they never change. A new kind is a new member; renaming one breaks every stored log."""

from __future__ import annotations

import re

import msgspec

from shared.kinds import NOTICES, EventKind, NotifyKind, notify_kind

STORED = {
    "deployment.preflight_passed",
    "deployment.preflight_failed",
    "deployment.acked",
    "deployment.bake_passed",
    "deployment.extend",
    "deployment.hold",
    "deployment.cleared",
    "deployment.promote",
    "deployment.approve",
    "deployment.next_step",
    "deployment.approval_required",
    "deployment.steps_done",
    "deployment.verified",
    "deployment.pause",
    "deployment.resume",
    "deployment.fail",
    "deployment.rollback",
    "deployment.rollback_done",
    "deployment.rollback_failed",
    "deployment.created",
    "deployment.refused",
    "deployment.missing",
    "deployment.fleet",
    "deployment.resumed_after_restart",
    "host.converging",
    "deployment.started",
    "deployment.promoted",
    "deployment.paused",
    "deployment.held",
    "deployment.resumed",
    "deployment.approval_needed",
    "deployment.rolling_back",
    "deployment.rolled_back",
    "deployment.completed",
    "command.succeeded",
    "command.failed",
    "command.rejected",
    "command.unknown",
    "command.host_mismatch",
    "command.late",
    "operator.start",
    "operator.promote",
    "operator.rollback",
    "operator.pause",
    "operator.resume",
    "operator.approve",
    "preflight.reported",
    "preflight.ignored",
    "verification.started",
    "verification.reported",
    "verification.ignored",
    "alert.fired",
    "alert.resolved",
    "analysis.window",
}
WEBHOOK = {
    "deployment_started",
    "step_promoted",
    "paused",
    "held",
    "resumed",
    "approval_needed",
    "rolled_back",
    "completed",
    "failed",
    "refused",
    "alert_fired",
    "alert_resolved",
}


def test_event_kinds_keep_their_stored_values() -> None:
    assert {k.value for k in EventKind} == STORED
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", k.value) for k in EventKind)


def test_notify_kinds_keep_their_webhook_values() -> None:
    assert {k.value for k in NotifyKind} == WEBHOOK


def test_a_kind_is_its_string_on_the_wire_and_back() -> None:
    for kind in EventKind:
        assert msgspec.json.encode(kind) == msgspec.json.encode(kind.value)
        assert msgspec.json.decode(msgspec.json.encode(kind.value), type=EventKind) is kind


def test_only_notices_reach_webhooks() -> None:
    assert {k for k in EventKind if notify_kind(k) is not None} <= NOTICES
