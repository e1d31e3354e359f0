"""Canary versus baseline over time, for people: the report's chart and the live
numbers of ``rollguard deploy --wait``.

While a deployment runs, every few seconds the shell records one ``analysis.window``
event per deployment with each cohort's pooled application numbers over that stretch:
requests and errors (probes and real traffic), latency quantiles, and the CPU, memory
and disk gauges (mean and highest over the cohort's hosts). This is a view of
the same samples the engine judges, not an input to any decision; the engine's own
evidence travels with its decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from coordinator.engine import Deployment, Record
from coordinator.engine.windows import GAUGE_CHECKS, gauge_value
from shared.kinds import EventKind
from shared.messages import MetricBatch, Sample

ACTIVE_STATES: Final = frozenset(
    {
        "deploying",
        "baking",
        "held",
        "paused",
        "awaiting_approval",
        "promoting",
        "verifying",
        "rolling_back",
    }
)
# Latency observations kept per cohort and window; beyond it a uniform thinning keeps
# the quantiles honest without unbounded memory.
MAX_LATENCIES: Final = 20_000


@dataclass
class _Tally:
    hosts: set[str] = field(default_factory=set)
    requests: int = 0
    errors: int = 0
    # (latency in ms, weight): raw probe latencies weigh 1, histogram buckets their count.
    latencies: list[tuple[float, int]] = field(default_factory=list)
    # Gauge check -> host -> its percent samples in the window.
    gauges: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add_gauge(self, host: str, check: str, value: float) -> None:
        self.gauges.setdefault(check, {}).setdefault(host, []).append(value)

    def add(self, host: str, sample: Sample) -> None:
        values = sample.values
        self.hosts.add(host)
        requests = int(values.get("requests", 0)) + int(values.get("traffic_requests", 0))
        errors = int(values.get("errors", 0)) + int(values.get("traffic_errors", 0))
        self.requests += requests
        self.errors += min(errors, requests)
        if len(self.latencies) < MAX_LATENCIES:
            self.latencies.extend((latency, 1) for latency in sample.latencies_ms)
            histogram = sample.histogram
            if histogram is not None:
                bounds = [*histogram.bounds, histogram.bounds[-1] if histogram.bounds else 0.0]
                self.latencies.extend(
                    (bound, count)
                    for bound, count in zip(bounds, histogram.counts, strict=True)
                    if count
                )

    def summary(self) -> dict[str, Any]:
        return {
            "hosts": len(self.hosts),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": (self.errors / self.requests) if self.requests else None,
            "p50_ms": weighted_quantile(self.latencies, 0.50),
            "p95_ms": weighted_quantile(self.latencies, 0.95),
            "p99_ms": weighted_quantile(self.latencies, 0.99),
            "gauges": {
                check: _spread(hosts) for check, hosts in sorted(self.gauges.items()) if hosts
            },
        }


def _spread(hosts: dict[str, list[float]]) -> dict[str, Any]:
    """One gauge over a cohort's hosts: as shared.evidence.GaugeSpread."""
    values = [v for samples in hosts.values() for v in samples]
    return {
        "hosts": len(hosts),
        "samples": len(values),
        "mean": round(sum(values) / len(values), 3),
        "max": max(values),
    }


def weighted_quantile(points: list[tuple[float, int]], q: float) -> float | None:
    total = sum(weight for _, weight in points)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for value, weight in sorted(points):
        seen += weight
        if seen >= rank:
            return round(value, 3)
    return round(max(value for value, _ in points), 3)


class SeriesRecorder:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._start: float | None = None
        # host -> (deployment id, cohort), rebuilt at every flush from the engine's view.
        self._cohorts: dict[str, list[tuple[str, str]]] = {}
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def observe(self, batch: MetricBatch) -> None:
        memberships = self._cohorts.get(batch.host)
        if not memberships:
            return
        for sample in batch.samples:
            if sample.check in GAUGE_CHECKS:
                value = gauge_value(sample)
                if value is None or not 0 <= value <= 100:
                    continue  # the engine refuses such a sample too
                for key in memberships:
                    self._tallies.setdefault(key, _Tally()).add_gauge(
                        batch.host, sample.check, value
                    )
                continue
            if sample.check != "application":
                continue
            for key in memberships:
                self._tallies.setdefault(key, _Tally()).add(batch.host, sample)

    def due(self, now: float) -> bool:
        return self._start is None or now - self._start >= self.interval

    def flush(
        self, now: float, deployments: Iterable[Deployment], versions: dict[str, str | None]
    ) -> list[Record]:
        """Close the current window: one Record per running deployment, then regroup
        hosts into cohorts by the version each reports now."""
        records: list[Record] = []
        running = [d for d in deployments if d.phase.value in ACTIVE_STATES]
        if self._start is not None:
            for dep in running:
                cohorts = {
                    name: self._tallies.get((dep.id, name), _Tally()).summary()
                    for name in ("canary", "baseline")
                }
                records.append(
                    Record(
                        time=now,
                        kind=EventKind.ANALYSIS_WINDOW,
                        deployment=dep.id,
                        message=_describe(cohorts),
                        evidence={"start": self._start, "end": now, "cohorts": cohorts},
                    )
                )
        self._start = now
        self._tallies.clear()
        self._cohorts = {}
        for dep in running:
            for host, target in dep.targets.items():
                version = versions.get(host)
                if version == dep.version:
                    cohort = "canary"
                elif version == target.from_version:
                    cohort = "baseline"
                else:
                    continue
                self._cohorts.setdefault(host, []).append((dep.id, cohort))
        return records


def _describe(cohorts: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, numbers in cohorts.items():
        rate = numbers["error_rate"]
        p95 = numbers["p95_ms"]
        parts.append(
            f"{name}: "
            + (f"{rate:.2%} of {numbers['requests']}" if rate is not None else "no requests")
            + (f", p95 {p95:.0f} ms" if p95 is not None else "")
        )
    return "; ".join(parts)
