"""What the daemon's pipeline stores for the real engine's steps, on both backends: the
deployment row (the engine's Deployment, once), the saved state naming it, the events,
and the alerts the engine fired and resolved, each with its evidence."""

from __future__ import annotations

from coordinator.daemon.pipeline import Commit, persist
from coordinator.engine import (
    DeploymentChanged,
    Engine,
    EngineAction,
    EngineEvent,
    HostStatusReceived,
    MetricsReceived,
)
from coordinator.engine.state import decode_deployment, decode_saved, encode_saved
from coordinator.store import Store
from shared.messages import HostStatus, MetricBatch, Sample
from tests.engine.sim import Profile, Sim, make_config


def _step(engine: Engine, actions: list[EngineAction], now: float) -> Commit:
    """As the daemon builds one (commands are signed there; none in these steps)."""
    changed = any(isinstance(a, DeploymentChanged) for a in actions)
    snapshot = encode_saved(engine.saved()) if changed else None
    return Commit(actions=actions, snapshot=snapshot, time=now, fencing=1)


def _cpu(engine: Engine, seq: int, now: float, percent: float) -> list[EngineAction]:
    sample = Sample(check="cpu", time=now, ok=True, values={"percent": percent})
    batch = MetricBatch(host="web-1", session=1, seq=seq, samples=[sample])
    return engine.handle(MetricsReceived(batch=batch), now)


async def test_alerts_fired_and_resolved_by_the_engine_are_stored(store: Store) -> None:
    engine = Engine(make_config())
    status = HostStatus(
        host="web-1", online=True, session=1, environment="production", version="1.0.0", time=0.0
    )
    engine.handle(HostStatusReceived(status=status), 0.0)
    readings = [85, 86, 87, 90, 70, 70, 70]
    for seq, percent in enumerate(readings, start=1):
        now = 60.0 * seq
        actions = _cpu(engine, seq, now, percent)
        if actions:
            await persist(store, _step(engine, actions, now))
        if seq == 3:
            [fired] = await store.alerts(active_only=True)
            assert (fired.key, fired.host, fired.rule, fired.started) == (
                "cpu:web-1",
                "web-1",
                "cpu",
                180.0,
            )
            assert fired.evidence["value"] == 87
            assert "cpu" in fired.message
    assert await store.alerts(active_only=True) == []
    [resolved] = await store.alerts()
    assert (resolved.started, resolved.resolved) == (180.0, 420.0)
    kinds = [e.kind for e in await store.events()]
    assert kinds == ["alert.fired", "alert.resolved"]


async def test_a_deployment_is_stored_once_and_named_by_the_saved_state(store: Store) -> None:
    sim = Sim(hosts=6, profiles={"2.0.0": Profile(error_rate=0.002)})
    steps: list[Commit] = []
    feed = sim.feed

    def record(event: EngineEvent) -> list[EngineAction]:
        actions = feed(event)
        if actions:
            steps.append(_step(sim.engine, actions, sim.now))
        return actions

    sim.feed = record  # type: ignore[method-assign]
    sim.run_until(120.0)
    assert sim.start("d1", "2.0.0").accepted
    sim.run_until(900.0)
    assert sim.phase("d1") == "baking"
    seqs = []
    for step in steps:
        seqs += [e.seq for e in await persist(store, step)]
    assert seqs == list(range(1, len(seqs) + 1))

    last = [a.deployment for s in steps for a in s.actions if isinstance(a, DeploymentChanged)][-1]
    row = await store.get_deployment("d1")
    assert row is not None
    assert decode_deployment(row.body) == last
    assert (row.version, row.state, row.fencing) == ("2.0.0", "baking", 1)
    saved = await store.load_engine_state()
    assert saved is not None
    assert decode_saved(saved.snapshot).deployments == ["d1"]
    # The saved state does not carry the deployment a second time.
    assert b'"2.0.0"' not in saved.snapshot
