"""Canary versus baseline: is the new version worse than the hosts still on the old one?

The fixed thresholds (1 %, 1000 ms) catch a release that breaks; they let through one that
doubles the error rate from 0.2 % to 0.4 % or makes every request 20 % slower. These two
rules compare the canary cohort with its baseline on the same window instead:

* ``error_vs_baseline``: the canary's error rate against the baseline's;
* ``latency_vs_baseline``: the share of canary requests slower than the baseline's
  ``latency_quantile`` (its p95 by default) against the baseline's own share, read from
  the latency sketches the agents' probes and histograms fill (works on histogram
  buckets: the edge is a bucket edge, and both cohorts are counted against the same one).

Both are a ratio of two rates, ``r = canary rate / baseline rate``, tested with a mixture
sequential probability ratio test that is safe to judge at every tick (anytime-valid):

Given ``k`` events (errors, or slow requests) in both cohorts together, the number that
fell on the canary is Binomial(k, pi) with ``pi = r n1 / (r n1 + n0)`` (``n1``, ``n0`` the
cohorts' requests; the Poisson approximation to rare events, as in Lindon & Malek,
"Anytime-valid inference for multinomial count data", NeurIPS 2022). Against the null
``r <= allowed`` the likelihood ratio of any alternative ``r' > allowed`` is a
nonnegative supermartingale, and so is a mixture of them (Robbins 1970; Howard, Ramdas,
McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Annals of Statistics 49(2), 2021; Johari, Koomen, Pekelis & Walsh, "Always valid
inference", Operations Research 70(3), 2022). By Ville's inequality the mixture reaches
``1 / (1 - confidence)`` with probability at most ``1 - confidence`` over the whole bake,
however often it is looked at: judging every 5 s costs no extra false alarms, which a
fixed-horizon test judged repeatedly does (Lindon et al. measured 66 false rejections in
100 A/A runs of a repeated Mann-Whitney test). The mixture is discrete: alternatives at
``MULTIPLIERS`` times the allowed ratio, equally weighted, so it is a few logarithms. The
interval in the evidence ("at 99 % confidence at least 1.6x worse") is the confidence
sequence that inverts the same test: the smallest ratio the test does not reject.

The counts are the cohorts' pooled counts, so the test assumes the share of requests
each cohort serves is steady over the window (it is: the cohorts' hosts report at fixed
intervals). To keep a fleet-wide incident from landing on whichever cohort reports
first, both cohorts are judged over a common span: up to the oldest latest sample of
the hosts reporting now, each newer host's latest sample left out, and the canary's
latest sample in the span left out too, so that it lags the baseline rather than leads
it (``span``). A baseline
without data in that span decides nothing (no data, not enforced: it can neither blame
the canary nor hold it; the fixed thresholds decide).

Minimum effect (config ``comparison``, defaults justified in the README):

* errors: fail when at ``confidence`` (99 %) the canary's rate is over ``error_ratio``
  (1.3x) the baseline's *and* over the absolute ``error_floor`` (0.1 %). A doubled rate
  (2x) is 1.54 times the allowed ratio, which an hour of one canary host's traffic (20
  requests/s against nine baseline hosts) shows in 39 of 40 bench/decisions runs (an
  allowed 1.5x caught it in 83 % of hours in a simulation of the counts alone); noise
  between identical versions (1x) stays far under it, and so does a little honest
  difference between hosts. The floor is tested the same
  way (a one-sample mixture test of the canary's rate against it) and both must reject
  (an intersection-union test, still at 1 - confidence): 0.01 % vs 0.02 % is twice as
  bad and still nothing worth rolling back.
* latency: fail when the canary's share of requests slower than the baseline's p95 is
  over ``latency_ratio`` (1.5x) the baseline's. A 20 % slower release raises that share
  2.3x for lognormal latency with a spread of 0.4 (1.8x at 0.6); a 10 % one 1.6x. The edge
  is at least ``latency_floor_ms`` (10 ms): nothing faster is worth a rollback.

Pure: counts in, a verdict and its evidence out; no clock, no IO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, NamedTuple

from coordinator.engine.rules import APPLICATION, CohortView, Silence
from coordinator.engine.stats import LatencySketch
from coordinator.engine.windows import Tally
from shared.config.coordinator import BaselineComparison, EnvironmentPolicy
from shared.evidence import (
    ComparisonNumbers,
    ErrorComparisonResult,
    LatencyComparisonResult,
    Verdict,
)

__all__ = [
    "MULTIPLIERS",
    "Span",
    "compare",
    "floor_log_evalue",
    "ratio_log_evalue",
    "ratio_lower",
    "span",
]

# The alternatives of the mixture, as multiples of the tested ratio: weighted towards
# small effects (a doubled rate is 1.54x the allowed 1.3x); large ones are caught fast
# by any of them.
MULTIPLIERS: Final = (1.15, 1.33, 1.6, 2.0, 3.0, 5.0)
_LOG_WEIGHT: Final = -math.log(len(MULTIPLIERS))
# Bisection of the confidence sequence's lower end, on log(ratio).
_RATIO_RANGE: Final = (1e-3, 1e4)
_PRECISION: Final = 0.001
# A host whose latest application sample is older than this many intervals is not
# reporting now and does not hold the common span back.
_CURRENT_INTERVALS: Final = 1.5


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values)) + _LOG_WEIGHT


def _binomial_llr(events: int, trials: int, p: float, p0: float) -> float:
    """log of the likelihood ratio of Binomial(trials, p) to Binomial(trials, p0)."""
    llr = events * math.log(p / p0) if events else 0.0
    if trials > events:
        llr += (trials - events) * math.log1p(-p) - (trials - events) * math.log1p(-p0)
    return llr


def ratio_log_evalue(x1: int, n1: int, x0: int, n0: int, ratio: float) -> float:
    """log of the mixture e-value against ``canary rate / baseline rate <= ratio``, from
    ``x1`` events in ``n1`` canary requests and ``x0`` in ``n0`` baseline requests."""
    k = x1 + x0
    if k == 0 or n1 <= 0 or n0 <= 0:
        return 0.0

    def share(r: float) -> float:
        return r * n1 / (r * n1 + n0)

    p0 = share(ratio)
    return _log_mean_exp([_binomial_llr(x1, k, share(ratio * c), p0) for c in MULTIPLIERS])


def floor_log_evalue(events: int, trials: int, floor: float) -> float:
    """log of the mixture e-value against ``rate <= floor`` for ``events`` of ``trials``."""
    if trials <= 0:
        return 0.0
    alternatives = [min(floor * c, (1.0 + floor) / 2) for c in MULTIPLIERS]
    return _log_mean_exp([_binomial_llr(events, trials, p, floor) for p in alternatives])


def ratio_lower(x1: int, n1: int, x0: int, n0: int, confidence: float) -> float:
    """The confidence sequence's lower end for the ratio: the smallest ratio the test
    does not reject at ``confidence`` (0 when it rejects none). Bisection on log(ratio),
    to within 0.1 %."""
    level = -math.log(1.0 - confidence)
    low, high = (math.log(v) for v in _RATIO_RANGE)
    if ratio_log_evalue(x1, n1, x0, n0, math.exp(low)) < level:
        return 0.0
    if ratio_log_evalue(x1, n1, x0, n0, math.exp(high)) >= level:
        return _RATIO_RANGE[1]
    while high - low > _PRECISION:
        middle = (low + high) / 2
        if ratio_log_evalue(x1, n1, x0, n0, math.exp(middle)) >= level:
            low = middle
        else:
            high = middle
    return math.exp(low)


class Span(NamedTuple):
    """A cohort's application counts up to the common span's end."""

    requests: int
    errors: int
    sketch: LatencySketch


def span(cohort: CohortView, end: float, *, lead: bool = False) -> Span:
    """``cohort``'s pooled application counts without the latest sample of each host
    whose latest sample arrived after ``end``; with ``lead`` (the canary) also without
    each host's latest sample at or before ``end``.

    Hosts report in turn, so at any cut some hosts' data reaches up to an interval
    further than others': at the onset of a fleet-wide incident the one canary host may
    have reported it while half the baseline has not yet. Leaving the canary's latest
    sample in the span out makes it lag the baseline instead of lead it: an incident's
    onset can then only make the canary look better, never worse (and a test that
    rejects on less of the canary's data is still valid, only a sample later)."""
    pooled = cohort.pooled.get(APPLICATION) or Tally()
    requests, errors = pooled.requests, pooled.errors
    sketch = LatencySketch()
    sketch.merge(pooled.sketch)
    for host in cohort.hosts:
        window = cohort.checks(host).get(APPLICATION)
        if window is None or window.last_seen is None:
            continue
        after = window.last_seen > end
        dropped = [window.last_delta] if after else []
        if lead:
            dropped.append(window.prev_delta if after else window.last_delta)
        for delta in dropped:
            if delta is None:
                continue
            requests -= delta.requests
            errors -= delta.errors
            for index, count in delta.sketch.counts.items():
                sketch.counts[index] = sketch.counts.get(index, 0) - count
            sketch.total -= delta.sketch.total
    return Span(requests=max(0, requests), errors=max(0, min(errors, requests)), sketch=sketch)


def span_end(cohorts: Sequence[CohortView], silence: Silence, now: float) -> float:
    """The end of the span both cohorts have data for: the oldest latest application
    sample of the hosts reporting now."""
    current = now - _CURRENT_INTERVALS * silence.interval(APPLICATION)
    latest = [
        w.last_seen
        for cohort in cohorts
        for host in cohort.hosts
        if (w := cohort.checks(host).get(APPLICATION)) is not None
        and w.last_seen is not None
        and w.last_seen >= current
    ]
    return min(latest) if latest else now


def _count_above(sketch: LatencySketch, edge: int) -> int:
    return sum(c for index, c in sketch.counts.items() if index > edge and c > 0)


def _edge_index(sketch: LatencySketch, quantile: float) -> int | None:
    """The sketch bucket holding the ``quantile`` of ``sketch``; None when empty."""
    total = sum(c for c in sketch.counts.values() if c > 0)
    if total <= 0:
        return None
    rank = max(1, math.ceil(quantile * total))
    seen = 0
    for index in sorted(sketch.counts):
        seen += max(0, sketch.counts[index])
        if seen >= rank:
            return index
    return max(sketch.counts)  # pragma: no cover - ranks never exceed the total


def _index_of(value_ms: float) -> int:
    """The sketch bucket of ``value_ms`` (as LatencySketch files it)."""
    if value_ms <= LatencySketch.FLOOR_MS:
        return math.ceil(math.log(LatencySketch.FLOOR_MS) / math.log(LatencySketch.GAMMA))
    return math.ceil(math.log(value_ms) / math.log(LatencySketch.GAMMA))


def _edge_ms(index: int) -> float:
    return float(LatencySketch.GAMMA**index)


def _ratio(x1: int, n1: int, x0: int, n0: int) -> float | None:
    if n1 <= 0 or n0 <= 0 or x0 <= 0:
        return None
    return (x1 / n1) / (x0 / n0)


class _Test(NamedTuple):
    verdict: Verdict
    numbers: ComparisonNumbers


def _test(
    settings: BaselineComparison,
    x1: int,
    n1: int,
    x0: int,
    n0: int,
    *,
    allowed: float,
    floor: float | None,
    end: float,
    edge_ms: float | None = None,
) -> _Test:
    level = -math.log(1.0 - settings.confidence)
    log_e = ratio_log_evalue(x1, n1, x0, n0, allowed)
    floor_shown = floor is None or floor_log_evalue(x1, n1, floor) >= level
    if n1 <= 0 or n0 <= 0:
        verdict = Verdict.NO_DATA
    elif log_e >= level and floor_shown:
        verdict = Verdict.FAIL
    else:
        verdict = Verdict.PASS
    numbers = ComparisonNumbers(
        canary_events=x1,
        canary_trials=n1,
        baseline_events=x0,
        baseline_trials=n0,
        canary_rate=x1 / n1 if n1 > 0 else 0.0,
        baseline_rate=x0 / n0 if n0 > 0 else 0.0,
        ratio=_ratio(x1, n1, x0, n0),
        lower=ratio_lower(x1, n1, x0, n0, settings.confidence) if n1 > 0 and n0 > 0 else 0.0,
        allowed=allowed,
        floor=floor,
        floor_shown=floor_shown,
        confidence=settings.confidence,
        log_evalue=log_e,
        span_end=end,
        quantile=None if edge_ms is None else settings.latency_quantile,
        slower_than_ms=edge_ms,
    )
    return _Test(verdict, numbers)


def _times(value: float) -> str:
    return f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def _message(rule: str, what: str, verdict: Verdict, n: ComparisonNumbers) -> str:
    if verdict is Verdict.NO_DATA:
        side = "canary" if n.canary_trials <= 0 else "baseline"
        return (
            f"{rule}: no {side} requests in the judged span; nothing compared, "
            "the fixed thresholds decide"
        )
    head = (
        f"{rule}: canary {n.canary_rate:.2%} vs baseline {n.baseline_rate:.2%} {what} of "
        f"{n.canary_trials:,} and {n.baseline_trials:,} requests"
    )
    confidence = f"{n.confidence:.0%}" if n.confidence * 100 % 1 == 0 else f"{n.confidence:.1%}"
    bound = f"at {confidence} confidence at least {_times(n.lower)} worse"
    if verdict is Verdict.FAIL:
        tail = f"; {bound}; over the allowed {_times(n.allowed)}"
        if n.floor is not None and n.slower_than_ms is None:
            tail += f" and over the floor of {n.floor:.2%}"
        return head + tail
    if n.lower > n.allowed and not n.floor_shown and n.floor is not None:
        return f"{head}; {bound}, but not shown over the floor of {n.floor:.2%}"
    return f"{head}; not shown worse than the allowed {_times(n.allowed)}"


def _enforced(policy: EnvironmentPolicy, verdict: Verdict) -> bool:
    """Whether the verdict counts. Without data on either side the comparison decides
    nothing: it neither fails the canary nor holds it (a baseline that is unreachable,
    or silent since a restart, must not wedge a rollout); the fixed thresholds judge."""
    return policy.comparison.mode == "enforce" and verdict is not Verdict.NO_DATA


def compare(
    policy: EnvironmentPolicy,
    canary: CohortView,
    baseline: CohortView | None,
    silence: Silence,
    now: float,
) -> list[ErrorComparisonResult | LatencyComparisonResult]:
    """Both comparisons of ``canary`` with ``baseline``; none without a baseline or with
    the comparison off."""
    settings = policy.comparison
    if settings.mode == "off" or baseline is None or not baseline.hosts:
        return []
    end = span_end((canary, baseline), silence, now)
    mine, theirs = span(canary, end, lead=True), span(baseline, end)
    suffix = "" if settings.mode == "enforce" else " (reported only)"

    errors = _test(
        settings,
        mine.errors,
        mine.requests,
        theirs.errors,
        theirs.requests,
        allowed=settings.error_ratio,
        floor=settings.error_floor,
        end=end,
    )
    error_result = ErrorComparisonResult(
        verdict=errors.verdict,
        cohort=canary.name,
        window_start=canary.window_start,
        window_end=now,
        enforced=_enforced(policy, errors.verdict),
        hosts=list(canary.hosts),
        numbers=errors.numbers,
        message=_message("error_vs_baseline", "errors", errors.verdict, errors.numbers) + suffix,
    )

    edge = _edge_index(theirs.sketch, settings.latency_quantile)
    floor_index = _index_of(settings.latency_floor_ms)
    m1 = sum(c for c in mine.sketch.counts.values() if c > 0)
    m0 = sum(c for c in theirs.sketch.counts.values() if c > 0)
    if edge is None:
        y1 = y0 = 0
        edge_ms: float | None = None
    else:
        edge = max(edge, floor_index)
        y1, y0 = _count_above(mine.sketch, edge), _count_above(theirs.sketch, edge)
        edge_ms = _edge_ms(edge)
    slow = _test(
        settings,
        y1,
        m1,
        y0,
        m0,
        allowed=settings.latency_ratio,
        floor=None,
        end=end,
        edge_ms=edge_ms,
    )
    what = "slower than the baseline's" + (
        f" p{settings.latency_quantile * 100:g} ({edge_ms:.0f} ms)" if edge_ms is not None else ""
    )
    latency_result = LatencyComparisonResult(
        verdict=slow.verdict,
        cohort=canary.name,
        window_start=canary.window_start,
        window_end=now,
        enforced=_enforced(policy, slow.verdict),
        hosts=list(canary.hosts),
        numbers=slow.numbers,
        message=_message("latency_vs_baseline", what, slow.verdict, slow.numbers) + suffix,
    )
    return [error_result, latency_result]
