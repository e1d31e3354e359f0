"""The coordinator's configuration: daemon settings and per-environment rollout policy.

Each environment has its own policy type so that a partial ``[environments.staging]``
table keeps staging's guide defaults (blue-green, 5 %) for the keys it leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final, Literal

from msgspec import Meta, field

from shared.config.common import (
    LogConfig,
    LogLevel,
    MqttConfig,
    Port,
    Seconds,
    _Config,
    log_field,
    mqtt_field,
)

Fraction = Annotated[float, Meta(gt=0, lt=1)]
Percent = Annotated[float, Meta(gt=0, le=100)]
Strategy = Literal["canary", "blue-green", "direct"]
# The agent's check names (shared.messages.CheckName), as config keys and list items.
CheckName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class CanaryPolicy(_Config, kw_only=True, frozen=True):
    initial_percent: Percent = 10.0
    steps: list[Percent] = field(default_factory=lambda: [25.0, 50.0, 100.0])
    first_bake: Seconds = 3600.0
    step_bake: Seconds = 900.0
    post_watch: Seconds = 3600.0
    # Canary hosts are spread across the values of this host label.
    spread_label: str = "zone"
    # Hold for an operator's approve before the step to 100 %.
    approval_before_full: bool = False

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100.0:
            raise ValueError("steps must end at 100")
        previous = self.initial_percent
        for step in self.steps:
            if step <= previous:
                raise ValueError("steps must rise above initial_percent and each other")
            previous = step


class BlueGreenPolicy(_Config, kw_only=True, frozen=True):
    # Health checks on the inactive slot must pass for this long before the switch.
    health_window: Seconds = 300.0
    watch: Seconds = 3600.0


class DirectPolicy(_Config, kw_only=True, frozen=True):
    verify_window: Seconds = 300.0


class PreflightCommand(_Config, kw_only=True, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    argv: Annotated[list[str], Meta(min_length=1)]
    timeout: Seconds = 600.0


class Webhook(_Config, kw_only=True, frozen=True):
    url: str
    format: Literal["slack", "json"] = "json"
    timeout: Seconds = 5.0


ComparisonMode = Literal["enforce", "report", "off"]


class BaselineComparison(_Config, kw_only=True, frozen=True):
    """Canary versus baseline (coordinator/engine/compare.py): an anytime-valid test of
    whether the canary is worse than the hosts still on the stable version, judged only
    in steps that have a baseline. ``enforce`` rolls back on it, ``report`` records it
    without acting, ``off`` does not compute it."""

    mode: ComparisonMode = "enforce"
    # Fail when the canary's error rate is surely over this multiple of the baseline's
    # (a doubled rate is caught, noise between identical versions is not)...
    error_ratio: Annotated[float, Meta(ge=1, le=100)] = 1.3
    # ...and surely over this absolute rate (0.01 % vs 0.02 % is not worth a rollback).
    error_floor: Fraction = 0.001
    # Fail when the canary's share of requests slower than the baseline's
    # ``latency_quantile`` is surely over this multiple of the baseline's share (a
    # 20 % slower release more than doubles it; see compare.py).
    latency_ratio: Annotated[float, Meta(ge=1, le=100)] = 1.5
    latency_quantile: Fraction = 0.95
    # The latency edge is at least this: nothing faster is worth a rollback.
    latency_floor_ms: Annotated[float, Meta(ge=0)] = 10.0
    # The test's confidence: at most 1 - confidence of good releases fail it, however
    # often it is judged.
    confidence: Fraction = 0.99


def _reported_comparison() -> BaselineComparison:
    return BaselineComparison(mode="report")


class EnvironmentPolicy(_Config, kw_only=True, frozen=True):
    strategy: Strategy
    # Error-rate rollback threshold as a fraction; None reports without rolling back.
    error_rate: Fraction | None
    log_level: LogLevel
    latency_ms: Annotated[float, Meta(gt=0)] = 1000.0
    latency_quantile: Fraction = 0.95
    cpu_percent: Percent = 80.0
    memory_percent: Percent = 90.0
    disk_percent: Percent = 90.0
    # A gauge breaches after this many consecutive samples over its threshold.
    gauge_consecutive: Annotated[int, Meta(ge=1)] = 3
    health_consecutive_failures: Annotated[int, Meta(ge=1)] = 3
    # Rates fail only when the lower bound at this confidence is over the threshold.
    confidence: Fraction = 0.999
    # A host silent for this many of its check intervals has no data.
    silent_intervals: Annotated[int, Meta(ge=1)] = 3
    # How long a canary host may have no data before the deployment fails.
    missing_data_grace: Seconds = 300.0
    # A canary breach is judged against the baseline's data of the same window; while
    # the baseline has none yet, the decision waits this many of the check's intervals
    # from the window's start before it blames the release.
    baseline_wait_intervals: Annotated[int, Meta(ge=0, le=100)] = 3
    # A command not acknowledged (succeeded or failed) within this fails the step.
    ack_timeout: Seconds = 300.0
    # A host offline (its Will) for the offline grace, or silent for the missing-data
    # grace, is unreachable: a step neither commands nor waits for it. Past this share of
    # the deployment's target hosts unreachable, the step holds for an operator instead
    # of going on.
    unreachable_share: Fraction = 0.1
    # How long a host's Will may say it is offline before the host counts as
    # unreachable, from its offline status or the coordinator's reconnection to the
    # broker, whichever is later. A broker that restarts publishes every host's Will,
    # and the agents reconnect within their reconnect_max (30 s by default): that is not
    # a fleet dying. Below ack_timeout, so that a host that really died is dropped from
    # its step before its command would fail the step. Unset: 60 s, or half the
    # ack_timeout when that is shorter (see ``offline_after``).
    offline_grace: Seconds | None = None
    # At the end of a bake an inconclusive verdict extends the bake once by this
    # fraction of it, then holds for an operator.
    inconclusive_extension: Annotated[float, Meta(ge=0, le=10)] = 0.5
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    # Enforced in production's canary steps; reported elsewhere (see each environment).
    comparison: BaselineComparison = field(default_factory=_reported_comparison)
    blue_green: BlueGreenPolicy = field(default_factory=BlueGreenPolicy)
    direct: DirectPolicy = field(default_factory=DirectPolicy)
    preflight: list[PreflightCommand] = []
    # Post-deployment verification (the same shape as preflight): run once every step has
    # passed and every host reports the new version; all must succeed before the
    # deployment completes, and a failure or a timeout rolls it back.
    verify: list[PreflightCommand] = []
    webhooks: list[Webhook] = []
    # The cache check's hit rate (agent/checks/cache.py: hits over hits and misses in
    # its interval): a host whose rate stays under this fraction for alerts.fire_after
    # samples raises a fleet alert, resolved after alerts.resolve_after samples at or
    # over it plus alerts.hysteresis_percent points. None (the default: the guide
    # gives no threshold) reports the rate without judging it.
    cache_hit_rate: Fraction | None = None
    # Checks every judged host must report: without them a host has no data and is
    # never promoted. The application check carries the error rate and latency.
    required_checks: list[CheckName] = field(default_factory=lambda: ["application"])

    def __post_init__(self) -> None:
        if self.offline_grace is not None and self.offline_grace >= self.ack_timeout:
            raise ValueError(
                f"offline_grace ({self.offline_grace:g} s) must be below ack_timeout "
                f"({self.ack_timeout:g} s): a host that died would fail its step first"
            )
        if len(set(self.required_checks)) != len(self.required_checks):
            raise ValueError("required_checks must not repeat a check")
        names = [command.name for command in self.preflight]
        if len(set(names)) != len(names):
            raise ValueError("preflight command names must be unique")
        names = [command.name for command in self.verify]
        if len(set(names)) != len(names):
            raise ValueError("verify command names must be unique")

    @property
    def offline_after(self) -> float:
        """The offline grace in force: ``offline_grace``, or by default 60 s or half the
        ack_timeout, whichever is shorter."""
        if self.offline_grace is not None:
            return self.offline_grace
        return min(60.0, self.ack_timeout / 2)


class DevelopmentPolicy(EnvironmentPolicy, kw_only=True, frozen=True):
    strategy: Strategy = "direct"
    error_rate: Fraction | None = None
    log_level: LogLevel = "debug"


class StagingPolicy(EnvironmentPolicy, kw_only=True, frozen=True):
    strategy: Strategy = "blue-green"
    error_rate: Fraction | None = 0.05
    log_level: LogLevel = "info"


class ProductionPolicy(EnvironmentPolicy, kw_only=True, frozen=True):
    strategy: Strategy = "canary"
    error_rate: Fraction | None = 0.01
    log_level: LogLevel = "warning"
    comparison: BaselineComparison = field(default_factory=BaselineComparison)


class Environments(_Config, kw_only=True, frozen=True):
    development: DevelopmentPolicy = field(default_factory=DevelopmentPolicy)
    staging: StagingPolicy = field(default_factory=StagingPolicy)
    production: ProductionPolicy = field(default_factory=ProductionPolicy)

    def get(self, name: str) -> EnvironmentPolicy:
        policy: EnvironmentPolicy = getattr(self, name)
        return policy


class AlertPolicy(_Config, kw_only=True, frozen=True):
    """The guide's alert thresholds, judged on every host, deployment or not."""

    enabled: bool = True
    error_rate: Fraction = 0.01
    latency_ms: Annotated[float, Meta(gt=0)] = 1000.0
    cpu_percent: Percent = 80.0
    memory_percent: Percent = 90.0
    disk_percent: Percent = 90.0
    # Fire after this many consecutive breaching samples; resolve after as many clear.
    fire_after: Annotated[int, Meta(ge=1)] = 3
    resolve_after: Annotated[int, Meta(ge=1)] = 3
    # A gauge must fall this many points below its threshold to count as clear.
    hysteresis_percent: Annotated[float, Meta(ge=0, le=50)] = 5.0
    # Rates are pooled over this much of each host's recent samples and judged with a
    # confidence bound, as in a deployment: one failed probe of five is not 20 %.
    rate_window: Seconds = 300.0
    confidence: Fraction = 0.999
    latency_quantile: Fraction = 0.95
    # A host that sends nothing for this many intervals of a check it reports is silent.
    silent_intervals: Annotated[int, Meta(ge=1)] = 3


# The agent's default check intervals (design section 3).
GUIDE_CHECK_INTERVALS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "application": 10.0,
        "database": 30.0,
        "network": 30.0,
        "cpu": 60.0,
        "memory": 60.0,
        "cache": 60.0,
        "disk": 300.0,
    }
)


def _guide_check_intervals() -> dict[str, float]:
    return dict(GUIDE_CHECK_INTERVALS)


class EngineConfig(_Config, kw_only=True, frozen=True):
    """How the decision engine keeps time; the rollout policy is per environment."""

    # The interval each check runs at on the agents, to tell a silent host from a slow
    # check. A check not named here keeps the guide's interval, or ``default_interval``
    # for a check the guide does not know.
    check_intervals: dict[CheckName, Seconds] = field(default_factory=_guide_check_intervals)
    default_interval: Seconds = 60.0
    # While anything is in flight the engine asks to be woken at least this often, to
    # notice silence, timeouts and the end of bakes.
    housekeeping: Seconds = 5.0
    # Finished deployments remembered per environment (for manual rollback and history).
    history_limit: Annotated[int, Meta(ge=1, le=10000)] = 100
    # Requests per second one host can plausibly serve: a sample counting more requests
    # (or latencies) than this over its check's interval is not trusted and counts in no
    # verdict and no alert (nor does one with a value that is not a finite number).
    max_request_rate: Annotated[float, Meta(gt=0)] = 100000.0

    def max_count(self, check: str) -> float:
        """The most requests one sample of ``check`` can plausibly count."""
        return self.max_request_rate * self.interval(check)

    def interval(self, check: str) -> float:
        named = self.check_intervals.get(check)
        if named is not None:
            return named
        return GUIDE_CHECK_INTERVALS.get(check, self.default_interval)


class HttpConfig(_Config, kw_only=True, frozen=True):
    listen: str = "127.0.0.1"
    port: Port = 8470
    # Bearer token for /api, read from this file (first line).
    token_file: str | None = None
    # Where people reach the dashboard (https://rollguard.example.com, behind the TLS
    # proxy): notifications link to {public_url}/deployments/{id}. Empty: no link.
    public_url: str = ""
    # /metrics has per-host gauges for at most this many hosts (the first by id), so a
    # large fleet cannot swamp Prometheus; rollguard_host_series_omitted counts the rest.
    metrics_max_hosts: Annotated[int, Meta(ge=0, le=100_000)] = 1000

    def __post_init__(self) -> None:
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError(
                f"public_url must be an http:// or https:// URL, got {self.public_url!r}"
            )

    def deployment_link(self, deployment_id: str) -> str | None:
        """The dashboard's page of a deployment, if the public URL is set."""
        if not self.public_url:
            return None
        return f"{self.public_url.rstrip('/')}/deployments/{deployment_id}"


class StoreConfig(_Config, kw_only=True, frozen=True):
    # Empty: SQLite in the state directory. Or a postgresql:// URL.
    url: str = ""
    timeout: Seconds = 5.0

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("url must be empty (SQLite), sqlite:///PATH or postgresql://...")


class HaConfig(_Config, kw_only=True, frozen=True):
    redis_url: str | None = None
    lease_ttl: Seconds = 10.0
    key_prefix: str = "rollguard"


class IngestConfig(_Config, kw_only=True, frozen=True):
    """What the coordinator accepts from hosts, beyond the wire schemas' bounds."""

    # A host time (a sample, a status, a result) further ahead of the coordinator's
    # clock than this is refused (counted as rejected, reason "future").
    max_clock_skew: Seconds = 300.0
    # A refused message, or one whose handling failed, is logged at most once per
    # host per this interval (the rest are counted and summed into the next line).
    log_interval: Seconds = 60.0


class CoordinatorConfig(_Config, kw_only=True, frozen=True):
    node: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "coordinator"
    state_dir: str = "/var/lib/rollguard"
    # Ed25519 private key that signs every command.
    private_key_file: str | None = None
    # Commands expire this long after they are issued.
    command_ttl: Seconds = 600.0
    mqtt: MqttConfig = mqtt_field
    log: LogConfig = log_field
    http: HttpConfig = field(default_factory=HttpConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    ha: HaConfig = field(default_factory=HaConfig)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    environments: Environments = field(default_factory=Environments)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
