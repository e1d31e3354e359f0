"""The store in PostgreSQL, for active/standby pairs and for teams that back up a server.

psycopg 3's async driver with a small psycopg_pool pool. Timeouts are layered: the
pool's ``timeout`` bounds waiting for a connection, ``statement_timeout`` and
``lock_timeout`` (set per session) make the server give up on a slow statement or a
lock held by the other coordinator, and an asyncio timeout around every call is the
backstop for a network that stops answering altogether. Each failure is a StoreError.
"""

# PLR0917: signatures are the Store contract's (see base.py). S608: every piece put into
# SQL with an f-string is a module constant; values are always bound parameters.
# ruff: noqa: PLR0917, S608

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from coordinator.store.base import (
    DEFAULT_TIMEOUT,
    Store,
    Transaction,
    TransactionGuard,
    refuse_nested,
)
from coordinator.store.errors import StaleLeaderError, StoreError
from coordinator.store.migrations import (
    MIGRATION_LOCK_KEY,
    POSTGRES_MIGRATIONS_TABLE,
    check_applied,
)
from coordinator.store.records import (
    COMMAND_COLUMNS,
    DEPLOYMENT_COLUMNS,
    FINAL_RESULTS,
    RESULT_COLUMNS,
    STEP_COLUMNS,
    TERMINAL_STATES,
    AlertRecord,
    CommandRecord,
    DeploymentRecord,
    HostRecord,
    ResultState,
    StepRecord,
    alert_from_row,
    check_result_state,
    commands_from_rows,
    deployment_from_row,
    encode_json,
    event_from_row,
    host_from_row,
    now_or,
    step_from_row,
)
from shared.messages import Event

T = TypeVar("T")
Conn = AsyncConnection[tuple[Any, ...]]

# JSON columns are jsonb (queryable at a SQL prompt) but read back as text, so that
# msgspec decodes them exactly as the SQLite backend does.
_HOST_COLUMNS = "host, online, session, environment, version, slot, labels::text, last_seen"
_ALERT_COLUMNS = "key, host, rule, started, resolved, evidence::text"
_EVENT_COLUMNS = "seq, time, kind, message, deployment, host, actor, evidence::text"
_FINAL_LIST = ", ".join(f"'{state}'" for state in sorted(FINAL_RESULTS))
_TERMINAL_LIST = ", ".join(f"'{state}'" for state in sorted(TERMINAL_STATES))


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


def _abandon(
    task: asyncio.Future[T], grace: float, release: Callable[[T], Awaitable[None]] | None
) -> None:
    """Cancel in the background: our caller was itself cancelled and cannot wait."""
    cleanup = asyncio.ensure_future(_clean_up(task, grace, release))
    _background.add(cleanup)
    cleanup.add_done_callback(_background.discard)


class PostgresStore(Store):
    """The store in a PostgreSQL database named by a ``postgresql://`` URL."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, *, max_size: int = 4) -> None:
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
            _abandon(task, self._grace, release)
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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_PostgresTransaction]:
        refuse_nested(self)
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self!r} is not open")
        conn = await self._run(pool.getconn(timeout=self.timeout), release=pool.putconn)
        try:
            tx = _PostgresTransaction(self, conn)
            try:
                with TransactionGuard(self):
                    yield tx
                tx.ensure_committable()
                await self._run(conn.commit())
            except BaseException:
                with suppress(StoreError):
                    await self._run(conn.rollback())
                raise
        finally:
            # The pool discards a connection left mid-statement by a timeout.
            with suppress(psycopg.Error):
                await pool.putconn(conn)

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction()

    def _reading(self) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction()

    async def ping(self) -> None:
        async with self._transaction() as tx:
            await tx.fetch("SELECT 1")

    async def schema_version(self) -> int:
        async with self._transaction() as tx:
            rows = await tx.fetch("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not rows[0][0]:
                return 0
            rows = await tx.fetch("SELECT coalesce(max(version), 0) FROM schema_migrations")
            return int(rows[0][0])

    async def migrate(self) -> list[int]:
        applied_now: list[int] = []
        while True:
            async with self._transaction() as tx:
                # Held to commit: a second coordinator migrating at the same time waits
                # here, then finds this migration recorded and skips it. The lock also
                # covers CREATE TABLE IF NOT EXISTS, which is not safe run concurrently.
                await tx.fetch("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                await tx.execute(POSTGRES_MIGRATIONS_TABLE)
                rows = await tx.fetch("SELECT version, name FROM schema_migrations")
                pending = check_applied({int(version): str(name) for version, name in rows})
                if not pending:
                    return applied_now
                migration = pending[0]
                for statement in migration.postgres:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, time.time()),
                )
            applied_now.append(migration.version)


class _PostgresTransaction(Transaction):
    def __init__(self, store: PostgresStore, conn: Conn) -> None:
        self._store = store
        self._conn = conn
        self._fenced: int | None = None
        self.failed = False

    def ensure_committable(self) -> None:
        # A caller may catch an operation's error and carry on; its transaction must
        # still not commit, or half of an engine step would be stored.
        if self.failed:
            raise StoreError("an operation in this transaction failed; rolled back")

    async def _guard(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            return await self._store._run(call)
        except BaseException:
            # PostgreSQL aborts the transaction on an error anyway; this also covers a
            # StaleLeaderError or a timeout, after which nothing may commit.
            self.failed = True
            raise

    async def _execute_raw(self, sql: LiteralString, params: tuple[Any, ...]) -> int:
        async with self._conn.cursor() as cursor:
            await cursor.execute(sql, params)
            return cursor.rowcount

    async def _fetch_raw(
        self, sql: LiteralString, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        async with self._conn.cursor() as cursor:
            await cursor.execute(sql, params)
            return await cursor.fetchall()

    async def execute(self, sql: LiteralString, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        return await self._guard(self._execute_raw(sql, params))

    async def fetch(
        self, sql: LiteralString, params: tuple[Any, ...] = ()
    ) -> list[tuple[Any, ...]]:
        return await self._guard(self._fetch_raw(sql, params))

    async def fence(self, token: int) -> None:
        if token == self._fenced:
            return
        # The UPDATE locks the fence row until this transaction ends, so fenced writers
        # are serialised: a writer with a lower token that was waiting re-reads the
        # row after the higher one commits and then matches nothing.
        raised = await self.execute(
            "UPDATE leader_fence SET token = %s WHERE id = 1 AND token <= %s", (token, token)
        )
        if not raised:
            current = await self.current_fence()
            self.failed = True
            raise StaleLeaderError(token, current)
        self._fenced = token

    async def current_fence(self) -> int:
        rows = await self.fetch("SELECT token FROM leader_fence WHERE id = 1")
        return int(rows[0][0])

    async def save_deployment(
        self,
        deployment_id: str,
        environment: str,
        version: str,
        strategy: str,
        state: str,
        snapshot: bytes,
        *,
        fencing: int,
        updated: float | None = None,
    ) -> None:
        await self.fence(fencing)
        at = now_or(updated)
        await self.execute(
            """INSERT INTO deployments
                (id, environment, version, strategy, state, snapshot, fencing, created, updated)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET
                environment = excluded.environment, version = excluded.version,
                strategy = excluded.strategy, state = excluded.state,
                snapshot = excluded.snapshot, fencing = excluded.fencing,
                updated = excluded.updated""",
            (deployment_id, environment, version, strategy, state, snapshot, fencing, at, at),
        )

    async def save_engine_state(self, snapshot: bytes, time: float, *, fencing: int) -> None:
        await self.fence(fencing)
        await self.execute(
            """INSERT INTO engine_state (id, snapshot, time, fencing) VALUES (1, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET
                snapshot = excluded.snapshot, time = excluded.time, fencing = excluded.fencing""",
            (snapshot, time, fencing),
        )

    async def load_engine_state(self) -> tuple[bytes, float] | None:
        rows = await self.fetch("SELECT snapshot, time FROM engine_state WHERE id = 1")
        return (bytes(rows[0][0]), float(rows[0][1])) if rows else None

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        rows = await self.fetch(
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = %s",
            (deployment_id,),
        )
        return deployment_from_row(rows[0]) if rows else None

    async def list_deployments(
        self,
        limit: int = 100,
        environment: str | None = None,
        states: Collection[str] | None = None,
    ) -> list[DeploymentRecord]:
        # NULL parameters switch a filter off, which keeps the statement a constant.
        rows = await self.fetch(
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments "
            "WHERE (%s::text IS NULL OR environment = %s) "
            "AND (%s::text[] IS NULL OR state = ANY(%s)) ORDER BY seq DESC LIMIT %s",
            (
                environment,
                environment,
                None if states is None else list(states),
                None if states is None else list(states),
                limit,
            ),
        )
        return [deployment_from_row(row) for row in rows]

    async def active_deployments(self) -> list[DeploymentRecord]:
        rows = await self.fetch(
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments "
            f"WHERE state NOT IN ({_TERMINAL_LIST}) ORDER BY seq"
        )
        return [deployment_from_row(row) for row in rows]

    async def record_step(
        self,
        deployment_id: str,
        step_index: int,
        percent: float,
        started: float,
        ended: float | None = None,
        outcome: str | None = None,
        *,
        fencing: int | None = None,
    ) -> None:
        if fencing is not None:
            await self.fence(fencing)
        await self.execute(
            """INSERT INTO steps (deployment_id, step_index, percent, started, ended, outcome)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (deployment_id, step_index) DO UPDATE SET
                percent = excluded.percent,
                ended = coalesce(excluded.ended, steps.ended),
                outcome = coalesce(excluded.outcome, steps.outcome)""",
            (deployment_id, step_index, percent, started, ended, outcome),
        )

    async def steps(self, deployment_id: str) -> list[StepRecord]:
        rows = await self.fetch(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE deployment_id = %s ORDER BY step_index",
            (deployment_id,),
        )
        return [step_from_row(row) for row in rows]

    async def save_command(
        self,
        command_id: str,
        deployment_id: str,
        host: str,
        action: str,
        payload: bytes,
        created: float,
        *,
        fencing: int,
    ) -> bool:
        await self.fence(fencing)
        inserted = await self.execute(
            """INSERT INTO commands (id, deployment_id, host, action, payload, created, fencing)
            VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING""",
            (command_id, deployment_id, host, action, payload, created, fencing),
        )
        return inserted == 1

    async def record_command_result(
        self,
        command_id: str,
        state: ResultState,
        detail: str,
        time: float,
        *,
        fencing: int | None = None,
    ) -> bool:
        check_result_state(state)
        if fencing is not None:
            await self.fence(fencing)
        inserted = await self.execute(
            """INSERT INTO command_results (command_id, state, detail, time)
            SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM commands WHERE id = %s)
            ON CONFLICT (command_id, state) DO NOTHING""",
            (command_id, state, detail, time, command_id),
        )
        return inserted == 1

    async def _commands(self, where: LiteralString, params: tuple[Any, ...]) -> list[CommandRecord]:
        commands = await self.fetch(
            f"SELECT {COMMAND_COLUMNS} FROM commands c WHERE {where} ORDER BY created, id",
            params,
        )
        results = await self.fetch(
            f"SELECT {RESULT_COLUMNS} FROM command_results "
            f"WHERE command_id IN (SELECT id FROM commands c WHERE {where}) ORDER BY id",
            params,
        )
        return commands_from_rows(commands, results)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        found = await self._commands("c.id = %s", (command_id,))
        return found[0] if found else None

    async def pending_commands(self) -> list[CommandRecord]:
        return await self._commands(
            "NOT EXISTS (SELECT 1 FROM command_results r WHERE r.command_id = c.id "
            f"AND r.state IN ({_FINAL_LIST}))",
            (),
        )

    async def commands(self, deployment_id: str) -> list[CommandRecord]:
        return await self._commands("c.deployment_id = %s", (deployment_id,))

    async def upsert_host(
        self,
        host: str,
        online: bool,
        session: int,
        environment: str,
        version: str | None,
        slot: str | None,
        labels: Mapping[str, str],
        last_seen: float,
    ) -> None:
        await self.execute(
            """INSERT INTO hosts
                (host, online, session, environment, version, slot, labels, last_seen)
            VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)
            ON CONFLICT (host) DO UPDATE SET
                online = excluded.online, session = excluded.session,
                environment = excluded.environment, version = excluded.version,
                slot = excluded.slot, labels = excluded.labels,
                last_seen = excluded.last_seen""",
            (
                host,
                online,
                session,
                environment,
                version,
                slot,
                encode_json(labels, "host labels"),
                last_seen,
            ),
        )

    async def list_hosts(self) -> list[HostRecord]:
        rows = await self.fetch(f"SELECT {_HOST_COLUMNS} FROM hosts ORDER BY host")
        return [host_from_row(row) for row in rows]

    async def open_alert(
        self, key: str, host: str | None, rule: str, started: float, evidence: Mapping[str, Any]
    ) -> bool:
        inserted = await self.execute(
            """INSERT INTO alerts (key, host, rule, started, evidence)
            VALUES (%s, %s, %s, %s, %s::jsonb)
            ON CONFLICT (key) WHERE resolved IS NULL DO NOTHING""",
            (key, host, rule, started, encode_json(evidence, "alert evidence")),
        )
        return inserted == 1

    async def resolve_alert(self, key: str, resolved: float) -> bool:
        updated = await self.execute(
            "UPDATE alerts SET resolved = %s WHERE key = %s AND resolved IS NULL", (resolved, key)
        )
        return updated == 1

    async def active_alerts(self) -> list[AlertRecord]:
        rows = await self.fetch(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE resolved IS NULL ORDER BY started, id"
        )
        return [alert_from_row(row) for row in rows]

    async def append_event(
        self,
        time: float,
        kind: str,
        message: str,
        deployment: str | None = None,
        host: str | None = None,
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        *,
        fencing: int | None = None,
    ) -> int:
        encoded = encode_json(evidence, "event evidence")
        if fencing is not None:
            await self.fence(fencing)
        # The counter row (see the migration) makes seq order equal commit order.
        rows = await self.fetch(
            """WITH next AS (
                UPDATE event_counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq
            )
            INSERT INTO events (seq, time, kind, message, deployment, host, actor, evidence)
            SELECT last_seq, %s, %s, %s, %s, %s, %s, %s::jsonb FROM next RETURNING seq""",
            (time, kind, message, deployment, host, actor, encoded),
        )
        return int(rows[0][0])

    async def events(
        self, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[Event]:
        rows = await self.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events "
            "WHERE seq > %s AND (%s::text IS NULL OR deployment = %s) ORDER BY seq LIMIT %s",
            (after_seq, deployment, deployment, limit),
        )
        return [event_from_row(row) for row in rows]
