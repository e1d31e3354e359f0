"""Configuration models for the agent and the coordinator, loaded from TOML.

Every default is the deployment guide's number (design section 3). Validation errors
name the file, the key and the problem, e.g.::

    /etc/rollguard/agent.toml: Expected `int` <= 65535 - at `$.mqtt.port`

Beyond the schema, ``load`` refuses what would only fail later: an empty file, an
error-rate threshold above ``MAX_ERROR_RATE`` (a percent written where a fraction
belongs), and ``load_any`` says when a config without ``host`` fails as a
coordinator's that it may be an agent's. The files a config names are checked by
``shared.config.files``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, TypeVar

import msgspec

from shared.config.agent import AgentConfig
from shared.config.common import LogConfig, MqttConfig, TlsConfig
from shared.config.coordinator import CoordinatorConfig
from shared.errors import ConfigError

__all__ = [
    "AgentConfig",
    "ConfigError",
    "CoordinatorConfig",
    "LogConfig",
    "MqttConfig",
    "TlsConfig",
    "load",
    "load_any",
    "loads",
]

# An error-rate threshold is a fraction of requests (0.01 = 1 %). Above this one a
# release may fail one request in five and still be promoted: almost surely a percent
# written where a fraction belongs (5 for 5 % fails the schema; 0.5 would not).
MAX_ERROR_RATE: Final = 0.2
NO_HOST_HINT: Final = "no `host`: read as a coordinator config; is this an agent's?"

C = TypeVar("C", AgentConfig, CoordinatorConfig)


def loads(kind: type[C], text: str | bytes, *, source: str = "<config>") -> C:
    """Decode TOML ``text`` into ``kind``; raise ConfigError naming ``source``."""
    try:
        config = msgspec.toml.decode(text, type=kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    if isinstance(config, CoordinatorConfig):
        _check_error_rates(config, source)
    return config


def _check_error_rates(config: CoordinatorConfig, source: str) -> None:
    rates: list[tuple[str, float | None]] = [("alerts.error_rate", config.alerts.error_rate)]
    rates += [
        (f"environments.{name}.error_rate", config.environments.get(name).error_rate)
        for name in ("development", "staging", "production")
    ]
    for key, rate in rates:
        if rate is not None and rate > MAX_ERROR_RATE:
            raise ConfigError(
                f"{source}: {key} = {rate:g} is a fraction of requests (0.01 is 1 %); "
                f"above {MAX_ERROR_RATE:g}, one request in {round(1 / rate)} could fail "
                f"without a rollback or an alert. Did you mean {rate / 100:g}?"
            )


def _read(path: Path) -> bytes:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty; a config needs at least its settings")
    return text


def load(kind: type[C], path: str | Path) -> C:
    path = Path(path)
    return loads(kind, _read(path), source=str(path))


def load_any(path: str | Path) -> AgentConfig | CoordinatorConfig:
    """An agent's config (it names its ``host``) or a coordinator's; when a config
    without ``host`` fails as a coordinator's, the error says it may be an agent's."""
    path = Path(path)
    text = _read(path)
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if isinstance(raw, dict) and "host" in raw:
        return loads(AgentConfig, text, source=str(path))
    try:
        return loads(CoordinatorConfig, text, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({NO_HOST_HINT})") from exc
