"""Canary versus baseline (coordinator/engine/compare.py): the anytime-valid test on
counts, the rules on cohort views, and whole rollouts through the engine with real
traffic (20 requests/s per host) in the simulator."""

from __future__ import annotations

import math
import random

import pytest

from coordinator.engine.compare import (
    compare,
    floor_log_evalue,
    ratio_log_evalue,
    ratio_lower,
    span,
)
from coordinator.engine.fleet import HostRecord
from coordinator.engine.rules import CohortView, Silence
from coordinator.engine.windows import CheckWindow, Tally
from shared.config import ConfigError
from shared.config.coordinator import BaselineComparison, EnvironmentPolicy
from shared.evidence import (
    ErrorComparisonResult,
    LatencyComparisonResult,
    Verdict,
)

from .sim import Profile, Sim, binomial, make_config
from .test_rollouts import rule_named, rules

POLICY = make_config().environments.production
LEVEL = -math.log(1 - POLICY.comparison.confidence)
T0 = 120.0


def _view(name: str, pooled: Tally, windows: dict[str, CheckWindow] | None = None) -> CohortView:
    windows = windows or {}
    hosts = sorted(windows) or [f"{name}-0"]
    return CohortView(
        name=name,
        hosts=hosts,
        window_start=0.0,
        checks=lambda host: {"application": windows[host]} if host in windows else {},
        pooled={"application": pooled},
        records=lambda host: HostRecord(
            host=host, environment="production", online=True, session=1
        ),
    )


SILENCE = Silence(interval=lambda check: 10.0, intervals=3, since=0.0)


def _judge(
    canary: Tally, baseline: Tally, policy: EnvironmentPolicy = POLICY
) -> tuple[ErrorComparisonResult, LatencyComparisonResult]:
    results = compare(policy, _view("canary", canary), _view("baseline", baseline), SILENCE, 60.0)
    error, latency = results
    assert isinstance(error, ErrorComparisonResult)
    assert isinstance(latency, LatencyComparisonResult)
    return error, latency


# -- the test on counts ----------------------------------------------------------------


def test_judged_after_every_interval_the_test_rejects_a_true_null_at_most_alpha() -> None:
    # At the edge of the null (the canary exactly 1.3x the baseline), judged after every
    # 10 s of an hour of traffic: Ville's inequality bounds the rejections over the whole
    # hour by 1 - confidence (1 %), however often the test is looked at.
    rng = random.Random(7)
    runs, rejected = 300, 0
    for _ in range(runs):
        x1 = n1 = x0 = n0 = 0
        for _ in range(360):
            n1 += 200
            n0 += 1800
            x1 += binomial(rng, 200, 0.0026)
            x0 += binomial(rng, 1800, 0.002)
            if ratio_log_evalue(x1, n1, x0, n0, 1.3) >= LEVEL:
                rejected += 1
                break
    assert rejected <= 0.01 * runs + 3  # 1 % plus sampling slack (binomial sd ~1.7)


def test_the_confidence_sequence_brackets_the_ratio_and_agrees_with_the_test() -> None:
    # 0.4 % vs 0.2 % over an hour of one canary host's traffic against nine.
    x1, n1, x0, n0 = 288, 72_000, 1_296, 648_000
    lower = ratio_lower(x1, n1, x0, n0, 0.99)
    assert 1.3 < lower < 2.0
    # The lower end is where the test stops rejecting.
    assert ratio_log_evalue(x1, n1, x0, n0, lower * 0.99) >= LEVEL
    assert ratio_log_evalue(x1, n1, x0, n0, lower * 1.01) < LEVEL
    # Identical rates: nothing worse than about 1x is shown.
    assert ratio_lower(144, 72_000, 1_296, 648_000, 0.99) < 1.0
    # No events yet: no evidence at all.
    assert ratio_log_evalue(0, 1000, 0, 9000, 1.3) == 0.0
    assert ratio_lower(0, 1000, 0, 9000, 0.99) == 0.0


def test_the_floor_test_rejects_only_rates_surely_over_the_floor() -> None:
    assert floor_log_evalue(2, 10_000, 0.001) < LEVEL  # 0.02 %
    assert floor_log_evalue(40, 10_000, 0.001) >= LEVEL  # 0.4 %
    assert floor_log_evalue(0, 0, 0.001) == 0.0


# -- the rules on cohort views ---------------------------------------------------------


def test_a_doubled_error_rate_fails_in_the_words_of_the_other_rules() -> None:
    error, _ = _judge(Tally(requests=72_118, errors=296), Tally(requests=649_062, errors=1_298))
    assert error.verdict is Verdict.FAIL and error.enforced
    n = error.numbers
    assert (n.canary_events, n.canary_trials, n.baseline_events, n.baseline_trials) == (
        296,
        72_118,
        1_298,
        649_062,
    )
    assert n.ratio == pytest.approx((296 / 72_118) / (1_298 / 649_062))
    assert n.allowed == 1.3 and n.floor == 0.001 and n.floor_shown
    assert n.ratio is not None and 1.3 < n.lower < n.ratio
    assert error.message == (
        "error_vs_baseline: canary 0.41% vs baseline 0.20% errors of 72,118 and 649,062 "
        f"requests; at 99% confidence at least {n.lower:.1f}x worse; over the allowed 1.3x "
        "and over the floor of 0.10%"
    )


def test_twice_a_tiny_rate_is_under_the_absolute_floor_and_passes() -> None:
    # 0.02 % vs 0.01 % on millions of requests: surely twice as bad, not worth a rollback.
    error, _ = _judge(
        Tally(requests=2_000_000, errors=400), Tally(requests=18_000_000, errors=1_800)
    )
    assert error.numbers.lower > 1.3
    assert not error.numbers.floor_shown
    assert error.verdict is Verdict.PASS
    assert "not shown over the floor of 0.10%" in error.message


def test_noise_passes_and_a_baseline_without_data_decides_nothing() -> None:
    error, latency = _judge(Tally(requests=7_200, errors=16), Tally(requests=64_800, errors=130))
    assert error.verdict is Verdict.PASS
    assert "not shown worse than the allowed 1.3x" in error.message
    # The baseline has no requests in the judged span: it decides nothing, neither
    # blaming the canary nor holding it (the fixed thresholds judge).
    error, latency = _judge(Tally(requests=7_200, errors=400), Tally())
    assert error.verdict is Verdict.NO_DATA and not error.enforced
    assert latency.verdict is Verdict.NO_DATA and not latency.enforced
    assert error.message == (
        "error_vs_baseline: no baseline requests in the judged span; nothing compared, "
        "the fixed thresholds decide"
    )


def test_latency_counts_canary_requests_slower_than_the_baselines_p95() -> None:
    rng = random.Random(3)
    baseline, canary, slower = Tally(), Tally(), Tally()
    for _ in range(20_000):
        baseline.sketch.add(120 * math.exp(rng.gauss(0, 0.4)))
        canary.sketch.add(120 * math.exp(rng.gauss(0, 0.4)))
        slower.sketch.add(144 * math.exp(rng.gauss(0, 0.4)))
    baseline.requests = canary.requests = slower.requests = 20_000
    _, same = _judge(canary, baseline)
    assert same.verdict is Verdict.PASS
    edge = same.numbers.slower_than_ms
    assert edge is not None and edge == pytest.approx(120 * math.exp(1.645 * 0.4), rel=0.05)
    assert same.numbers.baseline_rate == pytest.approx(0.05, abs=0.005)
    _, worse = _judge(slower, baseline)
    assert worse.verdict is Verdict.FAIL
    # A 20 % slower release: about 2.3 times as many requests over the baseline's p95.
    assert worse.numbers.ratio == pytest.approx(2.3, rel=0.15)
    assert worse.numbers.lower > 1.5
    assert "slower than the baseline's p95" in worse.message


def test_both_cohorts_are_judged_over_the_span_they_both_have_data_for() -> None:
    # The canary reported the first 10 s of a fleet-wide outage before the baseline did:
    # its latest sample is left out, so the outage is not the canary's alone.
    old = Tally(requests=1_000, errors=2)
    outage = Tally(requests=200, errors=200)
    canary_pooled = Tally()
    canary_pooled.add_counts(old)
    canary_pooled.add_counts(outage)
    canary_window = CheckWindow(last_seen=59.0, last_delta=outage)
    baseline_window = CheckWindow(last_seen=55.0, last_delta=Tally(requests=900, errors=2))
    canary = _view("canary", canary_pooled, {"c": canary_window})
    baseline_pooled = Tally(requests=9_000, errors=20)
    baseline = _view("baseline", baseline_pooled, {"b": baseline_window})
    assert span(canary, 55.0).requests == 1_000 and span(canary, 55.0).errors == 2
    assert span(baseline, 55.0).requests == 9_000
    error, _ = compare(POLICY, canary, baseline, SILENCE, 60.0)
    assert error.verdict is Verdict.PASS
    assert error.numbers.span_end == 55.0
    # Without the common span the outage would have been blamed on the canary.
    assert ratio_log_evalue(202, 1_200, 20, 9_000, 1.3) >= LEVEL


def test_the_canary_lags_the_baseline_by_its_latest_sample_in_the_span() -> None:
    # The canary host reported the outage's first 10 s at 54 s, before the span's end
    # (55 s), while baseline hosts that report later had not: hosts report in turn. As
    # the canary its latest sample in the span is left out too, so it never leads.
    old, outage = Tally(requests=1_000, errors=2), Tally(requests=200, errors=200)
    pooled = Tally()
    pooled.add_counts(old)
    pooled.add_counts(outage)
    window = CheckWindow(last_seen=54.0, last_delta=outage, prev_delta=Tally(requests=200))
    canary = _view("canary", pooled, {"c": window})
    assert span(canary, 55.0).errors == 202
    assert span(canary, 55.0, lead=True).errors == 2
    # Its latest sample after the end is left out as for every host, and the one before.
    window = CheckWindow(last_seen=59.0, last_delta=Tally(requests=200), prev_delta=outage)
    pooled.add_counts(Tally(requests=200))
    canary = _view("canary", pooled, {"c": window})
    assert span(canary, 55.0).requests == 1_200
    assert span(canary, 55.0, lead=True).requests == 1_000


def test_report_only_and_off_and_no_baseline() -> None:
    config = make_config("[environments.production.comparison]\nmode = 'report'\n")
    policy = config.environments.production
    error, _ = _judge(
        Tally(requests=72_000, errors=300), Tally(requests=648_000, errors=1_300), policy
    )
    assert error.verdict is Verdict.FAIL and not error.enforced
    assert error.message.endswith("(reported only)")
    off = make_config("[environments.production.comparison]\nmode = 'off'\n")
    view = _view("canary", Tally(requests=10, errors=5))
    assert compare(off.environments.production, view, view, SILENCE, 60.0) == []
    assert compare(POLICY, view, None, SILENCE, 60.0) == []


def test_config_defaults_per_environment_and_bad_values_named() -> None:
    config = make_config()
    assert config.environments.production.comparison == BaselineComparison()
    assert config.environments.production.comparison.mode == "enforce"
    assert config.environments.staging.comparison.mode == "report"
    assert config.environments.development.comparison.mode == "report"
    with pytest.raises(ConfigError, match=r"comparison.mode"):
        make_config("[environments.production.comparison]\nmode = 'loud'\n")
    with pytest.raises(ConfigError, match=r">= 1.*comparison.error_ratio"):
        make_config("[environments.production.comparison]\nerror_ratio = 0.5\n")
    with pytest.raises(ConfigError, match=r"comparison.confidence"):
        make_config("[environments.production.comparison]\nconfidence = 1.5\n")


# -- whole rollouts through the engine ---------------------------------------------------


def _rollout(profiles: dict[str, Profile], seed: int, extra: str = "") -> Sim:
    sim = Sim(hosts=10, config=make_config(extra), profiles=profiles, seed=seed, traffic=20.0)
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0").accepted
    first_bake = sim.config.environments.production.canary.first_bake
    sim.run_until(
        T0 + 2 + first_bake + 10,
        stop=lambda: sim.phase("d1") in ("rolling_back", "rolled_back"),
    )
    return sim


def test_a_doubled_error_rate_is_rolled_back_within_the_first_bake() -> None:
    base = Profile(error_rate=0.002)
    sim = _rollout({"1.0.0": base, "2.0.0": Profile(error_rate=0.004)}, seed=11)
    fail = sim.first("deployment.fail")
    assert fail.time < T0 + 2 + 3600
    assert fail.evidence["failed"] == ["error_vs_baseline"]
    result = rule_named(fail, "error_vs_baseline")
    assert isinstance(result, ErrorComparisonResult) and result.verdict is Verdict.FAIL
    assert result.numbers.lower > 1.3
    # The fixed 1 % threshold alone would have promoted it.
    assert rule_named(fail, "error_rate").verdict is not Verdict.FAIL


def test_a_20_percent_slower_release_is_rolled_back_on_the_histograms() -> None:
    sim = _rollout({"2.0.0": Profile(latency_median_ms=144.0)}, seed=12)
    fail = sim.first("deployment.fail")
    assert fail.evidence["failed"] == ["latency_vs_baseline"]
    result = rule_named(fail, "latency_vs_baseline")
    assert isinstance(result, LatencyComparisonResult)
    # The traffic's histogram edge over the baseline's p95 (120 ms x e^(1.645 x 0.4)).
    assert result.numbers.slower_than_ms == pytest.approx(250.0, rel=0.02)


def test_a_good_release_is_promoted_and_reported_only_is_never_acted_on() -> None:
    sim = _rollout({}, seed=13)
    assert not sim.records("deployment.fail")
    passed = sim.first("deployment.bake_passed")
    compared = [r for r in rules(passed) if r.rule.endswith("_vs_baseline")]
    assert [r.verdict for r in compared] == [Verdict.PASS, Verdict.PASS]
    reported = _rollout(
        {"2.0.0": Profile(error_rate=0.006)},
        seed=14,
        extra="[environments.production.comparison]\nmode = 'report'\n",
    )
    assert not reported.records("deployment.fail")


def test_a_fleet_wide_incident_is_not_blamed_on_the_canary() -> None:
    # Every host, old version and new, serves 8 % errors for 10 minutes mid-bake.
    normal, bad = Profile(), Profile(error_rate=0.08)
    for seed in range(3):
        sim = Sim(hosts=10, config=make_config(), profiles={}, seed=20 + seed, traffic=20.0)

        def outage(sim: Sim = sim, profile: Profile = bad) -> None:
            sim.profiles["1.0.0"] = sim.profiles["2.0.0"] = profile

        def healed(sim: Sim = sim) -> None:
            sim.profiles["1.0.0"] = sim.profiles["2.0.0"] = normal

        sim.at(T0 + 600 + 97 * seed, outage)
        sim.at(T0 + 1200 + 97 * seed, healed)
        sim.run_until(T0)
        assert sim.start("d1", "2.0.0").accepted
        sim.run_until(T0 + 3600)
        assert not sim.records("deployment.fail"), sim.records("deployment.fail")[0].message
        assert sim.first("deployment.hold").evidence["reason"] == "fleet_incident"
