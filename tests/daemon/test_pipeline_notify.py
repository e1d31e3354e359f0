"""Every notification the engine makes reaches webhooks under a kind the notifier
knows: the engine's kinds are an enum and shared.kinds.notify_kind is total over it
(mypy checks the match); these tests check what the real engine sends."""

from __future__ import annotations

import msgspec

from coordinator.daemon.notify import headline
from coordinator.daemon.pipeline import _notification
from coordinator.engine import Notify
from shared.kinds import NOTICES, EventKind, NotifyKind, notify_kind
from tests.engine.sim import Sim, make_config


def test_notify_kind_is_total_over_the_event_kinds() -> None:
    for kind in EventKind:
        told = notify_kind(kind)
        assert told is None or told in NotifyKind
        if kind not in NOTICES:
            assert told is None, kind


def test_what_the_engine_notifies_in_a_rollout_and_a_rollback_is_a_notice() -> None:
    sim = Sim(hosts=10, config=make_config())
    sim.run_until(120.0)
    assert sim.start("d1", "2.0.0").accepted
    assert sim.finish("d1", 6 * 3600.0) == "completed"
    sim.operator("rollback", "d1", reason="bad release")
    sim.run_until(sim.now + 600.0)
    kinds = {n.kind for n in sim.notifications()}
    assert {
        EventKind.DEPLOYMENT_STARTED,
        EventKind.DEPLOYMENT_PROMOTED,
        EventKind.DEPLOYMENT_COMPLETED,
        EventKind.DEPLOYMENT_ROLLING_BACK,
    } <= kinds
    assert kinds <= NOTICES
    for n in sim.notifications():
        assert type(n.kind) is EventKind
        # A Notify keeps its enum kind through the wire codec.
        assert msgspec.json.decode(msgspec.json.encode(n), type=Notify).kind is n.kind


def notify(kind: EventKind) -> Notify:
    return Notify(
        time=100.0,
        kind=kind,
        severity="critical",
        message="d1 (production, 2.1.0): rolling back to 1.0.0: error_rate: 9/40 over 1.00%",
        environment="production",
        deployment="d1",
        evidence={"rule": "error_rate"},
    )


def test_a_rollback_is_told_once_when_decided_with_its_reason() -> None:
    told = _notification(notify(EventKind.DEPLOYMENT_ROLLING_BACK), {"d1": "2.1.0"})
    assert told is not None
    assert (told.kind, told.version) == (NotifyKind.ROLLED_BACK, "2.1.0")
    assert told.evidence == {"rule": "error_rate"}
    assert "rolled back" in headline(told) and "error_rate" in headline(told)
    assert _notification(notify(EventKind.DEPLOYMENT_ROLLED_BACK), {}) is None
