"""Canary vs baseline numbers per window, from the same samples the engine judges."""

from __future__ import annotations

from coordinator.daemon.series import SeriesRecorder, weighted_quantile
from coordinator.engine import Deployment, Phase
from coordinator.engine.deployment import TargetHost
from shared.evidence import AnalysisWindow, GaugeSpread, decode_evidence
from shared.kinds import EventKind
from shared.messages import Histogram, MetricBatch, Sample


def deployment(phase: Phase = Phase.BAKING) -> Deployment:
    return Deployment(
        id="d1",
        environment="production",
        strategy="canary",
        version="2.0.0",
        from_version="1.0.0",
        actor="t",
        created=0.0,
        updated=0.0,
        phase=phase,
        targets={h: TargetHost(host=h, from_version="1.0.0") for h in ("a", "b", "c")},
    )


def batch(host: str, **values: float) -> MetricBatch:
    sample = Sample(
        check="application",
        time=1.0,
        ok=True,
        values=values,
        latencies_ms=[10.0, 20.0],
        histogram=Histogram(bounds=[100.0], counts=[3, 0]),
    )
    cpu = Sample(check="cpu", time=1.0, ok=True, values={"percent": 5.0, "requests": 99})
    return MetricBatch(host=host, session=1, seq=1, samples=[sample, cpu])


def test_cohorts_follow_the_version_each_host_reports() -> None:
    recorder = SeriesRecorder(5.0)
    versions: dict[str, str | None] = {"a": "2.0.0", "b": "1.0.0", "c": "9.9.9"}
    assert recorder.flush(0.0, [deployment()], versions) == []  # opens the first window
    recorder.observe(batch("a", requests=5, errors=1, traffic_requests=100, traffic_errors=2))
    recorder.observe(batch("b", requests=5, errors=0))
    recorder.observe(batch("c", requests=5, errors=5))  # neither version: not counted
    assert not recorder.due(4.9) and recorder.due(5.0)
    [record] = recorder.flush(5.0, [deployment()], versions)
    assert record.kind == "analysis.window" and record.deployment == "d1"
    canary, baseline = (record.evidence["cohorts"][c] for c in ("canary", "baseline"))
    assert (canary["hosts"], canary["requests"], canary["errors"]) == (1, 105, 3)
    assert canary["error_rate"] == 3 / 105
    assert (baseline["hosts"], baseline["requests"], baseline["errors"]) == (1, 5, 0)
    assert (record.evidence["start"], record.evidence["end"]) == (0.0, 5.0)


def test_finished_deployments_are_not_recorded() -> None:
    recorder = SeriesRecorder(1.0)
    recorder.flush(0.0, [deployment(Phase.COMPLETED)], {"a": "2.0.0"})
    recorder.observe(batch("a", requests=5, errors=0))
    assert recorder.flush(1.0, [deployment(Phase.COMPLETED)], {"a": "2.0.0"}) == []


def test_weighted_quantile() -> None:
    assert weighted_quantile([], 0.5) is None
    points = [(10.0, 1), (20.0, 1), (100.0, 8)]
    assert weighted_quantile(points, 0.1) == 10.0
    assert weighted_quantile(points, 0.2) == 20.0
    assert weighted_quantile(points, 0.95) == 100.0


def test_gauges_are_recorded_per_cohort_as_the_evidence_type() -> None:
    recorder = SeriesRecorder(5.0)
    versions: dict[str, str | None] = {"a": "2.0.0", "b": "1.0.0", "c": "1.0.0"}
    recorder.flush(0.0, [deployment()], versions)
    recorder.observe(batch("a", requests=5, errors=0))  # cpu 5 %
    recorder.observe(batch("b", requests=5, errors=0))
    disk = Sample(check="disk", time=2.0, ok=True, values={"percent": 40.0, "percent_var": 85.5})
    bogus = Sample(check="memory", time=2.0, ok=True, values={"percent": 140.0})
    recorder.observe(MetricBatch(host="c", session=1, seq=2, samples=[disk, bogus]))
    cpu = Sample(check="cpu", time=3.0, ok=True, values={"percent": 65.0})
    recorder.observe(MetricBatch(host="c", session=1, seq=3, samples=[cpu]))
    [record] = recorder.flush(5.0, [deployment()], versions)
    window = decode_evidence(EventKind.ANALYSIS_WINDOW, record.evidence)
    assert isinstance(window, AnalysisWindow)
    canary, baseline = window.cohorts["canary"], window.cohorts["baseline"]
    assert canary.gauges == {"cpu": GaugeSpread(hosts=1, samples=1, mean=5.0, max=5.0)}
    assert baseline.gauges == {
        "cpu": GaugeSpread(hosts=2, samples=2, mean=35.0, max=65.0),
        # The fullest mount counts, as for the engine.
        "disk": GaugeSpread(hosts=1, samples=1, mean=85.5, max=85.5),
    }  # a memory sample over 100 % is dropped, as the engine drops it


def test_windows_recorded_before_gauges_still_decode() -> None:
    old = {
        "start": 0.0,
        "end": 5.0,
        "cohorts": {
            "canary": {
                "hosts": 1,
                "requests": 5,
                "errors": 0,
                "error_rate": 0.0,
                "p50_ms": None,
                "p95_ms": None,
                "p99_ms": None,
            }
        },
    }
    window = decode_evidence(EventKind.ANALYSIS_WINDOW, old)
    assert isinstance(window, AnalysisWindow) and window.cohorts["canary"].gauges == {}
