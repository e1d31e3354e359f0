"""The coordinator's durable store: SQLite in the state directory by default, or
PostgreSQL when the config names a ``postgresql://`` URL, one implementation over both.

Typical use by the daemon::

    store = open_store(config.store, config.state_dir)
    await store.open()
    await store.migrate()
    async with store.transaction() as tx:       # one engine step, atomically
        await tx.save_deployment(DeploymentRow(..., fencing=token))
        await tx.save_command(CommandRow(..., fencing=token))
        await tx.append_event(event, fencing=token)
    # only now publish the commands
"""

from __future__ import annotations

from pathlib import Path

from coordinator.store.errors import StaleLeaderError, StoreError
from coordinator.store.postgres import PostgresStore
from coordinator.store.records import (
    FINAL_RESULTS,
    TERMINAL_STATES,
    AlertRow,
    CommandResultRow,
    CommandRow,
    DeploymentRow,
    EngineStateRow,
    ResultState,
)
from coordinator.store.schema import LATEST_VERSION, MIGRATIONS, Migration
from coordinator.store.sqlite import SqliteStore
from coordinator.store.store import DEFAULT_TIMEOUT, Store, Transaction
from shared.config.coordinator import StoreConfig

DEFAULT_FILE = "rollguard.db"


def open_store(config: StoreConfig, state_dir: str) -> Store:
    """The store the config names, not yet opened: call ``open()`` then ``migrate()``.

    An empty URL is ``<state_dir>/rollguard.db``; ``sqlite:///PATH`` is a file, relative
    paths taken from the state directory (``sqlite:////abs/path`` for an absolute one);
    ``postgresql://`` or ``postgres://`` is PostgreSQL.
    """
    url = config.url
    if not url:
        return SqliteStore(Path(state_dir) / DEFAULT_FILE, timeout=config.timeout)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise StoreError("sqlite:/// URL names no file")
        return SqliteStore(Path(state_dir) / path, timeout=config.timeout)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, config.timeout)
    raise StoreError(f"store url must be empty, sqlite:///PATH or postgresql://..., not {url!r}")


__all__ = [
    "DEFAULT_TIMEOUT",
    "FINAL_RESULTS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "TERMINAL_STATES",
    "AlertRow",
    "CommandResultRow",
    "CommandRow",
    "DeploymentRow",
    "EngineStateRow",
    "Migration",
    "PostgresStore",
    "ResultState",
    "SqliteStore",
    "StaleLeaderError",
    "Store",
    "StoreError",
    "Transaction",
    "open_store",
]
