"""What a config's schema cannot show: the files it names are there, readable and
usable, and the agent's releases root is one its systemd unit lets it write.

``rollguard config check FILE`` and ``rollguard-agent --check-config`` both run
these, and the daemons run them at start, so a broken installation is reported once,
with the key and the file, instead of as a refused command or a restart loop later.
Keys themselves are checked by the side that uses them (the agent's public key with
libsodium, the coordinator's private key with ``cryptography``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Final

from shared.config.agent import AgentConfig
from shared.config.common import MqttConfig
from shared.config.coordinator import CoordinatorConfig
from shared.errors import ConfigError

# Where the shipped agent unit is installed (deploy/rollguard-agent.service).
AGENT_UNIT: Final = "/etc/systemd/system/rollguard-agent.service"
MIN_TOKEN_LENGTH: Final = 16
_RW_PATHS: Final = re.compile(r"^[ \t]*ReadWritePaths[ \t]*=[ \t]*(.*)$", re.MULTILINE)


def readable(path: str, key: str) -> bytes:
    """The content of the file ``key`` names; ConfigError says why it is not usable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key} {path}: {exc.strerror or exc}") from exc


def mqtt_files(mqtt: MqttConfig) -> None:
    mqtt.read_password()
    if mqtt.tls is not None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(mqtt.tls, name)
            if value:
                readable(value, f"mqtt.tls.{name}")


def writable_paths(unit_text: str) -> list[str]:
    """The unit's ``ReadWritePaths`` (a leading ``-`` only makes a missing one not an
    error; it is still the path)."""
    paths: list[str] = []
    for match in _RW_PATHS.finditer(unit_text):
        value = match.group(1).strip()
        if not value:
            paths.clear()  # an empty assignment resets the list
            continue
        paths += [p.lstrip("-+") for p in value.split()]
    return paths


def _under(path: str, root: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(root))


def agent_files(config: AgentConfig, *, unit: str | None = AGENT_UNIT) -> None:
    """The agent's files: its broker password (and TLS files), the coordinator's
    public key (required: without it every command is refused), and a releases root
    the agent may write: under its unit's ``ReadWritePaths`` when ``unit`` is
    installed, and writable by this process when it exists."""
    mqtt_files(config.mqtt)
    if not config.public_key_file:
        raise ConfigError(
            "public_key_file is not set: every command from the coordinator would be "
            "refused (set it to the coordinator's coordinator.pub)"
        )
    root = config.deploy.root
    if unit is not None and Path(unit).is_file():
        text = readable(unit, "the agent's unit").decode("utf-8", "replace")
        allowed = writable_paths(text)
        if not any(_under(root, path) for path in allowed):
            raise ConfigError(
                f"deploy.root {root}: the unit {unit} lets the agent write only "
                f"{', '.join(allowed) or 'its state directory'} (ReadWritePaths); "
                "change one of them so they agree"
            )
    if Path(root).is_dir() and not os.access(root, os.W_OK):
        raise ConfigError(f"deploy.root {root}: not writable by this agent (uid {os.getuid()})")


def coordinator_files(config: CoordinatorConfig) -> None:
    """The coordinator's files: its broker password (and TLS files), its private key
    and API token when the config names them."""
    mqtt_files(config.mqtt)
    if config.private_key_file:
        readable(config.private_key_file, "private_key_file")
    if config.http.token_file:
        token = readable(config.http.token_file, "http.token_file").decode("utf-8", "replace")
        if len(token.strip()) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"http.token_file {config.http.token_file}: the token must be at least "
                f"{MIN_TOKEN_LENGTH} characters"
            )
    state = Path(config.state_dir)
    if state.exists() and not state.is_dir():
        raise ConfigError(f"state_dir {state}: not a directory")
