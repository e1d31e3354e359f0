"""What one sample contributes to a window: probes and scraped real traffic pooled."""

from __future__ import annotations

from coordinator.engine.windows import tally_sample
from shared.messages import Histogram, Sample


def app(**values: float) -> Sample:
    return Sample(check="application", time=1.0, ok=True, values=values)


def test_probe_and_traffic_counts_are_pooled() -> None:
    tally = tally_sample(app(requests=5, errors=1, traffic_requests=200, traffic_errors=3), 1000.0)
    assert (tally.requests, tally.errors) == (205, 4)


def test_traffic_alone_counts() -> None:
    tally = tally_sample(
        app(traffic_requests=120, traffic_errors=0, traffic_client_errors=7), 1000.0
    )
    # 4xx answers are the client's fault, not the release's: not errors.
    assert (tally.requests, tally.errors) == (120, 0)


def test_no_request_counts_means_no_rate_evidence() -> None:
    tally = tally_sample(app(error_rate=0.5, p95_ms=30.0), 1000.0)
    assert (tally.requests, tally.errors) == (0, 0)


def test_errors_never_exceed_requests() -> None:
    tally = tally_sample(app(requests=2, errors=9, traffic_requests=1, traffic_errors=5), 1000.0)
    assert (tally.requests, tally.errors) == (3, 3)


def test_histogram_latencies_count_as_observations() -> None:
    sample = Sample(
        check="application",
        time=1.0,
        ok=True,
        values={"traffic_requests": 6},
        histogram=Histogram(bounds=[100.0, 2000.0], counts=[4, 1, 1]),
    )
    tally = tally_sample(sample, 1000.0)
    assert tally.latency_n == 6
    # One observation is surely over 1000 ms (beyond 2000), two may be (100..2000 and >2000).
    assert (tally.slow_definite, tally.slow_possible) == (1, 2)
