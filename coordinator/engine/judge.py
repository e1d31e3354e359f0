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

The baseline's data is per host as well as pooled, so that no one host can excuse or
blame a release: with three or more baseline hosts reporting, a rate is judged on the
pooled counts without the host that pulls the baseline's rate up the most and the one
that pulls it down the most (both named in the evidence). One host sending 100 % errors
cannot make a bad canary look like a fleet-wide incident, and one sending a flood of
good requests cannot hide one. With one or two reporting hosts there is nobody to check
them against and their counts are taken as they are (bounded: windows.untrusted).

A baseline with no data decides nothing. Windows open at every step's start for both
cohorts at once (a host's counts from before its deploy belong to the old version, and
a window that slid across steps would mix versions in both cohorts), so for the first
moments of a step the canary can breach before any baseline host has reported in the
window. Until ``baseline_wait_intervals`` of the rule's check interval have passed since
the window opened (or the engine started listening again), a breach the baseline cannot
yet confirm or refute waits: it is blamed at once only when the baseline is
significantly better (its upper bound under the canary's lower bound), explained at once
when the baseline shows it, both only on enough reporting hosts to check one against
the others (three, or every baseline host), and otherwise judged when the wait ends
(the outcome is WAIT, and the engine asks to be woken then). After the wait the policy
above applies as is; a baseline still without data then does not show the breach.

If every failing rule is explained that way, the new version is not what broke: the
deployment is held and people are alerted instead of rolling back, because rolling a
good release back during a database outage only adds a change to an incident, and
blaming it teaches people to ignore the canary. An operator resumes (with a fresh
window) or rolls back; a failure the baseline does not share still rolls back at once.
If any failing rule is not explained, the canary is blamed and rolled back. Without a
baseline (blue-green, direct, the 100 % step and the post-promotion watch) every
failure is blamed on the release, as the guide asks. When the only failures explained
are missing data (every cohort silent: the coordinator's own outage, a network
partition), the outcome is MISSING, not FLEET: the hold clears by itself when every
judged host reports again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator.engine.compare import compare
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
    # While the baseline cannot yet confirm or refute a breach: when it will be judged.
    decide_by: float | None = None

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
    # The comparison sees the baseline per host as well as pooled, as the rate rules'
    # baseline policy does: without the host pulling its error rate up most and the one
    # pulling it down most (``_trimmed``), so no one host excuses or blames a release.
    compared = None if baseline is None else _trimmed(baseline, errors=True)[0]
    results.extend(compare(policy, canary, compared, silence, now))
    failed = [r for r in results if r.enforced and r.verdict is Verdict.FAIL]
    judgement = Judgement(outcome=Outcome.PASS, results=results, failed=failed, missing=absent)
    if failed:
        blamed = False
        pending: list[float] = []
        for result in failed:
            shown = _baseline_shows(
                policy, result, canary=canary, baseline=baseline, silence=silence, now=now
            )
            if shown is not None:
                judgement.baseline[result.rule] = shown
            if shown is not None and shown.pending_until is not None:
                pending.append(shown.pending_until)
            elif shown is None or not shown.same_breach:
                blamed = True
        if blamed:
            judgement.outcome = Outcome.FAIL
        elif pending:
            judgement.outcome = Outcome.WAIT
            judgement.decide_by = min(pending)
        elif all(isinstance(r, MissingDataResult) for r in failed):
            judgement.outcome = Outcome.MISSING
        else:
            judgement.outcome = Outcome.FLEET
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
    start = max(baseline.window_start, silence.since)
    if isinstance(failed, ErrorRateResult | LatencyResult):
        errors = isinstance(failed, ErrorRateResult)
        view, excluded = _trimmed(baseline, errors=errors)
        mine: ErrorRateResult | LatencyResult = (
            error_rate(policy, view, now) if errors else latency(policy, view, now)
        )
        numbers = mine.numbers
        same = (
            numbers.trials > 0
            and numbers.estimate > failed.numbers.threshold
            and numbers.upper >= failed.numbers.lower
        )
        wait_until = start + policy.baseline_wait_intervals * silence.interval(APPLICATION)
        better = numbers.trials > 0 and numbers.upper < failed.numbers.lower
        # Decided early only on hosts that can be checked against each other.
        reporting = _reporting(baseline, errors=errors)
        checked = reporting >= TRIM_MIN_HOSTS or reporting == len(baseline.hosts)
        decided = checked and (same or better)
        pending = None if decided or now >= wait_until else wait_until
        return BaselineShown(
            same_breach=same,
            rule=mine,
            reporting=reporting,
            excluded=excluded or None,
            pending_until=pending,
        )
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
        checks = [rule]
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
        checks = sorted(broken)
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
        checks = []
    else:
        return None
    share = _share(len(showing), reporting)
    same = reporting > 0 and share >= min(canary_share, FLEET_SHARE)
    # A host rule waits for the baseline only while no baseline host has reported the
    # check yet (the missing-data rule never waits: silence is its own data).
    wait_until = start + policy.baseline_wait_intervals * max(
        (silence.interval(c) for c in checks), default=0.0
    )
    pending = wait_until if checks and reporting == 0 and now < wait_until else None
    return BaselineShown(
        same_breach=same,
        rule=rule,
        baseline_hosts=len(baseline.hosts),
        reporting=reporting,
        showing=sorted(showing),
        baseline_share=share,
        canary_share=canary_share,
        pending_until=pending,
    )


# With fewer reporting baseline hosts than this, none is left out of a rate.
TRIM_MIN_HOSTS = 3


def _app_tally(baseline: CohortView, host: str, *, errors: bool) -> Tally | None:
    """A baseline host's application counts in the window, if it reported any."""
    window = baseline.checks(host).get(APPLICATION)
    if window is None or not (window.tally.requests if errors else window.tally.latency_n):
        return None
    return window.tally


def _reporting(baseline: CohortView, *, errors: bool) -> int:
    return sum(1 for h in baseline.hosts if _app_tally(baseline, h, errors=errors) is not None)


def _trimmed(baseline: CohortView, *, errors: bool) -> tuple[CohortView, list[str]]:
    """The baseline for a rate rule, judged per host as well as pooled: with
    TRIM_MIN_HOSTS or more hosts reporting requests, without the host whose removal
    lowers the pooled rate the most and the one whose removal raises it the most.
    Returns the view and the hosts left out."""
    tallies: dict[str, Tally] = {}
    for host in baseline.hosts:
        tally = _app_tally(baseline, host, errors=errors)
        if tally is not None:
            tallies[host] = tally
    if len(tallies) < TRIM_MIN_HOSTS:
        return baseline, []

    def counts(tally: Tally) -> tuple[int, int]:
        if errors:
            return tally.errors, tally.requests
        return tally.slow_definite, tally.latency_n

    events = sum(counts(t)[0] for t in tallies.values())
    trials = sum(counts(t)[1] for t in tallies.values())

    def rest(host: str) -> float:
        """The pooled rate without ``host``."""
        mine_events, mine_trials = counts(tallies[host])
        return (events - mine_events) / (trials - mine_trials)

    # Hosts in a fixed order, so ties are broken the same way every time.
    ordered = sorted(tallies)
    raising = min(ordered, key=rest)
    lowering = max((h for h in ordered if h != raising), key=rest)
    excluded = sorted({raising, lowering})
    pooled = Tally()
    for host in ordered:
        if host not in excluded:
            pooled.merge(tallies[host], sketch=False)
    # The pooled sketch less the excluded hosts' (every baseline host's window is in the
    # pool, and a host without requests has an empty sketch): merging 1,000 hosts'
    # sketches again on every judgement stalled a large fleet's event loop for tens of ms.
    everyone = baseline.pooled.get(APPLICATION)
    remaining = (
        None if everyone is None else everyone.sketch.without(tallies[h].sketch for h in excluded)
    )
    if remaining is not None and remaining.total == pooled.latency_n:
        pooled.sketch = remaining
    else:
        for host in ordered:
            if host not in excluded:
                pooled.sketch.merge(tallies[host].sketch)
    kept = [h for h in baseline.hosts if h not in excluded]
    view = CohortView(
        name=baseline.name,
        hosts=kept,
        window_start=baseline.window_start,
        checks=baseline.checks,
        pooled={**baseline.pooled, APPLICATION: pooled},
        records=baseline.records,
    )
    return view, excluded
