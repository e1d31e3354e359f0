"""The agent's configuration, with the guide's check intervals and timeouts."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, field

from shared.config.common import LogConfig, MqttConfig, Seconds, _Config, log_field, mqtt_field
from shared.messages import HostId

Percent = Annotated[float, Meta(ge=0, le=100)]


class CpuCheck(_Config, kw_only=True):
    enabled: bool = True
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class MemoryCheck(_Config, kw_only=True):
    enabled: bool = True
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class DiskCheck(_Config, kw_only=True):
    enabled: bool = True
    interval: Seconds = 300.0
    timeout: Seconds = 5.0
    mounts: list[str] = field(default_factory=lambda: ["/"])


class DatabaseCheck(_Config, kw_only=True):
    # A libpq URL (postgresql://...); the check runs `SELECT 1`.
    url: str
    interval: Seconds = 30.0
    timeout: Seconds = 5.0


class CacheCheck(_Config, kw_only=True):
    # redis://host:port/db
    url: str
    interval: Seconds = 60.0
    timeout: Seconds = 5.0


class NetworkCheck(_Config, kw_only=True):
    # host:port endpoints reached by TCP connect.
    endpoints: list[str]
    interval: Seconds = 30.0
    timeout: Seconds = 5.0


class ApplicationCheck(_Config, kw_only=True):
    # The app on localhost:3000 in development (guide); a health or status URL.
    url: str = "http://127.0.0.1:3000/health"
    interval: Seconds = 10.0
    timeout: Seconds = 5.0
    requests: Annotated[int, Meta(ge=1, le=100)] = 5
    # Optional Prometheus text endpoint of the app, for real-traffic rates.
    metrics_url: str | None = None


class Checks(_Config, kw_only=True):
    cpu: CpuCheck = field(default_factory=CpuCheck)
    memory: MemoryCheck = field(default_factory=MemoryCheck)
    disk: DiskCheck = field(default_factory=DiskCheck)
    database: DatabaseCheck | None = None
    cache: CacheCheck | None = None
    network: NetworkCheck | None = None
    application: ApplicationCheck | None = None
    # Each run starts up to this fraction of its interval late, so a fleet does not
    # measure in lockstep.
    jitter: Annotated[float, Meta(ge=0, le=0.5)] = 0.1


class BufferConfig(_Config, kw_only=True):
    # Batches kept while the broker is unreachable; the oldest are dropped beyond.
    # 4000 covers over an hour at the default intervals (one batch per tick).
    max_batches: Annotated[int, Meta(ge=1)] = 4000


class DeployConfig(_Config, kw_only=True):
    # "releases": releases/<version>/ and an atomic `current` symlink; "hooks": argv hooks.
    strategy: Literal["releases", "hooks"] = "releases"
    root: str = "/opt/app"
    restart_command: list[str] = []
    deploy_hook: list[str] = []
    switch_hook: list[str] = []
    rollback_hook: list[str] = []
    timeout: Seconds = 300.0


class AgentConfig(_Config, kw_only=True):
    host: HostId
    environment: Literal["development", "staging", "production"] = "production"
    labels: dict[str, str] = {}
    state_dir: str = "/var/lib/rollguard-agent"
    # The coordinator's Ed25519 public key; commands are refused without it.
    public_key_file: str | None = None
    mqtt: MqttConfig = mqtt_field
    log: LogConfig = log_field
    checks: Checks = field(default_factory=Checks)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
