"""Configuration models for the agent and the coordinator, loaded from TOML.

Every default is the deployment guide's number (design section 3). Validation errors
name the file, the key and the problem, e.g.::

    /etc/rollguard/agent.toml: Expected `int` <= 65535 - at `$.mqtt.port`
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

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
    "loads",
]

C = TypeVar("C", AgentConfig, CoordinatorConfig)


def loads(kind: type[C], text: str | bytes, *, source: str = "<config>") -> C:
    """Decode TOML ``text`` into ``kind``; raise ConfigError naming ``source``."""
    try:
        return msgspec.toml.decode(text, type=kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc


def load(kind: type[C], path: str | Path) -> C:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    return loads(kind, text, source=str(path))
