"""Judging a deployment's canary cohort against the rules and its baseline.

Baseline policy (the fleet-wide incident)
-----------------------------------------
While a canary runs, the hosts still on the stable version are the baseline, judged on
the same window. When a canary rule fails, the engine asks whether the baseline shows
the same breach:

* a rate (errors, slow requests): the baseline's own rate is over the threshold and the
  canary is not significantly worse (the baseline's upper bound reaches the canary's
  lower bound);
* a host rule (a gauge over its threshold for N samples, N consecutive failed health
  checks, a host without data past the grace): at least as large a share of baseline
  hosts shows it now (latest sample over the threshold, latest check failed, silent or
  offline) as of canary hosts fail it, or at least half of the baseline hosts.

If every failing rule is explained that way, the new version is not what broke: the
deployment is held and people are alerted instead of rolling back, because rolling a
good release back during a database outage only adds a change to an incident, and
blaming it teaches people to ignore the canary. An operator resumes (with a fresh
window) or rolls back; a failure the baseline does not share still rolls back at once.
If any failing rule is not explained, the canary is blamed and rolled back. Without a
baseline (blue-green, direct, the 100 % step and the post-promotion watch) every
failure is blamed on the release, as the guide asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator.engine.rules import (
    APPLICATION,
    CohortView,
    Silence,
    coverage,
    error_rate,
    gauge,
    health,
    host_missing,
    latency,
    missing,
)
from coordinator.engine.stats import breaches
from coordinator.engine.windows import GAUGE_CHECKS, Tally
from shared.config.coordinator import EnvironmentPolicy
from shared.evidence import (
    Absence,
    BaselineShown,
    ErrorRateResult,
    GaugeResult,
    HealthResult,
    LatencyResult,
    MissingDataResult,
    Outcome,
    RuleResult,
    Verdict,
    encode_evidence,
)
from shared.evidence import Judgement as JudgementEvidence

# A host rule is fleet-wide when at least this share of the baseline shows it, even if
# the canary's share is higher (one canary host of one is a share of 100 %).
FLEET_SHARE = 0.5


__all__ = ["Judgement", "Outcome", "evaluate", "judge", "quick_failures"]


@dataclass
class Judgement:
    outcome: Outcome
    results: list[RuleResult]
    failed: list[RuleResult] = field(default_factory=list)
    # Per failed rule, what the baseline showed (only when it was consulted).
    baseline: dict[str, BaselineShown] = field(default_factory=dict)
    missing: dict[str, tuple[float, str]] = field(default_factory=dict)

    def blocking(self) -> list[RuleResult]:
        """The rules that keep this window from passing."""
        return [r for r in self.results if r.enforced and r.verdict is not Verdict.PASS]

    def fields(self) -> dict[str, Any]:
        """The evidence as the JSON fields a transition's evidence carries alongside."""
        return encode_evidence(self.evidence())

    def evidence(self) -> JudgementEvidence:
        return JudgementEvidence(
            outcome=self.outcome,
            rules=list(self.results),
            failed=[r.rule for r in self.failed],
            baseline=dict(self.baseline),
            missing={h: Absence(since=s, why=w) for h, (s, w) in sorted(self.missing.items())},
        )


def _blocking_no_data(policy: EnvironmentPolicy, result: RuleResult) -> bool:
    """Whether a rule without data keeps the window from passing."""
    if result.rule in ("error_rate", "latency"):
        return APPLICATION in policy.required_checks
    if result.rule in GAUGE_CHECKS:
        return result.rule in policy.required_checks
    return True


def evaluate(
    policy: EnvironmentPolicy, cohort: CohortView, silence: Silence, now: float
) -> tuple[list[RuleResult], dict[str, tuple[float, str]]]:
    """Every rule on one cohort."""
    results: list[RuleResult] = [error_rate(policy, cohort, now), latency(policy, cohort, now)]
    results.extend(gauge(policy, cohort, check, now) for check in GAUGE_CHECKS)
    results.append(health(policy, cohort, now))
    results.append(coverage(policy, cohort, now))
    absent_result, absent = missing(policy, cohort, silence, now)
    results.append(absent_result)
    # A rule with no data that does not block is reported as such but not enforced.
    return [
        r
        if r.verdict is not Verdict.NO_DATA or _blocking_no_data(policy, r) or not r.enforced
        else msgspec.structs.replace(r, enforced=False, message=f"{r.message} (not required)")
        for r in results
    ], absent


def quick_failures(
    policy: EnvironmentPolicy, cohort: CohortView, host: str, now: float
) -> list[RuleResult]:
    """The rules one host's new samples can fail, in constant time: the pooled rates of
    its cohort and its own gauges and health. The hot path of every metric batch, so the
    bounds are checked first and a rule's full evidence is built only when it fails."""
    failed: list[RuleResult] = []
    app = cohort.pooled.get(APPLICATION) or Tally()
    threshold = policy.error_rate
    confidence = policy.confidence
    if threshold is not None and breaches(app.errors, app.requests, threshold, confidence):
        failed.append(error_rate(policy, cohort, now))
    share = 1.0 - policy.latency_quantile
    if breaches(app.slow_definite, app.latency_n, share, confidence):
        failed.append(latency(policy, cohort, now))
    checks = cohort.checks(host)
    single = CohortView(
        name=cohort.name,
        hosts=[host],
        window_start=cohort.window_start,
        checks=cohort.checks,
        pooled=cohort.pooled,
        records=cohort.records,
    )
    for check in GAUGE_CHECKS:
        window = checks.get(check)
        if window is not None and window.over_streak >= policy.gauge_consecutive:
            failed.append(gauge(policy, single, check, now))
    limit = policy.health_consecutive_failures
    if any(w.fail_streak >= limit for w in checks.values()):
        failed.append(health(policy, single, now))
    return failed


def judge(
    policy: EnvironmentPolicy,
    canary: CohortView,
    baseline: CohortView | None,
    silence: Silence,
    now: float,
) -> Judgement:
    results, absent = evaluate(policy, canary, silence, now)
    failed = [r for r in results if r.enforced and r.verdict is Verdict.FAIL]
    judgement = Judgement(outcome=Outcome.PASS, results=results, failed=failed, missing=absent)
    if failed:
        explained = True
        for result in failed:
            shown = _baseline_shows(
                policy, result, canary=canary, baseline=baseline, silence=silence, now=now
            )
            if shown is not None:
                judgement.baseline[result.rule] = shown
            if shown is None or not shown.same_breach:
                explained = False
        judgement.outcome = Outcome.FLEET if explained else Outcome.FAIL
        return judgement
    if absent:
        judgement.outcome = Outcome.MISSING
        return judgement
    if judgement.blocking():
        judgement.outcome = Outcome.WAIT
    return judgement


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _baseline_shows(
    policy: EnvironmentPolicy,
    failed: RuleResult,
    *,
    canary: CohortView,
    baseline: CohortView | None,
    silence: Silence,
    now: float,
) -> BaselineShown | None:
    """Whether the baseline shows the breach ``failed`` found on the canary, with the
    numbers; None without a baseline."""
    if baseline is None or not baseline.hosts:
        return None
    rule = failed.rule
    showing: list[str]
    if isinstance(failed, ErrorRateResult | LatencyResult):
        mine: ErrorRateResult | LatencyResult = (
            error_rate(policy, baseline, now)
            if isinstance(failed, ErrorRateResult)
            else latency(policy, baseline, now)
        )
        threshold = failed.numbers.threshold
        same = (
            mine.numbers.trials > 0
            and mine.numbers.estimate > threshold
            and mine.numbers.upper >= failed.numbers.lower
        )
        return BaselineShown(same_breach=same, rule=mine)
    if isinstance(failed, GaugeResult):
        limit = failed.numbers.limit
        showing, reporting = [], 0
        for host in baseline.hosts:
            window = baseline.checks(host).get(rule)
            if window is None or window.last_value is None:
                continue
            reporting += 1
            if window.last_value > limit:
                showing.append(host)
        canary_share = _share(len(failed.numbers.peaks), len(canary.hosts))
    elif isinstance(failed, HealthResult):
        broken = {c for checks in failed.numbers.failing.values() for c in checks}
        showing, reporting = [], 0
        for host in baseline.hosts:
            windows = baseline.checks(host)
            seen = [windows[c] for c in broken if c in windows and windows[c].last_ok is not None]
            if not seen:
                continue
            reporting += 1
            if any(w.last_ok is False for w in seen):
                showing.append(host)
        canary_share = _share(len(failed.numbers.failing), len(canary.hosts))
    elif isinstance(failed, MissingDataResult):
        showing, reporting = [], len(baseline.hosts)
        for host in baseline.hosts:
            if host_missing(
                policy,
                baseline.records(host),
                baseline.checks(host),
                silence=silence,
                reference=baseline.window_start,
                now=now,
            ):
                showing.append(host)
        canary_share = _share(len(failed.numbers.missing), len(canary.hosts))
    else:
        return None
    share = _share(len(showing), reporting)
    same = reporting > 0 and share >= min(canary_share, FLEET_SHARE)
    return BaselineShown(
        same_breach=same,
        rule=rule,
        baseline_hosts=len(baseline.hosts),
        reporting=reporting,
        showing=sorted(showing),
        baseline_share=share,
        canary_share=canary_share,
    )
