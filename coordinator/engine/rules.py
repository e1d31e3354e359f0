"""The rules that judge a cohort, each giving pass, fail, inconclusive or no-data with
the evidence behind it (rule, window, numbers, hosts). Pure functions of the windows;
judge.py combines them and applies the baseline policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from coordinator.engine.fleet import HostRecord
from coordinator.engine.stats import Bounds, rate_verdict, wilson
from coordinator.engine.windows import CheckWindow, Tally
from shared.config.coordinator import EnvironmentPolicy
from shared.evidence import (
    GAUGE_RESULTS,
    Absence,
    CoverageNumbers,
    CoverageResult,
    ErrorRateResult,
    GaugeNumbers,
    GaugeResult,
    HealthNumbers,
    HealthResult,
    LatencyNumbers,
    LatencyResult,
    MissingDataNumbers,
    MissingDataResult,
    RateNumbers,
    RuleResult,
    Verdict,
)

__all__ = ["APPLICATION", "CohortView", "RuleResult", "Silence", "Verdict"]

APPLICATION = "application"


@dataclass(frozen=True)
class CohortView:
    """What the rules see of one cohort: its hosts, their checks (by base name, the
    slot already resolved), and the pooled counts per base check."""

    name: str
    hosts: Sequence[str]
    window_start: float
    checks: Callable[[str], Mapping[str, CheckWindow]]
    pooled: Mapping[str, Tally]
    records: Callable[[str], HostRecord | None]


@dataclass(frozen=True)
class Silence:
    """How missing data is told: a check is silent after ``intervals`` of its interval."""

    interval: Callable[[str], float]
    intervals: int
    # Nothing before this engine time counts as silence (engine start or restore).
    since: float
    # How long a host has been offline by its Will, on the clock that stops while the
    # shell is away from the broker (EngineState.offline_for): its offline grace.
    offline_for: Callable[[str, float], float] = field(default=lambda host, now: math.inf)
    # Hosts missing since before the shell's last outage that have sent nothing since
    # (EngineState.carried): they stay missing, from then.
    carried: Mapping[str, tuple[float, str]] = field(default_factory=dict)


def _rate_message(
    rule: str, verdict: Verdict, bad: Bounds, good: Bounds, *, threshold: float, confidence: float
) -> str:
    if verdict is Verdict.NO_DATA:
        return f"{rule}: no requests in the window"
    if verdict is Verdict.FAIL:
        return (
            f"{rule}: {bad.events}/{bad.trials} = {bad.estimate:.2%}, at {confidence:.1%} "
            f"confidence at least {bad.lower:.2%}, over {threshold:.2%}"
        )
    if verdict is Verdict.PASS:
        return (
            f"{rule}: {good.events}/{good.trials}, at {confidence:.1%} "
            f"confidence at most {good.upper:.2%}, under {threshold:.2%}"
        )
    return (
        f"{rule}: {bad.events}/{bad.trials} = {bad.estimate:.2%}, bounds "
        f"{bad.lower:.2%}..{good.upper:.2%} straddle {threshold:.2%}"
    )


def _rate_numbers(bad: Bounds, good: Bounds, threshold: float, confidence: float) -> RateNumbers:
    return RateNumbers(
        events=bad.events,
        trials=bad.trials,
        estimate=bad.estimate,
        lower=bad.lower,
        upper=good.upper,
        threshold=threshold,
        confidence=confidence,
    )


def error_rate(policy: EnvironmentPolicy, cohort: CohortView, now: float) -> ErrorRateResult:
    app = cohort.pooled.get(APPLICATION) or Tally()
    confidence = policy.confidence
    bad = wilson(app.errors, app.requests, confidence)
    if policy.error_rate is None:
        # Development: "relaxed (report only)" in the guide. Judged against production's
        # 1 % for the record, never acted on.
        threshold, enforced = 0.01, False
    else:
        threshold, enforced = policy.error_rate, True
    verdict = rate_verdict(app.errors, app.requests, threshold, confidence)
    message = _rate_message(
        "error_rate", verdict, bad, bad, threshold=threshold, confidence=confidence
    )
    return ErrorRateResult(
        verdict=verdict,
        cohort=cohort.name,
        window_start=cohort.window_start,
        window_end=now,
        enforced=enforced,
        hosts=list(cohort.hosts),
        numbers=_rate_numbers(bad, bad, threshold, confidence),
        message=message if enforced else f"{message} (reported only)",
    )


def latency(policy: EnvironmentPolicy, cohort: CohortView, now: float) -> LatencyResult:
    """The window's pooled quantile over the threshold, judged as the share of requests
    slower than the threshold against ``1 - quantile``: failed on the surely slow
    requests, passed on the possibly slow ones."""
    app = cohort.pooled.get(APPLICATION) or Tally()
    share = 1.0 - policy.latency_quantile
    confidence = policy.confidence
    definite = wilson(app.slow_definite, app.latency_n, confidence)
    possible = wilson(app.slow_possible, app.latency_n, confidence)
    verdict = rate_verdict(
        app.slow_definite, app.latency_n, share, confidence, pass_events=app.slow_possible
    )
    quantile = app.sketch.quantile(policy.latency_quantile)
    rate = _rate_numbers(definite, possible, share, confidence)
    return LatencyResult(
        verdict=verdict,
        cohort=cohort.name,
        window_start=cohort.window_start,
        window_end=now,
        hosts=list(cohort.hosts),
        numbers=LatencyNumbers(
            events=rate.events,
            trials=rate.trials,
            estimate=rate.estimate,
            lower=rate.lower,
            upper=rate.upper,
            threshold=rate.threshold,
            confidence=rate.confidence,
            quantile=policy.latency_quantile,
            # Approximate (within 2 %), for people; the verdict uses the exact counts.
            quantile_ms=None if quantile is None or quantile == float("inf") else quantile,
            latency_ms=policy.latency_ms,
            slow_possible=app.slow_possible,
        ),
        message=_rate_message(
            "latency", verdict, definite, possible, threshold=share, confidence=confidence
        ),
    )


def _gauge_limit(policy: EnvironmentPolicy, check: str) -> float:
    limits = {
        "cpu": policy.cpu_percent,
        "memory": policy.memory_percent,
        "disk": policy.disk_percent,
    }
    return limits[check]


def gauge(policy: EnvironmentPolicy, cohort: CohortView, check: str, now: float) -> GaugeResult:
    limit = _gauge_limit(policy, check)
    over: list[str] = []
    peaks: dict[str, float] = {}
    reporting = 0
    for host in cohort.hosts:
        window = cohort.checks(host).get(check)
        if window is None or window.tally.gauge_n == 0:
            continue
        reporting += 1
        if window.over_streak >= policy.gauge_consecutive:
            over.append(host)
            peaks[host] = window.tally.gauge_max or 0.0
    if over:
        verdict = Verdict.FAIL
        message = (
            f"{check}: {', '.join(over)} over {limit:g} % for "
            f"{policy.gauge_consecutive} consecutive samples"
        )
    elif reporting:
        verdict = Verdict.PASS
        message = f"{check}: no host over {limit:g} % for {policy.gauge_consecutive} samples"
    else:
        verdict = Verdict.NO_DATA
        message = f"{check}: no samples in the window"
    return GAUGE_RESULTS[check](
        verdict=verdict,
        cohort=cohort.name,
        window_start=cohort.window_start,
        window_end=now,
        hosts=over or list(cohort.hosts),
        numbers=GaugeNumbers(
            limit=limit,
            consecutive=policy.gauge_consecutive,
            reporting=reporting,
            peaks=peaks,
        ),
        message=message,
    )


def health(policy: EnvironmentPolicy, cohort: CohortView, now: float) -> HealthResult:
    failing: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for host in cohort.hosts:
        for check, window in sorted(cohort.checks(host).items()):
            if window.fail_streak >= policy.health_consecutive_failures:
                failing.setdefault(host, []).append(check)
                if window.last_error:
                    errors[f"{host}/{check}"] = window.last_error[:200]
    if failing:
        verdict = Verdict.FAIL
        message = (
            "health: "
            + "; ".join(f"{host} {', '.join(checks)}" for host, checks in failing.items())
            + f" failed {policy.health_consecutive_failures} times in a row"
        )
    else:
        verdict = Verdict.PASS
        message = "health: no check failing consecutively"
    return HealthResult(
        verdict=verdict,
        cohort=cohort.name,
        window_start=cohort.window_start,
        window_end=now,
        hosts=sorted(failing) or list(cohort.hosts),
        numbers=HealthNumbers(
            consecutive=policy.health_consecutive_failures,
            failing=failing,
            errors=errors,
        ),
        message=message,
    )


def coverage(policy: EnvironmentPolicy, cohort: CohortView, now: float) -> CoverageResult:
    """Fresh data: every host has at least one sample of every required check in this
    window. Nothing is promoted on data the engine has not seen."""
    lacking: dict[str, list[str]] = {}
    for host in cohort.hosts:
        checks = cohort.checks(host)
        for check in policy.required_checks:
            window = checks.get(check)
            if window is None or window.tally.samples == 0:
                lacking.setdefault(host, []).append(check)
    return CoverageResult(
        verdict=Verdict.NO_DATA if lacking else Verdict.PASS,
        cohort=cohort.name,
        window_start=cohort.window_start,
        window_end=now,
        hosts=sorted(lacking) or list(cohort.hosts),
        numbers=CoverageNumbers(lacking=lacking, required=list(policy.required_checks)),
        message=(
            "coverage: no samples yet in this window from "
            + "; ".join(f"{h} ({', '.join(c)})" for h, c in lacking.items())
            if lacking
            else "coverage: every host reported every required check"
        ),
    )


def missing(
    policy: EnvironmentPolicy,
    cohort: CohortView,
    silence: Silence,
    now: float,
) -> tuple[MissingDataResult, dict[str, tuple[float, str]]]:
    """The missing-data rule: NO_DATA while a host is missing, FAIL once one has been
    missing for the environment's grace."""
    absent: dict[str, tuple[float, str]] = {}
    for host in cohort.hosts:
        found = host_missing(
            policy,
            cohort.records(host),
            cohort.checks(host),
            silence=silence,
            reference=cohort.window_start,
            now=now,
        )
        if found is not None:
            absent[host] = found
    expired = sorted(
        h for h, (since, _) in absent.items() if now - since >= policy.missing_data_grace
    )
    if expired:
        verdict = Verdict.FAIL
        message = (
            f"missing data: {', '.join(expired)} without data for over "
            f"{policy.missing_data_grace:g} s"
        )
    elif absent:
        verdict = Verdict.NO_DATA
        message = "missing data: " + "; ".join(
            f"{h} {why}" for h, (_, why) in sorted(absent.items())
        )
    else:
        verdict = Verdict.PASS
        message = "missing data: every host reporting"
    result = MissingDataResult(
        verdict=verdict,
        cohort=cohort.name,
        window_start=cohort.window_start,
        window_end=now,
        hosts=sorted(absent) or list(cohort.hosts),
        numbers=MissingDataNumbers(
            grace=policy.missing_data_grace,
            missing={
                h: Absence(since=since, why=why) for h, (since, why) in sorted(absent.items())
            },
        ),
        message=message,
    )
    return result, absent


def host_missing(
    policy: EnvironmentPolicy,
    record: HostRecord | None,
    checks: Mapping[str, CheckWindow],
    *,
    silence: Silence,
    reference: float,
    now: float,
) -> tuple[float, str] | None:
    """Since when this host has had no data, and why; None while it has data.

    The grace is counted from the host's last sample, whatever arrived after: offline
    by its Will (for the policy's offline grace: a broker that restarts sends every
    host's Will, and until then the host is judged by its silence like one without a
    Will) counts from its last sample before the Will (a partition's Will comes a
    keepalive after the silence began), or from the Will for a host that sent none; a
    silent required check is noticed ``intervals`` of its interval after its last sample
    (after ``reference``, the window's start, for a check not seen yet) and counts from
    that sample. Nothing counts before ``silence.since``: the engine's own downtime is
    not the host's silence, except for a host already missing before the shell's outage
    (``silence.carried``), which stays missing from when it was.
    """
    found = _offline(policy, record, checks, silence, now) or _silent(
        policy, checks, silence, reference, now
    )
    carried = silence.carried.get(record.host) if record is not None else None
    if carried is None:
        return found
    if found is None:
        return carried
    # Counted from ``silence.since`` (the shell's return or the restore), the host's
    # silence began before: when it was carried.
    return found if found[0] > silence.since else (carried[0], found[1])


def _offline(
    policy: EnvironmentPolicy,
    record: HostRecord | None,
    checks: Mapping[str, CheckWindow],
    silence: Silence,
    now: float,
) -> tuple[float, str] | None:
    if (
        record is None
        or record.online
        or silence.offline_for(record.host, now) < policy.offline_after
    ):
        return None
    seen = [w.last_seen for w in checks.values() if w.last_seen is not None]
    last_sign = min(record.changed_at, max(seen)) if seen else record.changed_at
    return max(last_sign, silence.since), "offline"


def _silent(
    policy: EnvironmentPolicy,
    checks: Mapping[str, CheckWindow],
    silence: Silence,
    reference: float,
    now: float,
) -> tuple[float, str] | None:
    for check in policy.required_checks:
        window = checks.get(check)
        last = window.last_seen if window is not None else None
        start = max(last if last is not None else reference, silence.since)
        deadline = start + silence.intervals * silence.interval(check)
        if now >= deadline:
            return start, f"silent: no {check} sample since {start:.0f}"
    return None
