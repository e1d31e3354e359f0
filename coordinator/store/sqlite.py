"""The embedded default: one SQLite file in the coordinator's state directory.

sqlite3 blocks, so every call runs on one dedicated worker thread that owns the only
connection; the thread's queue is first in, first out, which is what keeps a rollback
behind the statement it undoes even when the caller stopped waiting for that statement.
An asyncio lock gives one task at a time the connection for a whole transaction, since
a second task's statements would otherwise land inside the first one's transaction.

Durability: WAL journal with ``synchronous=FULL``, so a committed transaction survives
power loss, not just a crash of the process. Write transactions begin IMMEDIATE, which
takes SQLite's write lock up front: the fence check and the writes after it are then
atomic even against a second process on the same file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from coordinator.store.errors import StoreError
from coordinator.store.schema import DialectName
from coordinator.store.store import DEFAULT_TIMEOUT, Fetched, Store

T = TypeVar("T")


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    # Created before SQLite opens it so the file (and the -wal/-shm files, which copy
    # its mode) is private: it holds signed commands and the fleet's history.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of the module's
    # implicit transactions. timeout is SQLite's busy wait for another process's lock.
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount


def _execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    return conn.executemany(sql, rows).rowcount


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Fetched]:
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _rollback(conn: sqlite3.Connection, _: str, __: Sequence[Any]) -> int:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    return 0


class SqliteBackend:
    """One SQLite file (created if absent; its directory must exist)."""

    dialect: DialectName = "sqlite"
    APPEND_EVENT: str = (
        "INSERT INTO events (time, kind, message, deployment, host, actor, evidence) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq"
    )
    MIGRATIONS_EXIST: str = (
        "SELECT count(*) AS n FROM sqlite_master "
        "WHERE type = 'table' AND name = 'schema_migrations'"
    )
    LOCK_MIGRATIONS: str | None = None

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def _call(
        self, fn: Callable[[sqlite3.Connection, str, Sequence[Any]], T], sql: str, params: Any
    ) -> T:
        """Run ``fn(conn, sql, params)`` on the worker thread within the timeout."""
        if self._executor is None or self._conn is None:
            raise StoreError(f"{self!r} is not open")
        conn = self._conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return await loop.run_in_executor(self._executor, fn, conn, sql, params)
        except TimeoutError as exc:
            raise StoreError(f"{self!r}: no answer within {self.timeout:g} s") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self!r}: {exc}") from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._call(_execute, sql, params)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Fetched]:
        return await self._call(_fetch, sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return await self._call(_execute_many, sql, rows)

    async def open(self) -> None:
        if self._conn is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollguard-sqlite")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                self._conn = await loop.run_in_executor(executor, _connect, self.path, self.timeout)
        except (OSError, sqlite3.Error, TimeoutError) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._executor = executor

    async def close(self) -> None:
        if self._conn is None or self._executor is None:
            return
        # Let an open transaction finish first, but never wait forever to close.
        acquired = False
        with suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self._lock.acquire()
                acquired = True
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, conn.close)
            with suppress(TimeoutError, sqlite3.Error):
                async with asyncio.timeout(self.timeout):
                    await future
        finally:
            executor.shutdown(wait=False)
            if acquired:
                self._lock.release()

    async def ping(self) -> None:
        # Reads the schema page, so a file that vanished or went unreadable shows.
        await self.fetch("SELECT count(*) AS n FROM sqlite_master")

    @asynccontextmanager
    async def begin(self, *, write: bool) -> AsyncIterator[SqliteBackend]:
        if self._conn is None:
            raise StoreError(f"{self!r} is not open")
        try:
            async with asyncio.timeout(self.timeout):
                await self._lock.acquire()
        except TimeoutError as exc:
            raise StoreError(
                f"{self!r}: another transaction held the store for over {self.timeout:g} s"
            ) from exc
        try:
            try:
                await self.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield self
                await self.execute("COMMIT")
            except BaseException:
                # Queued behind whatever still runs on the worker, so it undoes exactly
                # the transaction it follows; errors here would only hide the original.
                with suppress(StoreError):
                    await self._call(_rollback, "", ())
                raise
        finally:
            self._lock.release()


class SqliteStore(Store):
    """The store in one SQLite file (created if absent; its directory must exist)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        super().__init__(SqliteBackend(self.path, timeout))

    def __repr__(self) -> str:
        return repr(self.backend)
