"""Becoming the active coordinator: the credentials the daemon serves with, and the
engine rebuilt from the store.

The store holds the engine's saved state, which names its deployments, and each
deployment in its own row (one source of truth); ``restore_engine`` joins them. The
fleet is not in the store: the broker's retained statuses are its source, replayed from
the host registry by the service once the engine exists.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Final

from coordinator.engine import Engine
from coordinator.engine.state import decode_deployment, decode_saved, joined
from coordinator.store import Store
from shared.config import CoordinatorConfig
from shared.errors import ConfigError
from shared.signing import PRIVATE_KEY_NAME, generate_keypair, load_private_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger("rollguard.coordinator")
TOKEN_NAME: Final = "api.token"


async def restore_engine(store: Store, config: CoordinatorConfig) -> tuple[Engine, bool]:
    """The engine as the store left it (and True), or a new one (and False)."""
    saved = await store.load_engine_state()
    if saved is None:
        return Engine(config), False
    state = decode_saved(saved.snapshot)
    rows = [await store.get_deployment(d) for d in state.deployments]
    deployments = {r.id: decode_deployment(r.body) for r in rows if r is not None}
    return Engine.restore(config, joined(state, deployments)), True


def load_or_create_token(config: CoordinatorConfig) -> str:
    """The API token from ``http.token_file``, or one generated in the state directory."""
    if config.http.token_file:
        path = Path(config.http.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"http.token_file {path}: {exc.strerror or exc}") from exc
        if len(token) < 16:
            raise ConfigError(f"http.token_file {path}: token must be at least 16 characters")
        return token
    path = Path(config.state_dir) / TOKEN_NAME
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


def load_or_create_key(config: CoordinatorConfig) -> Ed25519PrivateKey:
    """The signing key from ``private_key_file``, or a pair generated in the state dir."""
    if config.private_key_file:
        return load_private_key(Path(config.private_key_file))
    directory = Path(config.state_dir) / "keys"
    if not (directory / PRIVATE_KEY_NAME).exists():
        _, public = generate_keypair(directory)
        log.warning("generated a command-signing key pair; give agents %s", public)
    return load_private_key(directory / PRIVATE_KEY_NAME)
