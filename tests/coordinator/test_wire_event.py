"""Events on the wire stay within the limit every receiver enforces."""

from __future__ import annotations

from coordinator.daemon.session import wire_event
from shared.messages import MAX_PAYLOAD, Event, decode


def test_small_events_go_out_whole() -> None:
    event = Event(seq=3, time=1.0, kind="deployment.acked", message="m", evidence={"a": 1})
    assert decode(Event, wire_event(event)) == event


def test_oversized_evidence_is_left_out_and_pointed_at() -> None:
    hosts = [f"host-{i:05d}" for i in range(10_000)]
    event = Event(
        seq=9,
        time=2.0,
        kind="deployment.rollback",
        message="error rate",
        deployment="d1",
        evidence={"hosts": hosts},
    )
    payload = wire_event(event)
    assert len(payload) <= MAX_PAYLOAD
    decoded = decode(Event, payload)
    assert (decoded.seq, decoded.kind, decoded.message) == (9, "deployment.rollback", "error rate")
    assert decoded.evidence["truncated"] is True
    assert decoded.evidence["see"] == "/api/v1/deployments/d1/events"
