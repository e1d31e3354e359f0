"""The agent's configuration, with the guide's check intervals and timeouts.

Everything the agent later turns into a wire value is bounded here, so a config that
loads can never produce a sample or status the coordinator would refuse (value keys
such as ``percent:/var`` are at most 64 characters, labels as the wire allows).
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from msgspec import Meta, field

from shared.config.common import LogConfig, MqttConfig, Seconds, _Config, log_field, mqtt_field
from shared.messages import HostId, Slot, Version

Percent = Annotated[float, Meta(ge=0, le=100)]
# Per-mount and per-endpoint value keys are "<name>:<mount or endpoint>" (<= 64 chars).
Mount = Annotated[str, Meta(pattern=r"^/", max_length=48)]
Endpoint = Annotated[str, Meta(min_length=3, max_length=48)]
Argv = list[Annotated[str, Meta(min_length=1)]]
MetricName = Annotated[str, Meta(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
# Placeholders a hook or restart argv may use; anything else in braces is refused.
PLACEHOLDERS: Final = frozenset({"version", "slot", "root", "release", "deployment", "host"})
_PLACEHOLDER_RE: Final = re.compile(r"\{([^{}]*)\}")


def _check_http_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL with a host, not {url!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from exc


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6addr]:port`` to (host, port); ValueError names the problem."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"endpoint {endpoint!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"endpoint {endpoint!r}: port must be 1..65535")
    return host, port


class CpuCheck(_Config, kw_only=True, frozen=True):
    enabled: bool = True
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class MemoryCheck(_Config, kw_only=True, frozen=True):
    enabled: bool = True
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class DiskCheck(_Config, kw_only=True, frozen=True):
    enabled: bool = True
    interval: Seconds = 300.0
    timeout: Seconds = 5.0
    mounts: Annotated[list[Mount], Meta(min_length=1, max_length=16)] = field(
        default_factory=lambda: ["/"]
    )

    def __post_init__(self) -> None:
        if len(set(self.mounts)) != len(self.mounts):
            raise ValueError("checks.disk.mounts lists a mount twice")


class SystemCheck(_Config, kw_only=True, frozen=True):
    """Load average and network I/O counters (no guide threshold: reported only)."""

    enabled: bool = True
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class DatabaseCheck(_Config, kw_only=True, frozen=True):
    # A libpq URL (postgresql://...); the check runs `SELECT 1`.
    url: Annotated[str, Meta(pattern=r"^postgres(ql)?://")]
    interval: Seconds = 30.0
    timeout: Seconds = 5.0


class CacheCheck(_Config, kw_only=True, frozen=True):
    # redis://[user:password@]host:port/db or rediss:// for TLS.
    url: Annotated[str, Meta(pattern=r"^(redis|rediss|unix)://")]
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class NetworkCheck(_Config, kw_only=True, frozen=True):
    # host:port endpoints reached by TCP connect.
    endpoints: Annotated[list[Endpoint], Meta(min_length=1, max_length=32)]
    interval: Seconds = 30.0
    timeout: Seconds = 5.0

    def __post_init__(self) -> None:
        for endpoint in self.endpoints:
            split_endpoint(endpoint)
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError("checks.network.endpoints lists an endpoint twice")


class ApplicationCheck(_Config, kw_only=True, frozen=True):
    # The app on localhost:3000 in development (guide); a health or status URL.
    url: str = "http://127.0.0.1:3000/health"
    interval: Seconds = 10.0
    timeout: Seconds = 5.0
    # Probes per interval; error rate and latency quantiles go out with these counts.
    requests: Annotated[int, Meta(ge=1, le=100)] = 5
    # Optional Prometheus text endpoint of the app, for real-traffic rates.
    metrics_url: str | None = None
    # The app's request counter and latency histogram in that endpoint.
    requests_metric: MetricName = "http_requests_total"
    latency_metric: MetricName = "http_request_duration_seconds"
    latency_unit: Literal["seconds", "milliseconds"] = "seconds"
    # The label carrying the HTTP status; None tries "code", "status", "status_code".
    status_label: MetricName | None = None
    # Blue-green only: the health URL of each slot's own instance (e.g. blue on :3001,
    # green on :3002), while ``url`` stays the endpoint that serves traffic (the one a
    # switch repoints). The agent also probes the inactive slot, the one a blue-green
    # deploy goes to, with the same requests and timeout, and reports it as the check
    # ``application_blue`` or ``application_green``. Both slots, or neither.
    slot_urls: dict[Slot, str] = {}

    def __post_init__(self) -> None:
        _check_http_url("checks.application.url", self.url)
        if self.metrics_url is not None:
            _check_http_url("checks.application.metrics_url", self.metrics_url)
        if not self.slot_urls:
            return
        missing = [slot for slot in ("blue", "green") if slot not in self.slot_urls]
        if missing:
            raise ValueError(
                "checks.application.slot_urls needs both blue and green (missing "
                + ", ".join(missing)
                + "): a blue-green deploy goes to either slot in turn"
            )
        for slot, url in sorted(self.slot_urls.items()):
            _check_http_url(f"checks.application.slot_urls.{slot}", url)
            if url == self.url:
                raise ValueError(
                    f"checks.application.slot_urls.{slot} is checks.application.url: url "
                    "is the endpoint serving traffic, a slot URL reaches that slot's own "
                    "instance whether it serves traffic or not"
                )
        if self.slot_urls["blue"] == self.slot_urls["green"]:
            raise ValueError(
                "checks.application.slot_urls: blue and green are the same URL; each "
                "slot runs its own instance"
            )


class Checks(_Config, kw_only=True, frozen=True):
    """Each check runs every ``interval`` seconds under its ``timeout``; a timeout
    longer than the interval is capped at the interval, so runs never pile up."""

    cpu: CpuCheck = field(default_factory=CpuCheck)
    memory: MemoryCheck = field(default_factory=MemoryCheck)
    disk: DiskCheck = field(default_factory=DiskCheck)
    system: SystemCheck = field(default_factory=SystemCheck)
    database: DatabaseCheck | None = None
    cache: CacheCheck | None = None
    network: NetworkCheck | None = None
    application: ApplicationCheck | None = None
    # Each run starts up to this fraction of its interval late, so a fleet does not
    # measure in lockstep.
    jitter: Annotated[float, Meta(ge=0, le=0.5)] = 0.1


class BufferConfig(_Config, kw_only=True, frozen=True):
    # Batches kept while the broker is unreachable; the oldest are dropped beyond.
    # At the default intervals a host seals at most ~800 batches an hour (one per
    # check run, fewer when runs coincide), so 4000 holds well over an hour.
    max_batches: Annotated[int, Meta(ge=1)] = 4000


class PublishConfig(_Config, kw_only=True, frozen=True):
    # A batch is sealed this long after its first sample, so checks that finish
    # together travel together; it is also the most a sample waits before sending.
    linger: Annotated[float, Meta(ge=0, le=60)] = 1.0
    # On shutdown, how long to keep sending buffered batches before going offline.
    flush_timeout: Annotated[float, Meta(ge=0, le=3)] = 2.0


class DeployConfig(_Config, kw_only=True, frozen=True):
    # "releases": releases/<version>/ and an atomic `current` symlink; "hooks": argv hooks.
    strategy: Literal["releases", "hooks"] = "releases"
    # The shipped unit lets the agent write here (ReadWritePaths=-/srv/app) and
    # `rollguard setup agent` creates it for the agent's user.
    root: Annotated[str, Meta(pattern=r"^/")] = "/srv/app"
    # argv lists, never a shell; placeholders {version} {slot} {root} {release}
    # {deployment} {host} are substituted per argument.
    restart_command: Argv = []
    # releases: optional, fetches releases/<version>/ when it is missing.
    # hooks: required, installs and activates {version}.
    deploy_hook: Argv = []
    # blue-green: points traffic at {slot}.
    switch_hook: Argv = []
    # blue-green: the slot serving traffic on a fresh install, before this agent has
    # recorded one (from then on the recorded slot, which each switch changes, is the
    # truth). Without it the host reports no slot until its first switch, and the
    # coordinator refuses a blue-green deployment to it.
    initial_slot: Slot | None = None
    # hooks: the version running before this agent's first deploy (on initial_slot, for
    # blue-green). Like initial_slot it only fills in what the agent has not recorded;
    # from the first deploy or switch on, the recorded version of each slot is the
    # truth. Without it the host reports no version until its first deploy, and a
    # deployment starts from, and rolls back to, an unknown version. (releases: the
    # `current` symlink tells the running version, so this key is refused.)
    initial_version: Version | None = None
    # hooks: re-activates {version} (default: deploy_hook with the previous version).
    rollback_hook: Argv = []
    # For each hook or restart command run.
    timeout: Seconds = 300.0

    def __post_init__(self) -> None:
        for name in ("restart_command", "deploy_hook", "switch_hook", "rollback_hook"):
            for arg in getattr(self, name):
                unknown = set(_PLACEHOLDER_RE.findall(arg)) - PLACEHOLDERS
                if unknown:
                    raise ValueError(
                        f"deploy.{name}: unknown placeholder(s) "
                        + ", ".join("{" + u + "}" for u in sorted(unknown))
                        + f"; known: {', '.join(sorted(PLACEHOLDERS))}"
                    )
        if self.strategy == "hooks" and not self.deploy_hook:
            raise ValueError("deploy.strategy = 'hooks' needs deploy.deploy_hook")
        if self.strategy == "releases" and self.initial_version is not None:
            raise ValueError(
                "deploy.initial_version is for strategy = 'hooks'; with 'releases' the "
                "running version is what root/current points at"
            )


class AgentConfig(_Config, kw_only=True, frozen=True):
    host: HostId
    environment: Literal["development", "staging", "production"] = "production"
    labels: dict[
        Annotated[str, Meta(min_length=1, max_length=64)], Annotated[str, Meta(max_length=128)]
    ] = {}
    state_dir: str = "/var/lib/rollguard-agent"
    # The coordinator's Ed25519 public key; commands are refused without it.
    public_key_file: str | None = None
    mqtt: MqttConfig = mqtt_field
    log: LogConfig = log_field
    checks: Checks = field(default_factory=Checks)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
