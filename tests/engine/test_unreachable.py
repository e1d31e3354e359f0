"""Hosts that die, are cut off, come back, or report late, during and after rollouts.

A 10-host production fleet in 3 zones with the guide's defaults (1 h first bake, 15 min
steps, 1 h post-promotion watch, 300 s ack timeout and grace), through the engine's
simulator, over several seeds, with probe traffic only (5 requests per application sample)
and with real traffic (20 requests/s per host: 200 per 10 s sample).
"""

from __future__ import annotations

from functools import partial

import pytest

from coordinator.engine import BrokerConnectivity, EngineAction, Record, SendCommand
from shared.evidence import Converging, Held, RollbackEnded, StepAdvanced, decode_evidence
from shared.kinds import EventKind

from .sim import Profile, Sim, make_config

T0 = 120.0
DELAY = 2.0
GOOD = Profile(error_rate=0.001)
BAD = Profile(error_rate=0.2)
SEEDS = range(4)
TRAFFIC = {"probes": 5, "real": 200}
FIRST_BAKE_END = T0 + DELAY + 3600.0
LIMIT = 6 * 3600.0


def fleet(seed: int, requests: int, extra: str = "", **profiles: Profile) -> Sim:
    sim = Sim(
        hosts=10,
        zones=3,
        seed=seed,
        requests=requests,
        config=make_config(extra),
        profiles={"2.0.0": GOOD, **profiles},
    )
    sim.run_until(T0)
    reply = sim.start("d1", "2.0.0")
    assert reply.accepted, reply.reasons

    def on_call(now: float, action: EngineAction) -> None:
        # Probe traffic on one or two hosts may not settle a 15 min step: the person on
        # call promotes an inconclusive hold (their call; a failed rule still rolls back).
        if (
            isinstance(action, Record)
            and action.kind is EventKind.DEPLOYMENT_HOLD
            and action.evidence.get("reason") == "inconclusive"
        ):
            sim.at(now + 60.0, lambda: sim.operator("promote", "d1", reason="on call"))

    sim.observers.append(on_call)
    return sim


def plan(sim: Sim) -> list[list[str]]:
    dep = sim.engine.deployment("d1")
    assert dep is not None
    return [[o.host for o in step.orders] for step in dep.steps]


def converging(sim: Sim, host: str) -> list[Converging]:
    found = []
    for record in sim.records(EventKind.HOST_CONVERGING):
        if record.host == host:
            evidence = decode_evidence(record.kind, record.evidence)
            assert isinstance(evidence, Converging)
            found.append(evidence)
    return found


def sent_to(sim: Sim, host: str, after: float = 0.0) -> list[SendCommand]:
    return [c for c in sim.sent if c.host == host and c.issued >= after]


@pytest.mark.parametrize("traffic", sorted(TRAFFIC))
@pytest.mark.parametrize("seed", SEEDS)
def test_a_baseline_host_dying_mid_bake_does_not_fail_a_good_release(
    seed: int, traffic: str
) -> None:
    sim = fleet(seed, TRAFFIC[traffic])
    steps = plan(sim)
    # A host of the 50 % step: a baseline host during the 10 % bake.
    dead = steps[2][0]
    sim.at(T0 + DELAY + 1800.0, lambda: sim.kill(dead))
    assert sim.finish("d1", LIMIT) == "completed"

    # The step that would have commanded it went on without it, and said so.
    promoted = [
        decode_evidence(r.kind, r.evidence) for r in sim.records(EventKind.DEPLOYMENT_NEXT_STEP)
    ]
    assert all(isinstance(p, StepAdvanced) for p in promoted)
    skipped = [p for p in promoted if isinstance(p, StepAdvanced) and p.unreachable]
    assert len(skipped) == 1 and skipped[0].unreachable == [dead]
    assert dead not in skipped[0].hosts
    assert not sent_to(sim, dead), "an unreachable host is never commanded"
    assert not sim.records(EventKind.DEPLOYMENT_FAIL)
    done = sim.first(EventKind.DEPLOYMENT_VERIFIED)
    assert f"{dead} unreachable, will be brought to 2.0.0" in done.message
    assert done.evidence["unreachable"] == [dead]
    dep = sim.engine.deployment("d1")
    assert dep is not None and dep.unreachable == [dead]
    assert {h: v for h, v in sim.versions().items() if h != dead} == {
        h: "2.0.0" for h in sim.hosts if h != dead
    }

    # The environment is free, and the host is converged when it returns.
    back = sim.now + 600.0
    sim.at(back, lambda: sim.revive(dead))
    sim.run_until(back + 60.0)
    [converge] = converging(sim, dead)
    assert converge.because == "completed" and converge.version == "2.0.0"
    assert sim.hosts[dead].version == "2.0.0"
    assert sim.start("d2", "3.0.0").accepted


@pytest.mark.parametrize("traffic", sorted(TRAFFIC))
@pytest.mark.parametrize("seed", SEEDS)
def test_a_host_dying_before_it_answers_its_step_is_not_waited_for(seed: int, traffic: str) -> None:
    sim = fleet(seed, TRAFFIC[traffic])
    steps = plan(sim)
    dead = steps[1][0]
    # The 25 % step's commands go out at the end of the first bake; the host dies
    # before its command reaches it (agents answer after 2 s).
    sim.at(FIRST_BAKE_END + 0.5, lambda: sim.kill(dead))
    assert sim.finish("d1", LIMIT) == "completed"
    acked = [r for r in sim.records(EventKind.DEPLOYMENT_ACKED) if r.evidence["unreachable"]]
    assert len(acked) == 1 and acked[0].evidence["unreachable"] == [dead]
    # Dropped once its Will has said offline for the offline grace (a broker restart's
    # Wills are not deaths), then confirmed: no ack timeout to sit out.
    policy = sim.config.environments.production
    died = FIRST_BAKE_END + 0.5
    housekeeping = sim.config.engine.housekeeping
    assert died + policy.offline_after <= acked[0].time
    assert acked[0].time <= died + policy.offline_after + housekeeping
    assert acked[0].time < died + policy.ack_timeout
    assert not sim.records(EventKind.DEPLOYMENT_FAIL)
    assert sim.hosts[dead].version == "1.0.0"
    sim.revive(dead)
    sim.run_until(sim.now + 30.0)
    assert sim.hosts[dead].version == "2.0.0"


@pytest.mark.parametrize("traffic", sorted(TRAFFIC))
@pytest.mark.parametrize("seed", SEEDS)
def test_a_bad_release_rolls_back_without_waiting_for_a_dead_host(seed: int, traffic: str) -> None:
    """A canary host dies, then the release fails on the others: the rollback finishes
    on the reachable hosts, lists the dead one, and frees production."""
    sim = fleet(seed, TRAFFIC[traffic])
    steps = plan(sim)
    # Promote past the first bake with a good release, then break it at 25 %.
    dead = steps[1][0]
    sim.at(FIRST_BAKE_END + 60.0, lambda: sim.kill(dead))
    sim.at(FIRST_BAKE_END + 120.0, lambda: sim.profiles.__setitem__("2.0.0", BAD))
    assert sim.finish("d1", LIMIT) == "rolled_back"
    done = sim.first(EventKind.DEPLOYMENT_ROLLBACK_DONE)
    ended = decode_evidence(done.kind, done.evidence)
    assert isinstance(ended, RollbackEnded)
    assert ended.unreachable == [dead]
    assert f"9 hosts on 1.0.0; healthy; {dead} unreachable" in done.message
    assert done.time < sim.first(EventKind.DEPLOYMENT_FAIL).time + 30.0
    assert all(v == "1.0.0" for h, v in sim.versions().items() if h != dead)
    assert sim.hosts[dead].version == "2.0.0"
    assert sim.start("d2", "2.0.1").accepted is False  # the fleet is mixed until it returns
    sim.revive(dead)
    sim.run_until(sim.now + 30.0)
    assert sim.hosts[dead].version == "1.0.0"
    [converge] = converging(sim, dead)
    assert converge.because == "rolled_back" and converge.action == "rollback"
    sim.run_until(sim.now + 900.0)  # the bad release's alerts resolve
    assert sim.start("d2", "2.0.1").accepted


@pytest.mark.parametrize("seed", SEEDS)
def test_a_partitioned_canary_gets_its_grace_from_its_last_sample(seed: int) -> None:
    sim = fleet(seed, TRAFFIC["real"])
    canary = plan(sim)[0][0]
    cut = T0 + DELAY + 1200.0
    sim.at(cut, lambda: sim.partition(canary, will_after=90.0))
    assert sim.finish("d1", LIMIT) == "rolled_back"
    grace = sim.config.environments.production.missing_data_grace
    last_sample = sim.hosts[canary].last_sent
    assert last_sample is not None and last_sample <= cut
    fail = sim.first(EventKind.DEPLOYMENT_FAIL)
    # Not the Will's time (cut + 90) plus the grace: the last sample's.
    assert fail.time == pytest.approx(last_sample + grace)
    assert fail.evidence["missing"][canary]["since"] == pytest.approx(last_sample)


@pytest.mark.parametrize("seed", SEEDS)
def test_more_hosts_away_than_the_policy_tolerates_holds_for_an_operator(seed: int) -> None:
    sim = fleet(seed, TRAFFIC["probes"])
    steps = plan(sim)
    dead = [steps[2][0], steps[3][0]]
    for host in dead:
        sim.at(T0 + DELAY + 1800.0, partial(sim.kill, host))
    sim.run_until(FIRST_BAKE_END + 30.0)
    assert sim.phase("d1") == "held"
    hold = sim.first(EventKind.DEPLOYMENT_HOLD)
    held = decode_evidence(hold.kind, hold.evidence)
    assert isinstance(held, Held) and held.reason == "unreachable"
    assert held.unreachable == sorted(dead)
    assert "2 of 10 target hosts unreachable (20%, the policy tolerates 10%)" in hold.message
    assert not sim.records(EventKind.DEPLOYMENT_FAIL), "never a silent rollback"
    # One returns: within the tolerated share again, the deployment goes on by itself.
    sim.revive(dead[0])
    sim.run_until(sim.now + 30.0)
    assert sim.records(EventKind.DEPLOYMENT_CLEARED)
    assert sim.finish("d1", LIMIT) == "completed"
    assert sim.hosts[dead[0]].version == "2.0.0"
    dep = sim.engine.deployment("d1")
    assert dep is not None and dep.unreachable == [dead[1]]


def test_an_operator_resume_goes_on_without_the_hosts_away() -> None:
    sim = fleet(1, TRAFFIC["probes"])
    steps = plan(sim)
    dead = [steps[2][0], steps[3][0]]
    for host in dead:
        sim.at(T0 + DELAY + 1800.0, partial(sim.kill, host))
    sim.run_until(FIRST_BAKE_END + 30.0)
    assert sim.phase("d1") == "held"
    reply = sim.operator("resume", "d1", reason="hosts are being replaced")
    assert reply.accepted and reply.changed
    assert sim.finish("d1", LIMIT) == "completed"
    dep = sim.engine.deployment("d1")
    assert dep is not None and dep.unreachable == sorted(dead)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_host_returning_mid_rollout_is_brought_to_its_target(seed: int) -> None:
    """Back while the deployment runs: to the new version once its step has gone out
    (it stays unjudged: the deployment could not reach it in time), and exactly one
    command however often it reconnects."""
    sim = fleet(seed, TRAFFIC["probes"])
    steps = plan(sim)
    dead = steps[1][0]
    sim.at(T0 + DELAY + 600.0, lambda: sim.kill(dead))
    back = FIRST_BAKE_END + 300.0
    sim.at(back, lambda: sim.revive(dead))
    sim.run_until(back + 60.0)
    [converge] = converging(sim, dead)
    assert converge.because == "deployment" and converge.version == "2.0.0"
    assert sim.hosts[dead].version == "2.0.0"
    # Reconnecting again on the right version: nothing more to send.
    sim.kill(dead)
    sim.revive(dead)
    assert len(converging(sim, dead)) == 1
    assert sim.finish("d1", LIMIT) == "completed"


def test_convergence_after_a_coordinator_restart_is_not_sent_twice() -> None:
    """The host returns, its convergence command goes out, the coordinator dies before
    the agent answers: the restarted engine re-sends that command by id and, replaying
    the retained statuses, sends no second one."""
    sim = fleet(2, TRAFFIC["probes"])
    dead = plan(sim)[2][0]
    sim.at(T0 + DELAY + 1800.0, lambda: sim.kill(dead))
    assert sim.finish("d1", LIMIT) == "completed"
    sim.command_delay = 20.0  # the agent is slow to answer this time
    sim.revive(dead)
    [first] = converging(sim, dead)
    sim.run_until(sim.now + 1.0)
    sim.crash(downtime=5.0)
    sim.run_until(sim.now + 60.0)
    assert sim.restored_at
    resent = [a for a in sim.resent if isinstance(a, SendCommand)]
    assert [a.command_id for a in resent] == [first.command]
    assert len(converging(sim, dead)) == 1
    assert sim.hosts[dead].version == "2.0.0"
    assert [c.command_id for c in sent_to(sim, dead)] == [first.command]


# -- the offline grace does not hide hosts that are really gone (review findings) -------


@pytest.mark.parametrize("will_after", [30.0, 270.0, 400.0])
def test_a_host_cut_off_with_a_late_will_is_dropped_not_blamed(will_after: float) -> None:
    """Silent past the grace, then its Will: unreachable by either, never back to
    reachable for an offline grace; its command is dropped, the release completes."""
    sim = fleet(0, TRAFFIC["probes"])
    dead = plan(sim)[1][0]
    sim.at(FIRST_BAKE_END + 0.5, lambda: sim.partition(dead, will_after=will_after))
    assert sim.finish("d1", LIMIT) == "completed"
    assert not sim.records(EventKind.DEPLOYMENT_FAIL)


def held_for_two_dead_hosts() -> Sim:
    sim = fleet(0, TRAFFIC["probes"])
    steps = plan(sim)
    for host in (steps[2][0], steps[3][0]):
        sim.at(T0 + DELAY + 1800.0, partial(sim.kill, host))
    sim.run_until(FIRST_BAKE_END + 30.0)
    assert sim.phase("d1") == "held"
    return sim


def test_a_broker_blip_does_not_clear_a_hold_for_hosts_long_dead() -> None:
    sim = held_for_two_dead_hosts()
    sim.engine.handle(BrokerConnectivity(connected=False), sim.now + 1.0)
    actions = sim.engine.handle(BrokerConnectivity(connected=True), sim.now + 6.0)
    assert not [a for a in actions if isinstance(a, SendCommand)]
    assert sim.phase("d1") == "held"


def test_a_coordinator_restart_does_not_clear_a_hold_for_hosts_long_dead() -> None:
    sim = held_for_two_dead_hosts()
    seen = len(sim.records())
    sim.crash(5.0)
    sim.run_until(sim.now + 20.0)
    assert sim.phase("d1") == "held"
    assert not [r for r in sim.records()[seen:] if r.kind is EventKind.DEPLOYMENT_CLEARED]
