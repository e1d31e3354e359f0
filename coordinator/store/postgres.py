"""PostgreSQL, for active/standby pairs and for teams that back up a server.

psycopg 3's async driver with a small psycopg_pool pool. Timeouts are layered: the
pool's ``timeout`` bounds waiting for a connection, ``statement_timeout`` and
``lock_timeout`` (set per session) make the server give up on a slow statement or a
lock held by the other coordinator, and an asyncio timeout around every call is the
backstop for a network that stops answering altogether. Each failure is a StoreError.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from functools import cache
from typing import Any, Final, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from coordinator.store.errors import StoreError
from coordinator.store.schema import DialectName
from coordinator.store.store import DEFAULT_TIMEOUT, Fetched, Store

T = TypeVar("T")
Conn = AsyncConnection[tuple[Any, ...]]

# Key of the advisory lock that serialises migrations across coordinators (an
# arbitrary constant: the ASCII of "rgmigr" as a 64-bit integer).
MIGRATION_LOCK_KEY: Final = 0x72676D696772


@cache
def _native(sql: str) -> bytes:
    """The store's ``?`` placeholders as psycopg's ``%s``."""
    return sql.replace("?", "%s").encode()


def _describe(url: str) -> str:
    """host:port/dbname for messages, never the password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "an invalid PostgreSQL URL"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


# Strong references to background clean-ups, which asyncio would otherwise let the
# garbage collector take mid-way.
_background: set[asyncio.Future[None]] = set()


async def _cancel_hard(task: asyncio.Future[Any], grace: float) -> None:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=grace)


def _succeeded(task: asyncio.Future[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _clean_up(
    task: asyncio.Future[T], grace: float, release: Callable[[T], Awaitable[None]] | None
) -> None:
    await _cancel_hard(task, grace)
    if release is not None and _succeeded(task):
        # Obtained after all, by a caller that is gone: give it back.
        with suppress(Exception):
            await release(task.result())


async def _configure(conn: Conn) -> None:
    # jsonb read back as text, so that msgspec decodes it exactly as on SQLite.
    conn.adapters.register_loader("jsonb", TextLoader)


class PostgresBackend:
    """A PostgreSQL database named by a ``postgresql://`` URL."""

    dialect: DialectName = "postgres"
    # The counter row (see the schema) makes seq order equal commit order.
    APPEND_EVENT: str = """WITH next AS (
        UPDATE event_counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq
    )
    INSERT INTO events (seq, time, kind, message, deployment, host, actor, evidence)
    SELECT last_seq, ?, ?, ?, ?, ?, ?, ?::jsonb FROM next RETURNING seq"""
    MIGRATIONS_EXIST: str = "SELECT count(to_regclass('schema_migrations')) AS n"
    # Held to commit: a second coordinator migrating at the same time waits, then finds
    # the migration recorded. It also covers CREATE TABLE IF NOT EXISTS, which is not
    # safe run concurrently.
    LOCK_MIGRATIONS: str | None = f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY}) AS locked"

    def __init__(self, url: str, timeout: float, max_size: int) -> None:
        self.url = url
        self.timeout = timeout
        self.max_size = max_size
        self._where = _describe(url)
        # How long psycopg may spend cancelling a timed-out query before we cut it off.
        self._grace = min(0.5, timeout / 2)
        self._pool: AsyncConnectionPool[Conn] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    async def _run(
        self,
        call: Coroutine[Any, Any, T],
        release: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        """Await one driver call within the timeout, failures as StoreError.

        The call runs as a task of its own because psycopg answers a cancellation by
        asking the server to cancel the query and then waiting for it, up to 10 s in
        all; on a network gone silent that would turn our timeout into 11 s. A second
        cancellation makes psycopg close the connection at once instead, so the caller
        hears within ``timeout`` plus a short grace, and the pool replaces the
        connection. ``release`` gives back what a call obtained for a caller that was
        cancelled meanwhile (a pooled connection).
        """
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            # Our caller was itself cancelled and cannot wait: clean up in the background.
            cleanup = asyncio.ensure_future(_clean_up(task, self._grace, release))
            _background.add(cleanup)
            cleanup.add_done_callback(_background.discard)
            raise
        if not done:
            await _cancel_hard(task, self._grace)
            # Done in the grace after all: a late success is still a success.
            if not _succeeded(task):
                with suppress(BaseException):
                    task.exception()  # retrieved, so asyncio does not log it
                silence = TimeoutError(f"no answer within {self.timeout:g} s")
                raise StoreError(f"{self!r}: {silence}") from silence
        try:
            return task.result()
        except psycopg.Error as exc:
            raise StoreError(f"{self!r}: {exc}") from exc

    async def open(self) -> None:
        if self._pool is not None:
            return
        millis = max(1, int(self.timeout * 1000))
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.max_size,
            open=False,
            timeout=self.timeout,
            name="rollguard-store",
            configure=_configure,
            # Hand out only connections that still answer, e.g. after a server restart.
            check=AsyncConnectionPool.check_connection,
            kwargs={
                # libpq counts whole seconds and treats less than 2 as 2.
                "connect_timeout": max(2, math.ceil(self.timeout)),
                "application_name": "rollguard-coordinator",
                # A coordinator frozen mid-transaction (stopped, swapping) would hold
                # the fence row and lock out the standby that took over its lease; the
                # server ends such a session. Our transactions never idle that long.
                "options": (
                    f"-c statement_timeout={millis} -c lock_timeout={millis} "
                    f"-c idle_in_transaction_session_timeout={2 * millis}"
                ),
            },
        )
        try:
            await self._run(pool.open(wait=True, timeout=self.timeout))
        except StoreError as exc:
            # The pool would otherwise keep trying to connect in the background.
            with suppress(Exception):
                await pool.close(timeout=1.0)
            raise StoreError(
                f"PostgreSQL at {self._where} is unreachable within {self.timeout:g} s: "
                f"{exc.__cause__ or exc}"
            ) from exc
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with suppress(TimeoutError, psycopg.Error):
                async with asyncio.timeout(self.timeout):
                    await pool.close(timeout=self.timeout)

    async def ping(self) -> None:
        async with self.begin(write=False) as conn:
            await conn.fetch("SELECT 1 AS one")

    @asynccontextmanager
    async def begin(self, *, write: bool) -> AsyncIterator[_PostgresConnection]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self!r} is not open")
        conn = await self._run(pool.getconn(timeout=self.timeout), release=pool.putconn)
        try:
            try:
                yield _PostgresConnection(self, conn)
                await self._run(conn.commit())
            except BaseException:
                with suppress(StoreError):
                    await self._run(conn.rollback())
                raise
        finally:
            # The pool discards a connection left mid-statement by a timeout.
            with suppress(psycopg.Error):
                await pool.putconn(conn)


class _PostgresConnection:
    def __init__(self, backend: PostgresBackend, conn: Conn) -> None:
        self._backend = backend
        self._conn = conn

    async def _execute(self, sql: str, params: Sequence[Any]) -> int:
        async with self._conn.cursor() as cursor:
            await cursor.execute(_native(sql), params)
            return cursor.rowcount

    async def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        # psycopg pipelines the rows (one round trip) and adds up their rowcounts. After
        # a pipeline the server leaves idle_in_transaction_session_timeout unarmed (seen
        # on PostgreSQL 15), so a leader frozen right after it would hold the fence row
        # for ever: one plain statement arms it again (tests/store/test_fencing.py).
        async with self._conn.cursor() as cursor:
            await cursor.executemany(_native(sql), rows)
            changed = cursor.rowcount
            await cursor.execute(b"SELECT 1")
            return changed

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Fetched]:
        async with self._conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(_native(sql), params)
            return await cursor.fetchall()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._backend._run(self._execute(sql, params))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Fetched]:
        return await self._backend._run(self._fetch(sql, params))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return await self._backend._run(self._execute_many(sql, rows))


class PostgresStore(Store):
    """The store in a PostgreSQL database named by a ``postgresql://`` URL."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, *, max_size: int = 4) -> None:
        self.url = url
        super().__init__(PostgresBackend(url, timeout, max_size))

    def __repr__(self) -> str:
        return repr(self.backend)
