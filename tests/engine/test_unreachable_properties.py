"""Property: hosts dying, being cut off and coming back, and the coordinator restarting,
at random times during random rollouts of a good release, never leave a deployment
hanging, production blocked, a host on the wrong version, or a good release rolled
back for a host's absence alone.

* every deployment reaches a terminal state within a bound derived from the policy
  (its bakes with the one extension, and per step an ack timeout, a grace, an operator's
  answer and the coordinator's downtime);
* the environment is then free: no deployment is active in it;
* once every host is back and a quiet period has passed, every host runs the version
  the deployment left (the new one if it completed, the stable one if rolled back);
* a good release is rolled back only by the missing-data rule (a judged canary host
  without data past the grace), never by a command to a host that could not answer.

The person on call answers holds after a minute: resumes a hold for unreachable hosts
(go on without them), promotes an inconclusive one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coordinator.engine import EngineAction, Record
from coordinator.engine.phases import ACTIVE, Phase
from shared.kinds import EventKind
from shared.phases import TERMINAL

from .sim import Profile, Sim, compressed_config

START = 60.0
HORIZON = 5000.0
QUIET = 900.0
OPERATOR_DELAY = 60.0
STABLE, NEW = "1.0.0", "2.0.0"


@dataclass(frozen=True)
class Fault:
    time: float
    kind: str
    host: int
    # A partition's Will delay; a crash's downtime.
    length: float


faults = st.builds(
    Fault,
    time=st.floats(min_value=START, max_value=HORIZON - 1500, allow_nan=False).map(
        lambda t: round(t, 1)
    ),
    kind=st.sampled_from(["kill", "revive", "partition", "crash"]),
    host=st.integers(min_value=0, max_value=9),
    length=st.floats(min_value=5.0, max_value=120.0).map(lambda t: round(t, 1)),
)


def apply(sim: Sim, fault: Fault) -> None:
    host = f"host-{fault.host % len(sim.hosts):02d}"
    alive = sim.hosts[host].alive
    if fault.kind == "kill" and alive:
        sim.kill(host)
    elif fault.kind == "partition" and alive:
        sim.partition(host, will_after=fault.length)
    elif fault.kind == "revive" and not alive:
        sim.revive(host)
    elif fault.kind == "crash" and sim.down_until is None:
        sim.crash(downtime=fault.length)


def bound(sim: Sim, environment: str, crashes: float) -> float:
    """How long a deployment may take at most under this policy."""
    dep = sim.engine.deployment("d1")
    assert dep is not None
    policy = sim.config.environments.get(environment)
    per_step = (
        policy.ack_timeout
        + policy.missing_data_grace
        + OPERATOR_DELAY
        + sim.config.engine.housekeeping
        + sim.command_delay
    )
    bakes = sum(s.bake for s in dep.steps) * (1 + policy.inconclusive_extension)
    rollback = policy.ack_timeout + policy.missing_data_grace + per_step
    return bakes + per_step * len(dep.steps) + rollback + crashes


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    environment=st.sampled_from(["production", "development"]),
    hosts=st.integers(min_value=4, max_value=10),
    requests=st.sampled_from([5, 200]),
    events=st.lists(faults, max_size=10),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_hosts_and_the_coordinator_coming_and_going_never_wedge_a_rollout(
    environment: str, hosts: int, requests: int, events: list[Fault], seed: int
) -> None:
    sim = Sim(
        hosts=hosts,
        environment=environment,
        config=compressed_config(),
        seed=seed,
        requests=requests,
        profiles={NEW: Profile(error_rate=0.001)},
    )
    finished: list[tuple[float, str]] = []

    def on_call(now: float, action: EngineAction) -> None:
        if not isinstance(action, Record):
            return
        if action.kind is EventKind.DEPLOYMENT_HOLD:
            answer = {"unreachable": "resume", "inconclusive": "promote"}.get(
                str(action.evidence.get("reason"))
            )
            if answer is not None:

                def reply(answer: str = answer) -> None:
                    if sim.down_until is not None:
                        # The coordinator is down: the person tries again a bit later.
                        sim.at(sim.now + OPERATOR_DELAY, partial(reply, answer))
                    elif sim.engine.phase("d1") is Phase.HELD:
                        sim.operator(answer, "d1", reason="on call")

                sim.at(now + OPERATOR_DELAY, reply)
        if action.kind in (EventKind.DEPLOYMENT_VERIFIED, EventKind.DEPLOYMENT_ROLLBACK_DONE):
            finished.append((now, action.kind))

    sim.observers.append(on_call)
    sim.run_until(START)
    reply = sim.start("d1", NEW, environment=environment)
    assert reply.accepted, reply.reasons
    for fault in events:
        sim.at(fault.time, partial(apply, sim, fault))
    crashes = sum(f.length + OPERATOR_DELAY for f in events if f.kind == "crash")
    limit = START + bound(sim, environment, crashes)
    sim.run_until(HORIZON)
    # Every host returns; after a quiet period the fleet has converged.
    for name, host in sim.hosts.items():
        if not host.alive:
            sim.revive(name)
    sim.run_until(HORIZON + QUIET)

    phase = sim.engine.phase("d1")
    assert phase is not None and phase in TERMINAL, f"d1 still {phase}"
    assert finished, "no verified end"
    assert finished[0][0] <= limit, f"finished at {finished[0][0]}, bound {limit}"
    assert not [d for d in sim.engine.deployments() if d.phase in ACTIVE]
    dep = sim.engine.deployment("d1")
    event(f"{phase.value}, {'some' if dep is not None and dep.unreachable else 'no'} host away")
    left = NEW if phase.value == "completed" else STABLE
    assert sim.versions() == {name: left for name in sim.hosts}
    for record in sim.records(EventKind.DEPLOYMENT_FAIL):
        assert record.evidence.get("rule") != "command", record.message
        assert record.evidence.get("failed") == ["missing_data"], record.message
    ids = [c.command_id for c in sim.sent]
    assert len(ids) == len(set(ids))
