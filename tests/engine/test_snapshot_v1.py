"""Snapshots and deployment rows written before the deployment's phase data was grouped
(layout 1: loose ``bake_elapsed``, ``hold_reason``, ``paused_from``, ``rollback_*``
fields) still restore: a stored snapshot is a database row in production. The fixtures
were written by the engine of commit 51478f3, driven by tests/engine/sim.py into a bake,
a rollback, and a pause taken during a fleet-wide hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from coordinator.engine import (
    Deployment,
    Engine,
    OperatorRequest,
    Phase,
    Record,
    SendCommand,
    Tick,
    decode_snapshot,
    encode_snapshot,
)

from .sim import make_config

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ("mid_bake", "mid_rollback", "paused_from_held")
LAYOUT_1 = {
    "bake_elapsed",
    "bake_since",
    "bake_length",
    "extended",
    "hold_reason",
    "paused_from",
    "rollback_version",
    "rollback_reason",
    "rollback_started",
    "rollback_hosts",
}


def stored(name: str) -> bytes:
    return (FIXTURES / f"snapshot_v1_{name}.json").read_bytes()


def raw(name: str) -> dict[str, Any]:
    deployment: dict[str, Any] = msgspec.json.decode(stored(name))["deployments"][0]
    return deployment


@pytest.mark.parametrize("name", NAMES)
def test_a_layout_1_deployment_is_read_into_its_phase_groups(name: str) -> None:
    old = raw(name)
    dep = decode_snapshot(stored(name)).deployments[0]
    assert dep.phase is Phase(old["phase"])
    assert (dep.bake.elapsed, dep.bake.since, dep.bake.length, dep.bake.extended) == (
        old["bake_elapsed"],
        old["bake_since"],
        old["bake_length"],
        old["extended"],
    )
    assert dep.hold_reason == old["hold_reason"]
    assert dep.paused_from == (None if old["paused_from"] is None else Phase(old["paused_from"]))
    if old["rollback_started"] is None:
        assert dep.rollback is None
    else:
        assert dep.rollback is not None
        assert (dep.rollback.version, dep.rollback.reason, dep.rollback.started) == (
            old["rollback_version"],
            old["rollback_reason"],
            old["rollback_started"],
        )
        assert dep.rollback.hosts == old["rollback_hosts"]
    # Written again, it is layout 2 only, and reads back the same.
    again = msgspec.json.decode(encode_snapshot(decode_snapshot(stored(name))))
    assert not LAYOUT_1 & set(again["deployments"][0])
    assert decode_snapshot(encode_snapshot(decode_snapshot(stored(name)))).deployments[0] == dep


def test_a_bake_restored_from_layout_1_keeps_its_time() -> None:
    snapshot = decode_snapshot(stored("mid_bake"))
    engine = Engine.restore(make_config(), snapshot)
    actions = engine.handle(Tick(), snapshot.time)
    resumed = next(a for a in actions if isinstance(a, Record))
    assert resumed.kind == "deployment.resumed_after_restart"
    assert resumed.evidence == {"bake_elapsed": 878.0, "bake_length": 3600.0}
    assert engine.phase("d1") is Phase.BAKING
    assert engine.next_wakeup() == snapshot.time + engine.config.engine.housekeeping


def test_a_rollback_restored_from_layout_1_resends_its_commands() -> None:
    snapshot = decode_snapshot(stored("mid_rollback"))
    engine = Engine.restore(make_config(), snapshot)
    resend = [a for a in engine.outstanding() if isinstance(a, SendCommand)]
    assert resend and {c.action for c in resend} == {"rollback"}
    assert {c.host for c in resend} == set(raw("mid_rollback")["rollback_hosts"])
    dep = engine.deployment("d2")
    assert dep is not None and dep.rollback is not None and dep.rollback.version == "1.0.0"


def test_a_pause_during_a_hold_restored_from_layout_1_resumes_into_the_hold() -> None:
    snapshot = decode_snapshot(stored("paused_from_held"))
    engine = Engine.restore(make_config(), snapshot)
    resume = OperatorRequest(deployment_id="d3", action="resume", actor="alice")
    engine.handle(resume, snapshot.time + 1.0)
    dep = engine.deployment("d3")
    assert dep is not None
    assert (dep.phase, dep.hold_reason) == (Phase.HELD, "fleet_incident")
    engine.handle(resume, snapshot.time + 2.0)
    assert engine.phase("d3") is Phase.BAKING


def test_a_layout_1_deployment_row_in_msgpack_is_read_too() -> None:
    data = (FIXTURES / "deployment_v1_mid_rollback.msgpack").read_bytes()
    dep = msgspec.msgpack.decode(data, type=Deployment)
    assert dep.phase is Phase.ROLLING_BACK
    assert dep.rollback is not None and dep.rollback.version == "1.0.0"
    assert dep.copy() == dep
