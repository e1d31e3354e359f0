"""Confidence bounds, the latency sketch and how samples become counts."""

from __future__ import annotations

import math
import random

import pytest

from coordinator.engine.stats import (
    LatencySketch,
    _poisson_cdf,
    breaches,
    poisson_lower,
    rate_verdict,
    wilson,
    z_score,
)
from coordinator.engine.windows import gauge_value, tally_sample
from shared.evidence import Verdict
from shared.messages import Histogram, Sample


def plain_wilson_lower(events: int, trials: int, confidence: float) -> float:
    z = z_score(confidence)
    p, n = events / trials, trials
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def test_z_score_is_one_sided() -> None:
    assert z_score(0.999) == pytest.approx(3.0902, abs=1e-4)
    assert z_score(0.95) == pytest.approx(1.6449, abs=1e-4)


def test_wilson_matches_the_closed_form_away_from_tiny_counts() -> None:
    bounds = wilson(30, 1000, 0.999)
    assert bounds.estimate == 0.03
    assert bounds.lower == pytest.approx(plain_wilson_lower(30, 1000, 0.999))
    assert bounds.lower == pytest.approx(0.01727, abs=1e-5)
    assert bounds.upper == pytest.approx(0.05162, abs=1e-5)


def test_one_failed_probe_out_of_five_is_not_evidence_of_a_1_percent_rate() -> None:
    # Plain Wilson says "at least 1.8 %"; the exact small-count bound says 0.02 %.
    assert plain_wilson_lower(1, 5, 0.999) > 0.01
    bounds = wilson(1, 5, 0.999)
    assert bounds.lower == pytest.approx(-math.log(0.999) / 5)
    assert bounds.lower < 0.001
    # ... while five failures out of five is.
    assert wilson(5, 5, 0.999).lower > 0.3


@pytest.mark.parametrize("events", [1, 2, 3, 5, 10])
def test_poisson_lower_bound_is_exact(events: int) -> None:
    lam = poisson_lower(events, 0.999)
    # P(X >= events) at the bound is 1 - confidence.
    assert 1 - _poisson_cdf(events - 1, lam) == pytest.approx(0.001, rel=1e-6)


def test_bounds_are_symmetric_and_monotone() -> None:
    for trials in (5, 40, 80, 500):
        lowers = [wilson(x, trials, 0.999).lower for x in range(trials + 1)]
        assert lowers == sorted(lowers)
        for x in range(trials + 1):
            assert wilson(x, trials, 0.999).lower == pytest.approx(
                1 - wilson(trials - x, trials, 0.999).upper
            )


def test_no_trials_means_no_bound() -> None:
    bounds = wilson(0, 0, 0.999)
    assert (bounds.lower, bounds.upper, bounds.trials) == (0.0, 1.0, 0)
    with pytest.raises(ValueError, match=r"within 0\.\.trials"):
        wilson(6, 5, 0.999)


def test_sketch_quantiles_are_within_two_percent() -> None:
    rng = random.Random(3)
    values = [120 * math.exp(rng.gauss(0, 0.6)) for _ in range(5000)]
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert exact <= estimate <= exact * 1.0201
    assert LatencySketch().quantile(0.95) is None
    beyond = LatencySketch()
    beyond.add(float("inf"), 10)
    assert beyond.quantile(0.5) == math.inf


def test_a_histogram_bucket_straddling_the_threshold_is_possibly_slow_not_surely() -> None:
    sample = Sample(
        check="application",
        time=0.0,
        ok=True,
        values={"requests": 10.0, "errors": 0.0},
        histogram=Histogram(bounds=[500.0, 2000.0], counts=[6, 3, 1]),
    )
    tally = tally_sample(sample, 1000.0)
    assert tally.latency_n == 10
    assert tally.slow_definite == 1  # only the +Inf bucket is surely over 1000 ms
    assert tally.slow_possible == 4  # (500, 2000] may be
    raw = Sample(check="application", time=0.0, ok=True, latencies_ms=[999.0, 1000.0, 1000.5])
    assert (tally_sample(raw, 1000.0).slow_definite, tally_sample(raw, 1000.0).slow_possible) == (
        1,
        1,
    )


def test_counts_are_sane_even_from_a_broken_agent() -> None:
    sample = Sample(check="application", time=0.0, ok=False, values={"requests": 5, "errors": 9})
    tally = tally_sample(sample, 1000.0)
    assert (tally.requests, tally.errors, tally.failures) == (5, 5, 1)


def test_disk_counts_its_fullest_mount() -> None:
    sample = Sample(
        check="disk", time=0.0, ok=True, values={"percent": 40.0, "percent_var": 93.5, "free": 1e9}
    )
    assert gauge_value(sample) == 93.5
    assert gauge_value(Sample(check="cpu", time=0.0, ok=False)) is None


# (events, trials, threshold, pass_events, pass_at_estimate, verdict): the one rate
# verdict the rules, the quick path and the alerts share.
VERDICTS = [
    (0, 0, 0.01, None, False, Verdict.NO_DATA),
    (0, 0, 0.01, None, True, Verdict.NO_DATA),
    (30, 1000, 0.01, None, False, Verdict.FAIL),
    (0, 5000, 0.01, None, False, Verdict.PASS),
    # One failed probe out of five is not a 20 % error rate: inconclusive for a rule,
    # and not clear either for an alert (its estimate is over the threshold).
    (1, 5, 0.01, None, False, Verdict.INCONCLUSIVE),
    (1, 5, 0.01, None, True, Verdict.INCONCLUSIVE),
    # An alert clears on the estimate alone; a rule needs the upper bound under it.
    (5, 1000, 0.01, None, True, Verdict.PASS),
    (5, 1000, 0.01, None, False, Verdict.INCONCLUSIVE),
    # Latency: failed on the surely slow, passed on the possibly slow requests.
    (0, 5000, 0.05, 400, False, Verdict.INCONCLUSIVE),
    (0, 5000, 0.05, 100, False, Verdict.PASS),
    (400, 5000, 0.05, 400, False, Verdict.FAIL),
]


@pytest.mark.parametrize(
    ("events", "trials", "threshold", "pass_events", "at_estimate", "expected"), VERDICTS
)
def test_the_rate_verdict(
    events: int,
    trials: int,
    threshold: float,
    pass_events: int | None,
    at_estimate: bool,
    expected: Verdict,
) -> None:
    verdict = rate_verdict(
        events,
        trials,
        threshold,
        0.999,
        pass_events=pass_events,
        pass_at_estimate=at_estimate,
    )
    assert verdict is expected
    assert breaches(events, trials, threshold, 0.999) is (verdict is Verdict.FAIL)
