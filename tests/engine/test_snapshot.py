"""Persistence: snapshot, SIGKILL, restore. The remaining bake time is kept, no command
is issued twice, and nothing is promoted on data the restarted engine has not seen."""

from __future__ import annotations

import msgspec
import pytest

from coordinator.engine import (
    DeploymentChanged,
    Engine,
    EngineSnapshot,
    OperatorRequest,
    SendCommand,
    SnapshotError,
    Tick,
    decode_snapshot,
    encode_snapshot,
)
from coordinator.engine.state import decode_saved, encode_deployment, encode_saved, joined

from .sim import Profile, Sim, make_config

T0 = 120.0
DELAY = 2.0
GOOD = Profile(error_rate=0.002)


def started(sim: Sim) -> None:
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0").accepted


def test_restore_mid_bake_keeps_the_remaining_bake_time_and_reissues_nothing() -> None:
    first_bake = make_config().environments.production.canary.first_bake
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)
    crash_at, downtime = 1800.0, 600.0
    sim.at(crash_at, lambda: sim.crash(downtime))
    sim.run_until(crash_at + downtime + 1)

    assert sim.restored_at == [crash_at + downtime]
    ids_before = {c.command_id for c in sim.sent}
    assert sim.resent == []  # every command had been answered
    # The snapshot holds the engine's time of its last event before the kill.
    assert sim.persisted is not None
    baked = sim.persisted.time - (T0 + DELAY)
    assert crash_at - 10 < sim.persisted.time <= crash_at
    resumed = sim.first("deployment.resumed_after_restart")
    assert resumed.evidence["bake_elapsed"] == pytest.approx(baked)

    assert sim.finish("d1", 12 * 3600) == "completed"
    remaining = first_bake - baked
    promoted = sim.first("deployment.next_step")
    assert promoted.time == pytest.approx(crash_at + downtime + remaining)
    # Judged only on what the restarted engine saw.
    passed = sim.first("deployment.bake_passed")
    error_rate = next(r for r in passed.evidence["rules"] if r["rule"] == "error_rate")
    assert error_rate["window_start"] == crash_at + downtime
    # No command id was sent twice; the later steps got new ids, continuing the sequence.
    later = [c.command_id for c in sim.sent if c.command_id not in ids_before]
    assert len(later) == len(set(later)) == 18
    assert later[0] == "d1-c0003"
    assert sim.repeats == []
    for host in sim.hosts.values():
        assert len(host.history) == len({h[0] for h in host.history}) == 1
    assert set(sim.versions().values()) == {"2.0.0"}


def test_restore_with_commands_in_flight_resends_the_same_ids() -> None:
    sim = Sim(hosts=10, profiles={"2.0.0": GOOD}, command_delay=30.0)
    started(sim)
    sim.at(T0 + 5, lambda: sim.crash(60.0))
    sim.run_until(T0 + 5 + 60 + 1)
    in_flight = [c.command_id for c in sim.sent]
    assert in_flight == ["d1-c0001"]
    # The shell re-publishes exactly what the engine still waits for.
    assert [a.command_id for a in sim.resent if isinstance(a, SendCommand)] == in_flight
    sim.run_until(T0 + 200)
    assert sim.phase("d1") == "baking"
    # The agent had run it before the crash and answered the re-publish from memory.
    assert sim.repeats == in_flight
    host = sim.hosts[sim.sent[0].host]
    assert [h[0] for h in host.history] == in_flight


def test_a_restart_never_promotes_on_data_it_has_not_seen() -> None:
    canary = make_config().environments.production.canary
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)
    crash_at = T0 + DELAY + canary.first_bake - 10  # 10 s of bake left
    sim.at(crash_at, lambda: sim.crash(100.0))
    restart = crash_at + 100
    sim.run_until(restart + 20)
    assert sim.persisted is not None
    left = canary.first_bake - (sim.persisted.time - (T0 + DELAY))
    assert 10 <= left < 20
    # The bake ends on time, but 10-odd seconds of fresh data prove nothing: extended.
    assert not sim.records("deployment.next_step")
    extended = sim.first("deployment.extend")
    assert extended.time == pytest.approx(restart + left)
    coverage = next(r for r in extended.evidence["rules"] if r["rule"] == "error_rate")
    assert coverage["window_start"] == restart
    assert sim.finish("d1", 12 * 3600) == "completed"
    assert sim.first("deployment.next_step").time > restart + 10


def test_snapshot_round_trips_through_json_exactly() -> None:
    sim = Sim(hosts=6, profiles={"2.0.0": GOOD})
    started(sim)
    sim.run_until(900.0)
    snapshot = sim.engine.snapshot()
    data = encode_snapshot(snapshot)
    decoded = decode_snapshot(data)
    assert decoded == snapshot
    restored = Engine.restore(sim.config, decoded)
    assert restored.snapshot() == snapshot
    assert msgspec.json.decode(data)["format"] == 1
    dep = decoded.deployments[0]
    assert dep.phase.value == "baking"
    assert dep.bake.elapsed == pytest.approx(900.0 - (T0 + DELAY))
    assert {c.state for c in dep.commands.values()} == {"succeeded"}


def test_the_saved_state_is_the_snapshot_less_its_rows() -> None:
    """What the pipeline stores on every step (built without copying deployments) joins
    with the deployments' rows into the very snapshot, and restores the same engine."""
    sim = Sim(hosts=6, profiles={"2.0.0": GOOD})
    started(sim)
    sim.run_until(900.0)
    assert sim.start("d2", "2.1.0").accepted is False  # queued behind d1: refused
    snapshot = sim.engine.snapshot()
    saved = decode_saved(encode_saved(sim.engine.saved()))
    assert saved.deployments == [d.id for d in snapshot.deployments]
    rows = {d.id: d for d in snapshot.deployments}
    joined_back = joined(saved, rows)
    assert joined_back == msgspec.structs.replace(snapshot, hosts=[])
    restored = Engine.restore(sim.config, joined_back)
    assert restored.saved() == sim.engine.saved()


def test_a_deployment_changed_carries_the_checkpoint_as_stored() -> None:
    """The body the store keeps is the checkpoint encoded (the bake clock folded to the
    step's time), built without copying the deployment; the live one is untouched."""
    sim = Sim(hosts=6, profiles={"2.0.0": GOOD})
    started(sim)
    sim.run_until(900.0)
    live = sim.engine._state.deployments["d1"]
    assert live.phase.value == "baking" and live.bake.since is not None
    before = encode_deployment(live)
    changed = DeploymentChanged.of(live, 950.0)
    assert changed.body == encode_deployment(live.checkpoint(950.0))
    assert changed.deployment == live.checkpoint(950.0)
    assert changed.deployment.bake.elapsed == pytest.approx(live.bake.at(950.0))
    assert (changed.deployment_id, changed.version, changed.phase) == ("d1", "2.0.0", live.phase)
    assert encode_deployment(live) == before


def test_downtime_is_not_bake_time() -> None:
    sim = Sim(hosts=6, profiles={"2.0.0": GOOD})
    started(sim)
    sim.run_until(1000.0)
    restored = Engine.restore(sim.config, sim.engine.snapshot())
    restored.handle(Tick(), 5000.0)  # down for over an hour
    dep = restored.deployment("d1")
    assert dep is not None
    assert dep.bake.elapsed == pytest.approx(1000.0 - (T0 + DELAY))
    restored.handle(Tick(), 5100.0)
    dep = restored.deployment("d1")
    assert dep is not None
    assert dep.bake.elapsed == pytest.approx(1100.0 - (T0 + DELAY))


def test_deployment_changed_is_emitted_before_the_commands_it_records() -> None:
    sim = Sim(hosts=6, profiles={"2.0.0": GOOD})
    sim.run_until(T0)
    request = OperatorRequest(deployment_id="d9", action="start", actor="alice", version="2.0.0")
    actions = sim.engine.handle(request, T0)
    kinds = [type(a).__name__ for a in actions]
    assert kinds[0] == "DeploymentChanged"
    assert "SendCommand" in kinds
    changed = actions[0]
    assert changed.deployment.commands.keys() == {  # type: ignore[union-attr]
        a.command_id for a in actions if isinstance(a, SendCommand)
    }


def test_a_foreign_snapshot_is_refused() -> None:
    config = make_config()
    with pytest.raises(SnapshotError, match="format 2"):
        Engine.restore(config, EngineSnapshot(format=2, time=0.0))
    with pytest.raises(SnapshotError, match="not an engine snapshot"):
        decode_snapshot(b'{"time": "yesterday"}')


def test_an_operator_cannot_promote_on_data_the_restarted_engine_has_not_seen() -> None:
    sim = Sim(hosts=10, profiles={"2.0.0": GOOD})
    started(sim)
    dep = sim.engine.deployment("d1")
    assert dep is not None
    canary = sim.hosts[dep.steps[0].orders[0].host]
    # Restart just after one of the canary's samples (lost while down): the next one is
    # ten seconds away.
    restart = canary.offset + 10 * int((1900.0 - canary.offset) // 10) + 0.1
    sim.at(1800.0, lambda: sim.crash(restart - 1800.0))
    sim.run_until(restart + 0.5)
    assert sim.restored_at == [pytest.approx(restart)]
    refused = sim.operator("promote", "d1", reason="it was fine before the crash")
    assert not refused.accepted
    assert any(r.startswith("coverage: no samples yet") for r in refused.reasons)
    sim.run_until(restart + 15.0)
    assert sim.operator("promote", "d1", reason="fresh data now").changed
