"""Deployments, events and hosts as the API serves them, produced by the real engine.

The fleet simulator (tests/engine/sim.py) runs a canary of a bad version, which the
engine rolls back, and a good one, which it promotes to every host. The shell's series
recorder adds its ``analysis.window`` events from the same samples, the engine's
Record actions become the event log in the order they happened, and the API's own
conversions (coordinator/daemon/views.py) turn the deployment into its view. The
report and the follower are then fed exactly what a coordinator would have served.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import msgspec

from coordinator.daemon.series import SeriesRecorder
from coordinator.daemon.views import deployment_view
from coordinator.engine import EngineAction, EngineEvent, MetricsReceived, Record
from shared.messages import Sample
from shared.phases import Phase
from shared.views import DeploymentView, EventView, HostView
from tests.engine.sim import Profile, Sim, SimHost

SCRIPT = '<script>alert("x")</script>'
HOSTILE = f"{SCRIPT} | *bold* [link](javascript:alert(1)) `code` & <b>"
BAD, GOOD, STABLE = "2.1.0", "2.0.0", "1.0.0"
HOSTS = 10
# The shell's window length with the simulator's housekeeping (engine.housekeeping * 4).
WINDOW = 20.0
# Every host has reported its checks by then, so a deployment may start.
START = 120.0


@dataclass(frozen=True)
class Run:
    """One simulated deployment as the API would serve it at ``now``."""

    deployment: DeploymentView
    events: list[EventView]
    hosts: list[HostView]
    now: float


class _RecordingSim(Sim):
    """The simulator with the shell's series recorder beside the engine."""

    def __init__(self, **kwargs: object) -> None:
        self.series = SeriesRecorder(WINDOW)
        self.windows: list[tuple[float, Record]] = []
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _gauge_samples(self, host: SimHost) -> list[Sample]:
        """The simulator's CPU and memory, and a disk filling a little per host (not
        drawn from the simulator's random stream, so its runs stay as they were)."""
        index = int(host.name.rsplit("-", 1)[-1])
        disk = Sample(
            check="disk", time=self.now, ok=True, values={"percent": 40.0 + 2.5 * (index % 4)}
        )
        return [*super()._gauge_samples(host), disk]

    def feed(self, event: EngineEvent) -> list[EngineAction]:
        if isinstance(event, MetricsReceived):
            self.series.observe(event.batch)
        actions = super().feed(event)
        if self.series.due(self.now):
            versions: dict[str, str | None] = {n: h.version for n, h in self.hosts.items()}
            records = self.series.flush(self.now, self.engine.deployments(), versions)
            self.windows.extend((self.now, r) for r in records)
        return actions


def _run(sim: _RecordingSim, deployment_id: str) -> Run:
    recorded = [(t, a) for t, a in sim.actions if isinstance(a, Record)] + sim.windows
    recorded.sort(key=lambda pair: pair[0])  # stable: same-time records keep their order
    events = [
        EventView(
            seq=seq,
            time=record.time,
            kind=record.kind,
            message=record.message,
            deployment=record.deployment,
            host=record.host,
            actor=record.actor,
            # Through JSON, as the store keeps it and the API serves it.
            evidence=msgspec.json.decode(msgspec.json.encode(record.evidence)),
        )
        for seq, (_, record) in enumerate(recorded, start=1)
        if record.deployment in (deployment_id, None)
    ]
    dep = sim.engine.deployment(deployment_id)
    assert dep is not None
    hosts = [
        HostView(
            host=h.name,
            online=True,
            session=h.session,
            environment=h.environment,
            version=h.version,
            slot=h.slot,
            labels={"zone": h.zone},
            agent_version="sim",
            last_seen=sim.now,
        )
        for h in sim.hosts.values()
    ]
    return Run(deployment=deployment_view(dep, sim.now), events=events, hosts=hosts, now=sim.now)


@functools.cache
def bad_canary() -> Run:
    """2.1.0 fails 5 % of requests on its canary hosts: rolled back automatically."""
    sim = _RecordingSim(hosts=HOSTS, profiles={BAD: Profile(error_rate=0.05)})
    sim.run_until(START)
    assert sim.start("d1", BAD, actor="alice", reason="CHG-1").accepted
    assert sim.finish("d1", 2 * 3600) == "rolled_back"
    # A request after the fact, refused: the timeline shows refusals too.
    assert not sim.operator("pause", "d1", actor="bob", reason="too late").accepted
    return _run(sim, "d1")


@functools.cache
def cpu_hot() -> Run:
    """2.1.0 runs its canary host's CPU at 95 %: rolled back on the cpu rule."""
    sim = _RecordingSim(hosts=HOSTS, profiles={BAD: Profile(cpu=95.0)})
    sim.run_until(START)
    assert sim.start("d3", BAD, actor="alice", reason="CHG-3").accepted
    assert sim.finish("d3", 2 * 3600) == "rolled_back"
    return _run(sim, "d3")


@functools.cache
def short_rollback() -> Run:
    """A deployment over in under a minute: paused, resumed and rolled back by hand a
    fraction of a second apart, so that its markers crowd one spot of the chart."""
    sim = _RecordingSim(hosts=HOSTS)
    sim.run_until(START)
    assert sim.start("d4", GOOD, actor="alice", reason="CHG-4").accepted
    sim.run_until(START + 30)
    for action, at in (("pause", 31.0), ("resume", 31.2), ("pause", 31.4), ("resume", 31.6)):
        sim.run_until(START + at)
        assert sim.operator(action, "d4", actor="bob", reason=action).accepted, action
    sim.run_until(START + 31.8)
    assert sim.operator("rollback", "d4", actor="bob", reason="looks wrong").accepted
    assert sim.finish("d4", START + 120) == "rolled_back"
    return _run(sim, "d4")


@functools.cache
def good_rollout() -> Run:
    """2.0.0 as healthy as 1.0.0: promoted step by step to every host."""
    sim = _RecordingSim(hosts=HOSTS, profiles={GOOD: Profile(error_rate=0.002)})
    sim.run_until(START)
    assert sim.start("d2", GOOD, actor="alice").accepted
    assert sim.finish("d2", 8 * 3600) == "completed"
    return _run(sim, "d2")


def in_progress(run: Run, until: float) -> Run:
    """The same deployment as it was served at ``until``: only the events until then,
    still baking its first step."""
    events = [e for e in run.events if e.time <= until]
    replace = msgspec.structs.replace
    deployment = replace(
        run.deployment,
        phase=Phase.BAKING,
        step=0,
        finished=None,
        rollback_reason=None,
        summary="",
    )
    return Run(deployment=deployment, events=events, hosts=run.hosts, now=until)


def hostile(run: Run) -> Run:
    """Markup and table-breaking characters in every free text: who, why, messages, the
    command details and the version strings (the API refuses such versions, the report
    escapes them anyway)."""
    replace = msgspec.structs.replace
    d = run.deployment
    deployment = replace(
        d,
        actor=HOSTILE,
        reason=HOSTILE,
        version=f"{d.version}{SCRIPT}",
        from_version=f"{d.from_version}{SCRIPT}",
        rollback_reason=f"{d.rollback_reason} {HOSTILE}",
        summary=f"{d.summary} {HOSTILE}",
        commands={k: replace(c, detail=f"{c.detail} {HOSTILE}") for k, c in d.commands.items()},
    )
    events = [
        replace(
            e,
            message=f"{e.message} {HOSTILE}",
            actor=HOSTILE if e.actor else None,
            evidence={**e.evidence, "reason": HOSTILE} if "reason" in e.evidence else e.evidence,
        )
        for e in run.events
    ]
    return Run(deployment=deployment, events=events, hosts=run.hosts, now=run.now)
