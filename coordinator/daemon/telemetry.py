"""The coordinator's Prometheus metrics, in a registry of its own (not the global one),
so several coordinators in one test process never collide.

Every label set is bounded: the analysis gauges cover only the deployments judged now
(at most one per environment) and the rules the engine has; the per-host gauges cover at
most ``http.metrics_max_hosts`` hosts (by host id; ``rollguard_host_series_omitted``
says how many more there are); alerts are counted by rule, notifications by
environment, kind and outcome. deploy/grafana/rollguard.json is built on these names.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.evidence import Judgement, Verdict
from shared.phases import Phase
from shared.views import HostView

# A rule's numbers exported as gauges, by the name of the field in its evidence.
RULE_NUMBERS = {
    "estimate": "estimate",
    "lower": "lower",
    "upper": "upper",
    "threshold": "threshold",
    "limit": "threshold",
}
# Per-host gauges: (metric suffix, check, value).
HOST_GAUGES = (
    ("cpu_percent", "cpu", "percent"),
    ("memory_percent", "memory", "percent"),
    ("disk_percent", "disk", "percent"),
)


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
            "Messages refused (malformed, oversized, invalid, unknown topic, host mismatch, "
            "retained, future)",
            ["reason"],
            registry=self.registry,
        )
        self.handler_errors = Counter(
            "rollguard_message_handler_errors_total",
            "Valid messages whose handling raised (dropped; the session stays up), "
            "by message kind and error",
            ["kind", "error"],
            registry=self.registry,
        )
        self.clock_offset = Gauge(
            "rollguard_host_clock_offset_max_seconds",
            "The largest estimated offset between a host's clock and the coordinator's, "
            "in either direction, over every host",
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
        # Where a decision's time goes on its way out (bench/coordinator_ingest measures
        # the whole path): the engine's step, then the wait for and the store's commit.
        self.engine_step = Histogram(
            "rollguard_engine_step_seconds",
            "Time the engine took for one event, by event",
            ["event"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.step_stored = Histogram(
            "rollguard_step_stored_seconds",
            "From an engine step to its commit in the store (its commands are published "
            "after), queue wait included",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=self.registry,
        )
        self.deployments = Gauge(
            "rollguard_deployments", "Deployments by state", ["state"], registry=self.registry
        )

        analysis = ["deployment", "rule", "cohort"]
        self.rule_estimate = Gauge(
            "rollguard_rule_estimate",
            "A judged rule's estimate now (error rate, share of slow requests...)",
            analysis,
            registry=self.registry,
        )
        self.rule_lower = Gauge(
            "rollguard_rule_lower_bound",
            "A judged rule's lower confidence bound",
            analysis,
            registry=self.registry,
        )
        self.rule_upper = Gauge(
            "rollguard_rule_upper_bound",
            "A judged rule's upper confidence bound",
            analysis,
            registry=self.registry,
        )
        self.rule_threshold = Gauge(
            "rollguard_rule_threshold",
            "A judged rule's threshold (a rate, or a gauge's limit in percent)",
            analysis,
            registry=self.registry,
        )
        self.rule_verdict = Gauge(
            "rollguard_rule_verdict",
            "1 for a judged rule's current verdict, 0 for the others",
            [*analysis, "verdict"],
            registry=self.registry,
        )
        self.alerts_firing = Gauge(
            "rollguard_alerts_firing",
            "Alerts firing now, by rule",
            ["rule"],
            registry=self.registry,
        )
        host = ["host", "environment"]
        self.host_gauges = {
            suffix: Gauge(
                f"rollguard_host_{suffix}",
                f"A host's last {check} {value} reported",
                host,
                registry=self.registry,
            )
            for suffix, check, value in HOST_GAUGES
        }
        self.host_error_rate = Gauge(
            "rollguard_host_error_rate",
            "A host's errors out of requests in its last application sample",
            host,
            registry=self.registry,
        )
        self.host_online = Gauge(
            "rollguard_host_online",
            "1 while a host's agent is online",
            host,
            registry=self.registry,
        )
        self.host_series_omitted = Gauge(
            "rollguard_host_series_omitted",
            "Hosts without per-host gauges (beyond http.metrics_max_hosts)",
            registry=self.registry,
        )
        self.notifications = Counter(
            "rollguard_notifier_deliveries_total",
            "Webhook deliveries by outcome (sent, retried, failed, dropped; one per "
            "notification and target) and duplicates refused",
            ["environment", "kind", "outcome"],
            registry=self.registry,
        )
        self.notification_failures = Counter(
            "rollguard_notifier_failures_total",
            "Webhook deliveries that never reached their target (failed or dropped)",
            ["environment", "kind"],
            registry=self.registry,
        )

    def notified(self, outcome: str, environment: str, kind: str) -> None:
        """Count one notifier outcome (the Notifier's on_outcome)."""
        self.notifications.labels(environment or "-", kind, outcome).inc()
        if outcome in ("failed", "dropped"):
            self.notification_failures.labels(environment or "-", kind).inc()

    def refresh_analysis(self, judgements: Mapping[str, Judgement]) -> None:
        """The judged deployments' rules as they stand now."""
        gauges = {
            "estimate": self.rule_estimate,
            "lower": self.rule_lower,
            "upper": self.rule_upper,
            "threshold": self.rule_threshold,
        }
        for gauge in (*gauges.values(), self.rule_verdict):
            gauge.clear()
        for deployment, judgement in judgements.items():
            for result in judgement.rules:
                labels = (deployment, result.rule, result.cohort)
                numbers = getattr(result, "numbers", None)
                for field, name in RULE_NUMBERS.items():
                    value = getattr(numbers, field, None)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        gauges[name].labels(*labels).set(value)
                for verdict in Verdict:
                    self.rule_verdict.labels(*labels, verdict.value).set(
                        1 if result.verdict is verdict else 0
                    )

    def refresh_alerts(self, rules: Iterable[str]) -> None:
        self.alerts_firing.clear()
        for rule, count in Tally(rules).items():
            self.alerts_firing.labels(rule).set(count)

    def refresh_hosts(self, hosts: list[HostView], cap: int) -> None:
        """The per-host gauges of the first ``cap`` hosts by id."""
        for gauge in (*self.host_gauges.values(), self.host_error_rate, self.host_online):
            gauge.clear()
        shown = sorted(hosts, key=lambda h: h.host)[:cap]
        self.host_series_omitted.set(len(hosts) - len(shown))
        for view in shown:
            labels = (view.host, view.environment)
            self.host_online.labels(*labels).set(1 if view.online else 0)
            for suffix, check, value in HOST_GAUGES:
                number = view.value(check, value)
                if number is not None:
                    self.host_gauges[suffix].labels(*labels).set(number)
            requests = sum(
                view.value("application", name) or 0.0 for name in ("requests", "traffic_requests")
            )
            errors = sum(
                view.value("application", name) or 0.0 for name in ("errors", "traffic_errors")
            )
            if requests > 0:
                self.host_error_rate.labels(*labels).set(min(errors, requests) / requests)

    def refresh(self, online: int, phases: Iterable[Phase]) -> None:
        """Update the gauges that are read off state at scrape time."""
        self.hosts_online.set(online)
        self.deployments.clear()
        counts: dict[str, int] = {}
        for phase in phases:
            counts[phase.value] = counts.get(phase.value, 0) + 1
        for state, count in counts.items():
            self.deployments.labels(state).set(count)
