"""Config pieces both the agent and the coordinator use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from shared.errors import ConfigError

Seconds = Annotated[float, Meta(gt=0)]
Port = Annotated[int, Meta(ge=1, le=65535)]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Config(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for config sections: unknown keys are errors, values are immutable."""


class TlsConfig(_Config, kw_only=True, frozen=True):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Only for test brokers with self-signed certificates; never in production.
    insecure: bool = False


class MqttConfig(_Config, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    # The password is read from this file (first line), never written in the config.
    password_file: str | None = None
    tls: TlsConfig | None = None
    keepalive: Annotated[int, Meta(ge=5, le=3600)] = 30
    connect_timeout: Seconds = 10.0
    # Reconnect backoff: doubles from min to max, with full jitter.
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 30.0

    def __post_init__(self) -> None:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file must be given together")

    def read_password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file {self.password_file}: {exc.strerror or exc}"
            ) from exc
        password = text.splitlines()[0].strip() if text.strip() else ""
        if not password:
            raise ConfigError(f"mqtt.password_file {self.password_file} is empty")
        return password


class LogConfig(_Config, kw_only=True, frozen=True):
    # None: the environment's level from the guide (debug / info / warn).
    level: LogLevel | None = None
    format: Literal["text", "json"] = "text"


def default_mqtt() -> MqttConfig:
    return MqttConfig()


def default_log() -> LogConfig:
    return LogConfig()


mqtt_field = field(default_factory=default_mqtt)
log_field = field(default_factory=default_log)
