"""The coordinator's Prometheus metrics, in a registry of its own (not the global one),
so several coordinators in one test process never collide."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.phases import Phase


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter(
            "rollguard_messages_ingested_total",
            "Valid messages ingested, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "rollguard_messages_rejected_total",
            "Messages refused (malformed, oversized, invalid, unknown topic, host mismatch)",
            ["reason"],
            registry=self.registry,
        )
        self.stale = Counter(
            "rollguard_statuses_stale_total",
            "Host statuses ignored as older than what the host already said",
            registry=self.registry,
        )
        self.hosts_online = Gauge(
            "rollguard_hosts_online", "Hosts whose agent is online", registry=self.registry
        )
        self.decisions = Counter(
            "rollguard_decisions_total",
            "Engine decisions, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.command_rtt = Histogram(
            "rollguard_command_roundtrip_seconds",
            "From a command's first publish to its final result",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.deployments = Gauge(
            "rollguard_deployments", "Deployments by state", ["state"], registry=self.registry
        )

    def refresh(self, online: int, phases: Iterable[Phase]) -> None:
        """Update the gauges that are read off state at scrape time."""
        self.hosts_online.set(online)
        self.deployments.clear()
        counts: dict[str, int] = {}
        for phase in phases:
            counts[phase.value] = counts.get(phase.value, 0) + 1
        for state, count in counts.items():
            self.deployments.labels(state).set(count)
