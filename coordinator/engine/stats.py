"""Bounds on rates from the counts behind them, and a small latency sketch.

Every rate the engine judges is a binomial proportion: errors out of requests, or
requests slower than the latency threshold out of all requests (a p95 over 1000 ms is
exactly "more than 5 % of requests took over 1000 ms"). A rate is judged with one-sided
bounds at the environment's confidence: it fails only when the lower bound is over the
threshold, passes only when the upper bound is under it, and is inconclusive between.

The bounds are Wilson score bounds with Brown, Cai & DasGupta's correction for tiny
counts ("Interval Estimation for a Binomial Proportion", Statistical Science 16(2),
2001, section 4.1.1): for 1 or 2 events in up to 50 trials, or 1 to 3 events in 51 to
100, the Wilson lower bound is far too high, and the exact Poisson bound replaces it.
It matters here: the plain Wilson bound at 99.9 % puts one failed probe out of five at
a true rate of at least 1.8 %, over production's 1 % threshold, so plain Wilson rolled
back 1 % of good low-volume canaries in simulation, the corrected bound 0.05 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from statistics import NormalDist
from typing import Final, NamedTuple

from shared.evidence import Verdict


class Bounds(NamedTuple):
    """A proportion ``events / trials`` with one-sided bounds at some confidence."""

    events: int
    trials: int
    estimate: float
    lower: float
    upper: float


@lru_cache(maxsize=64)
def z_score(confidence: float) -> float:
    """The one-sided standard normal quantile for ``confidence`` (0.999 -> 3.09)."""
    return NormalDist().inv_cdf(confidence)


def _poisson_cdf(k: int, lam: float) -> float:
    """P(Poisson(lam) <= k)."""
    term = math.exp(-lam)
    total = term
    for i in range(1, k + 1):
        term *= lam / i
        total += term
    return total


@lru_cache(maxsize=4096)
def poisson_lower(events: int, confidence: float) -> float:
    """The exact one-sided lower bound on a Poisson mean after ``events`` events:
    the ``lam`` with P(Poisson(lam) >= events) = 1 - confidence."""
    if events <= 0:
        return 0.0
    low, high = 0.0, float(events)
    # P(X <= events - 1) falls as lam rises; bisect to where it equals `confidence`.
    for _ in range(80):
        middle = (low + high) / 2
        if _poisson_cdf(events - 1, middle) > confidence:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _small_count_limit(trials: int) -> int:
    # Brown, Cai & DasGupta's x* for the modified Wilson interval.
    if trials <= 50:
        return 2
    if trials <= 100:
        return 3
    return 0


# Beyond this many trials a bound's width is under 1e-100: the estimate itself.
MAX_TRIALS: Final = 10**200


def wilson(events: int, trials: int, confidence: float) -> Bounds:
    """One-sided bounds at ``confidence`` on the proportion ``events / trials``."""
    if trials <= 0:
        return Bounds(0, 0, 0.0, 0.0, 1.0)
    if not 0 <= events <= trials:
        raise ValueError(f"events must be within 0..trials, got {events}/{trials}")
    z = z_score(confidence)
    # int / int is exact for any size; beyond float range the bounds are the estimate
    # anyway (the engine never counts that many: windows.untrusted), so n is capped
    # rather than overflowing.
    p = events / trials
    n = float(min(trials, MAX_TRIALS))
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denominator = 1 + z2 / n
    lower = max(0.0, (centre - spread) / denominator)
    upper = min(1.0, (centre + spread) / denominator)
    limit = _small_count_limit(trials)
    if 1 <= events <= limit:
        lower = poisson_lower(events, confidence) / n
    if 1 <= trials - events <= limit:
        upper = 1.0 - poisson_lower(trials - events, confidence) / n
    return Bounds(events, trials, p, lower, upper)


def breaches(events: int, trials: int, threshold: float, confidence: float) -> bool:
    """Whether the data says the true rate ``events / trials`` is over ``threshold``:
    its lower bound at ``confidence`` is. Never without trials."""
    return trials > 0 and wilson(events, trials, confidence).lower > threshold


def rate_verdict(
    events: int,
    trials: int,
    threshold: float,
    confidence: float,
    *,
    pass_events: int | None = None,
    pass_at_estimate: bool = False,
) -> Verdict:
    """The one verdict on a rate, for the deployment's rules, the quick path of every
    metric batch (``breaches``, its FAIL) and the fleet alerts.

    FAIL when the data says the true rate of ``events`` is over ``threshold``; PASS when
    it says the rate of ``pass_events`` (default ``events``; latency fails on the surely
    slow requests and passes on the possibly slow ones) is under it (its upper bound
    is), or with ``pass_at_estimate`` when its estimate is at or under it (an alert
    clears as soon as the rate looks fine); INCONCLUSIVE between; NO_DATA without
    trials. A bound is computed only when the verdict needs it.
    """
    if trials <= 0:
        return Verdict.NO_DATA
    good = events if pass_events is None else pass_events
    if pass_at_estimate and good / trials <= threshold:
        return Verdict.PASS
    if breaches(events, trials, threshold, confidence):
        return Verdict.FAIL
    if not pass_at_estimate and wilson(good, trials, confidence).upper < threshold:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


class LatencySketch:
    """Latency counts in logarithmic buckets, mergeable, for quantiles in evidence.

    Bucket ``i`` holds values in (GAMMA**(i-1), GAMMA**i] ms, so a quantile read back is
    at most 2 % above the true one. Decisions never depend on it: they use exact counts
    of slow requests (see windows.Tally); the sketch only reports what the p95 was.
    """

    GAMMA: Final = 1.02
    _LOG_GAMMA: Final = math.log(1.02)
    # Values at or below this share one bucket; nothing faster is worth telling apart.
    FLOOR_MS: Final = 0.01
    _FLOOR_INDEX: Final = math.ceil(math.log(0.01) / math.log(1.02))
    # Observations only known to be above a histogram's last bound.
    _INFINITE: Final = 1 << 30

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def _index(self, value_ms: float) -> int:
        if math.isinf(value_ms) or math.isnan(value_ms):
            return self._INFINITE
        if value_ms <= self.FLOOR_MS:
            return self._FLOOR_INDEX
        return max(self._FLOOR_INDEX, math.ceil(math.log(value_ms) / self._LOG_GAMMA))

    def add(self, value_ms: float, count: int = 1) -> None:
        if count <= 0:
            return
        index = self._index(value_ms)
        self.counts[index] = self.counts.get(index, 0) + count
        self.total += count

    def merge(self, other: LatencySketch) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total

    def without(self, others: Iterable[LatencySketch]) -> LatencySketch | None:
        """A copy of this sketch with ``others`` (each merged into it before) taken back
        out: counts add up exactly, so a pool less a few members costs their buckets,
        not a merge of every other member. None if one of them was not in it."""
        out = LatencySketch()
        out.counts = dict(self.counts)
        out.total = self.total
        for other in others:
            for index, count in other.counts.items():
                left = out.counts.get(index, 0) - count
                if left < 0:
                    return None
                if left:
                    out.counts[index] = left
                else:
                    del out.counts[index]
            out.total -= other.total
        return out

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the ``q`` quantile; None when empty,
        ``inf`` when it lies beyond a histogram's last bound."""
        if self.total == 0:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                if index == self._INFINITE:
                    return math.inf
                return float(self.GAMMA**index)
        return math.inf  # pragma: no cover - ranks never exceed the total
