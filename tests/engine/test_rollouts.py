"""Whole rollouts through the engine with a simulated fleet and a virtual clock.

Each scenario asserts the decision, the virtual time it was taken at, and its evidence.
Timeline of every scenario: hosts report from t=0, the deployment starts at T0=120 s,
agents answer commands after DELAY=2 s, so the first bake starts at T0 + DELAY.
"""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
import pytest

from coordinator.engine import Record
from shared.config import CoordinatorConfig
from shared.evidence import (
    CpuResult,
    ErrorRateResult,
    Judged,
    Judgement,
    LatencyResult,
    MissingDataResult,
    RuleResult,
    Verdict,
    decode_evidence,
)

from .sim import Profile, Sim, make_config

T0 = 120.0
DELAY = 2.0
GOOD = Profile(error_rate=0.002)
R = TypeVar("R", bound=RuleResult)


def started(sim: Sim, version: str = "2.0.0", **fields: object) -> None:
    sim.run_until(T0)
    reply = sim.start("d1", version, **fields)
    assert reply.accepted, reply.reasons


def rules(record: Record) -> list[RuleResult]:
    """The rule results of a record's evidence, decoded into their types by its kind."""
    evidence = decode_evidence(record.kind, record.evidence)
    assert isinstance(evidence, Judged | Judgement), f"no judgement in {record.kind}"
    return evidence.rules


def rule(record: Record, kind: type[R]) -> R:
    found = [r for r in rules(record) if isinstance(r, kind)]
    assert found, f"no {kind.__name__} in evidence of {record.kind}"
    return found[0]


def rule_named(record: Record, name: str) -> RuleResult:
    found = [r for r in rules(record) if r.rule == name]
    assert found, f"no {name} in evidence of {record.kind}"
    return found[0]


def test_good_canary_is_promoted_to_100_percent_after_exactly_the_configured_bakes() -> None:
    config = make_config()
    canary = config.environments.production.canary
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)
    assert sim.finish("d1", 6 * 3600) == "completed"

    # Each step: DELAY for the acks, then its bake; the last bake is the watch.
    bake_start = T0 + DELAY
    expected_promotions = []
    for bake in (canary.first_bake, canary.step_bake, canary.step_bake):
        expected_promotions.append(bake_start + bake)
        bake_start += bake + DELAY
    completed_at = bake_start + canary.post_watch

    promotions = sim.records("deployment.next_step")
    assert [r.time for r in promotions] == expected_promotions
    assert [r.evidence["percent"] for r in promotions] == [25.0, 50.0, 100.0]
    assert [len(r.evidence["hosts"]) for r in promotions] == [3, 5, 10]  # 2 -> 5 -> 10 -> 20
    passed = sim.records("deployment.bake_passed")
    assert [r.time for r in passed] == [*expected_promotions, completed_at]
    for record in passed:
        assert record.evidence["outcome"] == "pass"
        error_rate = rule(record, ErrorRateResult)
        assert error_rate.verdict is Verdict.PASS
        assert error_rate.numbers.upper < 0.01
        assert error_rate.window_end == record.time
        assert rule(record, LatencyResult).verdict is Verdict.PASS
        assert rule(record, MissingDataResult).verdict is Verdict.PASS
    # The first bake judged the 2 canary hosts against the 18 others, from its start.
    first = rule(passed[0], ErrorRateResult)
    assert first.window_start == T0 + DELAY
    assert len(first.hosts) == 2

    verified = sim.first("deployment.verified")
    assert verified.time == completed_at
    assert sim.phase("d1") == "completed"
    assert set(sim.versions().values()) == {"2.0.0"}
    assert not sim.records("deployment.fail")
    # One deploy per host, ids deterministic, unique and valid for the wire.
    ids = [c.command_id for c in sim.sent]
    assert len(ids) == len(set(ids)) == 20
    assert ids[0] == "d1-c0001"
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{8,64}", i) for i in ids)
    assert [n.kind for n in sim.notifications() if n.kind.startswith("deployment")] == [
        "deployment.started",
        "deployment.promoted",
        "deployment.promoted",
        "deployment.promoted",
        "deployment.completed",
    ]


def test_canary_hosts_spread_across_zones_and_are_deterministic() -> None:
    sims = [Sim(hosts=20, zones=3, seed=s) for s in (1, 1, 2)]
    picks = []
    for sim in sims:
        started(sim)
        dep = sim.engine.deployment("d1")
        assert dep is not None
        picks.append([o.host for step in dep.steps for o in step.orders])
    assert picks[0] == picks[1]  # same deployment id and fleet: same order
    first_three = picks[0][:3]
    zones = {sims[0].hosts[h].zone for h in first_three}
    assert len(zones) == 3  # the first hosts of the order cover every zone


def test_bad_canary_with_3_percent_errors_is_rolled_back_on_the_breaching_sample() -> None:
    sim = Sim(hosts=20, profiles={"2.0.0": Profile(error_rate=0.03)})
    started(sim)
    assert sim.finish("d1", 2 * 3600) == "rolled_back"

    fail = sim.first("deployment.fail")
    bake_start = T0 + DELAY
    assert bake_start < fail.time < bake_start + 900
    evidence = fail.evidence
    assert evidence["outcome"] == "fail"
    assert evidence["failed"] == ["error_rate"]
    error_rate = rule(fail, ErrorRateResult)
    assert error_rate.numbers.lower > 0.01
    assert error_rate.numbers.threshold == 0.01
    assert error_rate.window_start == bake_start
    assert error_rate.window_end == fail.time
    assert error_rate.cohort == "canary"
    # The baseline was asked and did not show the breach: the canary is blamed.
    assert evidence["baseline"]["error_rate"]["same_breach"] is False
    # The rollback commands left at the moment of the decision, to the canary hosts only.
    canaries = sorted(error_rate.hosts)
    rollbacks = [c for c in sim.sent if c.action == "rollback"]
    assert sorted(c.host for c in rollbacks) == canaries
    assert {c.issued for c in rollbacks} == {fail.time}
    assert {c.version for c in rollbacks} == {"1.0.0"}
    done = sim.first("deployment.rollback_done")
    assert done.time == fail.time + DELAY
    assert sim.phase("d1") == "rolled_back"
    assert set(sim.versions().values()) == {"1.0.0"}
    notified = sim.notifications("deployment.rolled_back")
    assert len(notified) == 1
    assert "error_rate" in notified[0].message


def test_latency_regression_is_rolled_back_on_the_pooled_quantile() -> None:
    slow = Profile(latency_median_ms=700.0, latency_sigma=0.5)  # p95 about 1590 ms
    sim = Sim(hosts=20, profiles={"2.0.0": slow})
    started(sim)
    assert sim.finish("d1", 3600) == "rolled_back"
    fail = sim.first("deployment.fail")
    assert fail.evidence["failed"] == ["latency"]
    numbers = rule(fail, LatencyResult).numbers
    assert numbers.quantile == 0.95
    assert numbers.quantile_ms is not None and numbers.quantile_ms > 1000
    assert numbers.lower > 0.05
    assert fail.time < T0 + DELAY + 300
    assert set(sim.versions().values()) == {"1.0.0"}


def test_cpu_breach_rolls_back_after_three_consecutive_samples() -> None:
    sim = Sim(hosts=20, profiles={"2.0.0": Profile(cpu=92.0)})
    started(sim)
    assert sim.finish("d1", 3600) == "rolled_back"
    fail = sim.first("deployment.fail")
    cpu = rule(fail, CpuResult)
    assert cpu.verdict is Verdict.FAIL
    host = cpu.hosts[0]
    assert cpu.numbers.consecutive == 3
    # The third gauge sample of that host after the bake started (one a minute).
    offset = sim.hosts[str(host)].offset + 0.5
    bake_start = T0 + DELAY
    first_sample = offset + 60 * int((bake_start - offset) // 60 + 1)
    assert fail.time == pytest.approx(first_sample + 120)
    assert set(sim.versions().values()) == {"1.0.0"}


def test_canary_host_dying_mid_bake_holds_then_rolls_back_after_the_grace() -> None:
    config = make_config()
    grace = config.environments.production.missing_data_grace
    sim = Sim(hosts=20, config=config, profiles={"2.0.0": GOOD})
    started(sim)
    dep = sim.engine.deployment("d1")
    assert dep is not None
    dying = dep.steps[0].orders[0].host
    sim.at(1800.0, lambda: sim.kill(dying))
    sim.at(2400.0, lambda: sim.revive(dying))
    assert sim.finish("d1", 3 * 3600) == "rolled_back"

    hold = sim.first("deployment.hold")
    assert hold.evidence["reason"] == "missing_data"
    # Its Will alone is not yet missing data (a broker that restarts sends every Will):
    # the host is missed when its samples stop for three intervals, as one without a
    # Will. The grace counts from the host's last sample, not from the Will.
    last_sample = sim.hosts[dying].last_sent
    assert last_sample is not None
    policy = config.environments.production
    noticed = last_sample + policy.silent_intervals * config.engine.interval("application")
    assert 1800.0 < noticed < 1800.0 + policy.offline_after
    assert hold.time == pytest.approx(noticed)
    why = f"silent: no application sample since {last_sample:.0f}"
    assert hold.evidence["missing"] == {dying: {"since": last_sample, "why": why}}
    assert sim.notifications("deployment.held")[0].time == hold.time
    fail = sim.first("deployment.fail")
    assert fail.time == pytest.approx(last_sample + grace)
    assert fail.evidence["failed"] == ["missing_data"]
    assert rule(fail, MissingDataResult).hosts == [dying]
    # Nothing was promoted meanwhile, and the bake clock stopped at the hold.
    assert not sim.records("deployment.next_step")
    assert fail.evidence["bake_elapsed"] == pytest.approx(hold.time - (T0 + DELAY))
    # The dead host cannot answer: the rollback finishes without it and lists it...
    done = sim.first("deployment.rollback_done")
    assert done.time < 2400.0
    assert done.evidence["unreachable"] == [dying]
    assert f"{dying} unreachable, will be rolled back when it returns" in done.message
    assert not [
        c
        for c in sim.commands_for("d1")
        if c.host == dying and c.action == "rollback" and c.issued < 2400.0
    ]
    # ...and when it returns, it is converged to the stable version.
    sim.run_until(2400.0 + 30)
    converging = sim.first("host.converging")
    assert converging.host == dying and converging.time == 2400.0
    assert converging.evidence["because"] == "rolled_back"
    assert set(sim.versions().values()) == {"1.0.0"}


def test_fleet_wide_incident_holds_instead_of_blaming_the_canary() -> None:
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)

    def incident() -> None:
        for version in ("1.0.0", "2.0.0"):
            sim.profiles[version] = Profile(error_rate=0.2, database_fail=1.0)

    def recovered() -> None:
        for version in ("1.0.0", "2.0.0"):
            sim.profiles[version] = GOOD

    sim.at(1800.0, incident)
    sim.at(2400.0, recovered)
    sim.at(3000.0, lambda: sim.operator("resume", "d1", reason="database restored") and None)
    sim.run_until(2999.0)

    assert sim.phase("d1") == "held"
    hold = sim.first("deployment.hold")
    assert 1800.0 < hold.time < 1800.0 + 120
    assert hold.evidence["reason"] == "fleet_incident"
    assert hold.evidence["outcome"] == "fleet"
    for rule_name, shown in hold.evidence["baseline"].items():
        assert shown["same_breach"] is True, rule_name
    assert not [c for c in sim.sent if c.action == "rollback"]
    assert len(sim.notifications("deployment.held")) == 1

    assert sim.finish("d1", 6 * 3600) == "completed"
    assert not sim.records("deployment.fail")
    # The held time (hold to resume) was not bake time.
    first_pass = sim.records("deployment.bake_passed")[0]
    assert first_pass.time == pytest.approx(T0 + DELAY + 3600 + (3000.0 - hold.time))


def test_pause_across_a_bake_boundary_promotes_only_after_resume() -> None:
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)
    sim.at(3000.0, lambda: sim.operator("pause", "d1", reason="freeze") and None)
    sim.at(5000.0, lambda: sim.operator("resume", "d1") and None)
    sim.run_until(4999.0)
    assert sim.phase("d1") == "paused"
    assert not sim.records("deployment.next_step")  # the bake's end (3722 s) passed paused
    sim.run_until(6000.0)
    promoted = sim.first("deployment.next_step")
    assert promoted.time == T0 + DELAY + 3600 + 2000
    pause = sim.first("deployment.pause")
    assert pause.actor == "alice"
    assert "freeze" in pause.message


def test_a_breach_while_paused_still_rolls_back() -> None:
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)
    sim.at(600.0, lambda: sim.operator("pause", "d1") and None)
    sim.at(900.0, lambda: sim.profiles.__setitem__("2.0.0", Profile(cpu=95.0)))
    assert sim.finish("d1", 3600.0) == "rolled_back"
    fail = sim.first("deployment.fail")
    assert fail.evidence["from"] == "paused"
    assert fail.evidence["failed"] == ["cpu"]
    assert sim.phase("d1") == "rolled_back"


def blue_green(hosts: int = 6, profile: Profile = GOOD) -> Sim:
    sim = Sim(hosts=hosts, environment="staging", blue_green=True, profiles={"2.0.0": profile})
    started(sim, environment="staging")
    return sim


def test_blue_green_switches_after_the_inactive_slot_passes_its_health_window() -> None:
    config = make_config()
    policy = config.environments.staging.blue_green
    sim = blue_green()
    assert sim.finish("d1", 3 * 3600) == "completed"
    deploys = [c for c in sim.sent if c.action == "deploy"]
    assert {(c.slot, c.version) for c in deploys} == {("green", "2.0.0")}
    passed = sim.records("deployment.bake_passed")
    assert passed[0].time == T0 + DELAY + policy.health_window
    assert rule(passed[0], ErrorRateResult).numbers.threshold == 0.05
    switches = [c for c in sim.sent if c.action == "switch"]
    assert {c.issued for c in switches} == {passed[0].time}
    assert {c.slot for c in switches} == {"green"}
    assert sim.first("deployment.verified").time == passed[0].time + DELAY + policy.watch
    assert {h.slot for h in sim.hosts.values()} == {"green"}
    assert set(sim.versions().values()) == {"2.0.0"}


def test_blue_green_health_failure_before_the_switch_never_switches() -> None:
    broken = Profile(error_rate=1.0)  # every probe of the new slot fails
    sim = blue_green(profile=broken)
    assert sim.finish("d1", 3600) == "rolled_back"
    fail = sim.first("deployment.fail")
    assert T0 + DELAY < fail.time < T0 + DELAY + 60
    assert set(fail.evidence["failed"]) <= {"error_rate", "health"}
    assert fail.evidence["failed"]
    # Judged on the inactive slot's checks, never the live ones.
    failing = rule_named(fail, fail.evidence["failed"][0])
    assert failing.cohort == "canary"
    assert not [c for c in sim.sent if c.action == "switch"]
    # Nothing served the new version: no command was needed to roll back.
    assert not [c for c in sim.sent if c.action == "rollback"]
    assert sim.phase("d1") == "rolled_back"
    assert sim.first("deployment.rollback_done").time == fail.time
    assert {h.slot for h in sim.hosts.values()} == {"blue"}
    assert set(sim.versions().values()) == {"1.0.0"}


def test_blue_green_failure_after_the_switch_switches_back() -> None:
    sim = blue_green()
    sim.at(1200.0, lambda: sim.profiles.__setitem__("2.0.0", Profile(database_fail=1.0)))
    assert sim.finish("d1", 3 * 3600) == "rolled_back"
    fail = sim.first("deployment.fail")
    assert fail.evidence["failed"] == ["health"]
    back = [c for c in sim.sent if c.action == "switch" and c.slot == "blue"]
    assert len(back) == 6
    assert {c.issued for c in back} == {fail.time}
    assert sim.phase("d1") == "rolled_back"
    assert {h.slot for h in sim.hosts.values()} == {"blue"}
    assert set(sim.versions().values()) == {"1.0.0"}


def test_staging_tolerates_3_percent_errors_that_production_rolls_back() -> None:
    three_percent = Profile(error_rate=0.03)
    production = Sim(hosts=20, profiles={"2.0.0": three_percent}, seed=7)
    started(production)
    production.finish("d1", 3 * 3600)
    staging = blue_green(hosts=10, profile=three_percent)
    staging.finish("d1", 3 * 3600)

    fail = production.first("deployment.fail")
    assert rule(fail, ErrorRateResult).numbers.threshold == 0.01
    assert production.phase("d1") == "rolled_back"
    assert staging.phase("d1") == "completed"
    passed = staging.records("deployment.bake_passed")[0]
    staged = rule(passed, ErrorRateResult).numbers
    assert staged.threshold == 0.05
    assert 0.01 < staged.estimate < 0.05
    assert staged.upper < 0.05


def test_direct_in_development_reports_the_error_rate_but_rolls_back_on_health() -> None:
    sloppy = Sim(hosts=6, environment="development", profiles={"2.0.0": Profile(error_rate=0.1)})
    started(sloppy, environment="development")
    sloppy.finish("d1", 3600)
    assert sloppy.phase("d1") == "completed"
    passed = sloppy.first("deployment.bake_passed")
    reported = rule(passed, ErrorRateResult)
    assert reported.enforced is False
    assert "reported only" in reported.message
    assert {c.action for c in sloppy.sent} == {"deploy"}
    assert len(sloppy.sent) == 6  # every host at once

    broken = Sim(hosts=6, environment="development", profiles={"2.0.0": Profile(database_fail=1.0)})
    started(broken, environment="development")
    broken.finish("d1", 3600)
    assert broken.first("deployment.fail").evidence["failed"] == ["health"]
    assert set(broken.versions().values()) == {"1.0.0"}


def test_a_failed_deploy_command_rolls_back_with_the_command_as_evidence() -> None:
    sim = Sim(hosts=10, profiles={"2.0.0": GOOD})
    sim.run_until(T0)

    original = sim._result

    def failing(host, command, state):  # type: ignore[no-untyped-def]
        result = original(host, command, state)
        if command.action == "deploy" and state == "succeeded":
            return msgspec.structs.replace(result, state="failed", detail="disk full")
        return result

    sim._result = failing  # type: ignore[method-assign]
    assert sim.start("d1", "2.0.0").accepted
    sim.finish("d1", 600)
    fail = sim.first("deployment.fail")
    assert fail.time == T0 + DELAY
    assert fail.evidence["rule"] == "command"
    assert fail.evidence["commands"][0]["detail"] == "disk full"
    assert sim.phase("d1") == "rolled_back"


def test_an_unanswered_command_rolls_back_after_the_ack_timeout() -> None:
    config: CoordinatorConfig = make_config()
    timeout = config.environments.production.ack_timeout
    sim = Sim(hosts=10, config=config, profiles={"2.0.0": GOOD}, command_delay=10_000.0)
    started(sim)
    sim.run_until(T0 + timeout + 1)
    fail = sim.first("deployment.fail")
    assert fail.time == T0 + timeout
    assert {c["state"] for c in fail.evidence["commands"]} == {"timed_out"}
    cancelled = {c for c in sim.cancelled}
    assert {c.command_id for c in sim.sent if c.action == "deploy"} <= cancelled


def test_a_silent_canary_host_holds_at_three_intervals_and_the_bake_resumes_when_it_reports() -> (
    None
):
    sim = Sim(hosts=20, profiles={"2.0.0": GOOD})
    started(sim)
    dep = sim.engine.deployment("d1")
    assert dep is not None
    quiet = dep.steps[0].orders[0].host
    sim.at(1000.0, lambda: setattr(sim.hosts[quiet], "mute", True))
    sim.at(1200.0, lambda: setattr(sim.hosts[quiet], "mute", False))
    sim.run_until(1300.0)
    # Its last application sample arrived before 1000 s; three 10 s intervals later it
    # has no data (no Will: it is still connected).
    offset = sim.hosts[quiet].offset
    last = offset + 10 * int((1000.0 - offset) // 10)
    hold = sim.first("deployment.hold")
    assert hold.time == pytest.approx(last + 30.0)
    assert hold.evidence["reason"] == "missing_data"
    assert hold.evidence["missing"][quiet]["why"].startswith("silent: no application sample")
    cleared = sim.first("deployment.cleared")
    assert 1200.0 <= cleared.time <= 1210.0
    assert sim.phase("d1") == "baking"
    assert sim.finish("d1", 6 * 3600) == "completed"
    first_pass = sim.records("deployment.bake_passed")[0]
    assert first_pass.time == pytest.approx(T0 + DELAY + 3600 + (cleared.time - hold.time))


def test_an_inconclusive_bake_is_extended_once_then_held_for_an_operator() -> None:
    config = make_config()
    policy = config.environments.production
    # The whole fleet runs at 1.2 %: the canary is no worse than its baseline, so only
    # the fixed 1 % threshold judges it, and it cannot tell 1.2 % from 1 % in the bake.
    noisy = Profile(error_rate=0.012)
    sim = Sim(hosts=10, profiles={"1.0.0": noisy, "2.0.0": noisy}, seed=3)
    started(sim)
    sim.run_until(T0 + DELAY + policy.canary.first_bake * 1.5 + 10)
    extended = sim.first("deployment.extend")
    assert extended.time == T0 + DELAY + policy.canary.first_bake
    assert (
        extended.evidence["extension"] == policy.canary.first_bake * policy.inconclusive_extension
    )
    assert rule(extended, ErrorRateResult).verdict is Verdict.INCONCLUSIVE
    hold = sim.first("deployment.hold")
    assert hold.time == T0 + DELAY + policy.canary.first_bake * 1.5
    assert hold.evidence["reason"] == "inconclusive"
    assert sim.phase("d1") == "held"
    assert len(sim.notifications("deployment.held")) == 1
    assert not sim.records("deployment.next_step")
    reply = sim.operator("promote", "d1", actor="erin", reason="1.2 % is our normal noise")
    assert reply.accepted and reply.changed
    assert sim.first("deployment.next_step").time == sim.now
