"""Store fixtures: every test runs against a SQLite file and a real PostgreSQL database.

``backend`` names where the data lives and can build more stores on the same data (a
second coordinator, or the same one after a restart) and reach it with the plain
driver, behind the store's back, for what the store itself must never do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.store import (
    CommandResultRow,
    CommandRow,
    DeploymentRow,
    PostgresStore,
    ResultState,
    SqliteStore,
    Store,
)
from shared.messages import Event


@dataclass
class Backend:
    name: str
    # A file path for SQLite, a URL for PostgreSQL.
    target: str

    def make(self, timeout: float = 5.0) -> Store:
        if self.name == "sqlite":
            return SqliteStore(self.target, timeout=timeout)
        return PostgresStore(self.target, timeout)

    @contextmanager
    def raw(self) -> Iterator[Any]:
        """A plain driver connection in autocommit mode: ``conn.execute(sql)``."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.target, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as pg:
                yield pg

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.raw() as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]

    @contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Another client holds what a fenced write needs, until the block ends."""
        with self.raw() as conn:
            if self.name == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.execute("BEGIN")
                conn.execute("SELECT token FROM leader_fence WHERE id = 1 FOR UPDATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "rollguard.db"))
    return Backend("postgres", request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """An open, migrated store on a fresh database."""
    opened = backend.make()
    await opened.open()
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def deployment(
    deployment_id: str = "d-1",
    state: str = "baking",
    body: bytes = b"",
    *,
    environment: str = "production",
    fencing: int = 0,
    at: float = 1.0,
) -> DeploymentRow:
    """A deployment row as the daemon writes one (``body`` is opaque to the store)."""
    return DeploymentRow(
        id=deployment_id,
        environment=environment,
        version="2.0",
        strategy="canary",
        state=state,
        body=body,
        fencing=fencing,
        created=at,
        updated=at,
    )


def command(
    command_id: str,
    deployment_id: str = "d-1",
    host: str = "web-1",
    *,
    payload: bytes = b"p",
    created: float = 1.0,
    fencing: int = 0,
) -> CommandRow:
    return CommandRow(
        id=command_id,
        deployment_id=deployment_id,
        host=host,
        action="deploy",
        payload=payload,
        created=created,
        fencing=fencing,
    )


def event(time: float, kind: str, message: str, **fields: Any) -> Event:
    """An event to append (the store gives it its seq)."""
    return Event(seq=0, time=time, kind=kind, message=message, **fields)


def result(state: ResultState, detail: str = "", time: float = 1.0) -> CommandResultRow:
    return CommandResultRow(state=state, detail=detail, time=time)
