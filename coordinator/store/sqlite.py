"""The embedded default store: one SQLite file in the coordinator's state directory.

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

# PLR0917: signatures are the Store contract's (see base.py). S608: every piece put into
# SQL with an f-string is a module constant or a placeholder list; values are bound.
# ruff: noqa: PLR0917, S608

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from coordinator.store.base import (
    DEFAULT_TIMEOUT,
    Store,
    Transaction,
    TransactionGuard,
    refuse_nested,
)
from coordinator.store.errors import StaleLeaderError, StoreError
from coordinator.store.migrations import SQLITE_MIGRATIONS_TABLE, check_applied
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

P = ParamSpec("P")
T = TypeVar("T")

_HOST_COLUMNS = "host, online, session, environment, version, slot, labels, last_seen"
_ALERT_COLUMNS = "key, host, rule, started, resolved, evidence"
_EVENT_COLUMNS = "seq, time, kind, message, deployment, host, actor, evidence"
_FINAL_LIST = ", ".join(f"'{state}'" for state in sorted(FINAL_RESULTS))
_TERMINAL_LIST = ", ".join(f"'{state}'" for state in sorted(TERMINAL_STATES))


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


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SqliteStore(Store):
    """The store in one SQLite file (created if absent; its directory must exist)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, ...)`` on the worker thread within the timeout."""
        if self._executor is None or self._conn is None:
            raise StoreError(f"{self!r} is not open")
        conn = self._conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return await loop.run_in_executor(self._executor, lambda: fn(conn, *args, **kwargs))
        except TimeoutError as exc:
            raise StoreError(f"{self!r}: no answer within {self.timeout:g} s") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self!r}: {exc}") from exc

    async def _roll_back(self) -> None:
        # Queued behind whatever still runs on the worker, so it undoes exactly the
        # transaction it follows; errors here would only hide the original one.
        with suppress(StoreError):
            await self._call(_rollback)

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

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[Transaction]:
        refuse_nested(self)
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
            tx = _SqliteTransaction(self)
            try:
                await self._call(_execute, "BEGIN IMMEDIATE" if write else "BEGIN")
                with TransactionGuard(self):
                    yield tx
                tx.ensure_committable()
                await self._call(_execute, "COMMIT")
            except BaseException:
                await self._roll_back()
                raise
        finally:
            self._lock.release()

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction(write=True)

    def _reading(self) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction(write=False)

    async def ping(self) -> None:
        # Reads the schema page, so a file that vanished or went unreadable shows.
        await self._call(_execute, "SELECT count(*) FROM sqlite_master")

    async def schema_version(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if exists is None:
                return 0
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

        async with self._transaction(write=False):
            return await self._call(run)

    async def migrate(self) -> list[int]:
        applied_now: list[int] = []
        while True:
            # One transaction per migration: the write lock makes a second coordinator
            # on the same file wait, then find the migration applied and skip it.
            async with self._transaction(write=True):
                version = await self._call(_apply_next_migration)
            if version is None:
                return applied_now
            applied_now.append(version)


def _execute(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute(sql)


def _apply_next_migration(conn: sqlite3.Connection) -> int | None:
    conn.execute(SQLITE_MIGRATIONS_TABLE)
    applied = dict(conn.execute("SELECT version, name FROM schema_migrations").fetchall())
    pending = check_applied(applied)
    if not pending:
        return None
    migration = pending[0]
    for statement in migration.sqlite:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
        (migration.version, migration.name, time.time()),
    )
    return migration.version


class _SqliteTransaction(Transaction):
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._fenced: int | None = None
        self.failed = False

    def ensure_committable(self) -> None:
        # A caller may catch an operation's error and carry on; its transaction must
        # still not commit, or half of an engine step would be stored.
        if self.failed:
            raise StoreError("an operation in this transaction failed; rolled back")

    async def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        try:
            return await self._store._call(fn, *args, **kwargs)
        except BaseException:
            self.failed = True
            raise

    async def fence(self, token: int) -> None:
        if token == self._fenced:
            return

        def run(conn: sqlite3.Connection) -> None:
            raised = conn.execute(
                "UPDATE leader_fence SET token = ? WHERE id = 1 AND token <= ?", (token, token)
            ).rowcount
            if not raised:
                current = conn.execute("SELECT token FROM leader_fence WHERE id = 1").fetchone()
                raise StaleLeaderError(token, int(current[0]))

        await self._call(run)
        self._fenced = token

    async def current_fence(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT token FROM leader_fence WHERE id = 1").fetchone()[0])

        return await self._call(run)

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
        await self._call(
            _execute_params,
            """INSERT INTO deployments
                (id, environment, version, strategy, state, snapshot, fencing, created, updated)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                environment = excluded.environment, version = excluded.version,
                strategy = excluded.strategy, state = excluded.state,
                snapshot = excluded.snapshot, fencing = excluded.fencing,
                updated = excluded.updated""",
            (deployment_id, environment, version, strategy, state, snapshot, fencing, at, at),
        )

    async def save_engine_state(self, snapshot: bytes, time: float, *, fencing: int) -> None:
        await self.fence(fencing)
        await self._call(
            _execute_params,
            """INSERT INTO engine_state (id, snapshot, time, fencing) VALUES (1, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                snapshot = excluded.snapshot, time = excluded.time, fencing = excluded.fencing""",
            (snapshot, time, fencing),
        )

    async def load_engine_state(self) -> tuple[bytes, float] | None:
        rows = await self._call(_fetch, "SELECT snapshot, time FROM engine_state WHERE id = 1", ())
        return (bytes(rows[0][0]), float(rows[0][1])) if rows else None

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        rows = await self._call(
            _fetch, f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)
        )
        return deployment_from_row(rows[0]) if rows else None

    async def list_deployments(
        self,
        limit: int = 100,
        environment: str | None = None,
        states: Collection[str] | None = None,
    ) -> list[DeploymentRecord]:
        where = ["1 = 1"]
        params: list[Any] = []
        if environment is not None:
            where.append("environment = ?")
            params.append(environment)
        if states is not None:
            states = list(states)
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        params.append(limit)
        rows = await self._call(
            _fetch,
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT ?",
            tuple(params),
        )
        return [deployment_from_row(row) for row in rows]

    async def active_deployments(self) -> list[DeploymentRecord]:
        rows = await self._call(
            _fetch,
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments "
            f"WHERE state NOT IN ({_TERMINAL_LIST}) ORDER BY seq",
            (),
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
        await self._call(
            _execute_params,
            """INSERT INTO steps (deployment_id, step_index, percent, started, ended, outcome)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (deployment_id, step_index) DO UPDATE SET
                percent = excluded.percent,
                ended = coalesce(excluded.ended, steps.ended),
                outcome = coalesce(excluded.outcome, steps.outcome)""",
            (deployment_id, step_index, percent, started, ended, outcome),
        )

    async def steps(self, deployment_id: str) -> list[StepRecord]:
        rows = await self._call(
            _fetch,
            f"SELECT {STEP_COLUMNS} FROM steps WHERE deployment_id = ? ORDER BY step_index",
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
        inserted = await self._call(
            _execute_params,
            """INSERT INTO commands
                (id, deployment_id, host, action, payload, created, fencing)
            VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING""",
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
        inserted = await self._call(
            _execute_params,
            """INSERT INTO command_results (command_id, state, detail, time)
            SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM commands WHERE id = ?)
            ON CONFLICT (command_id, state) DO NOTHING""",
            (command_id, state, detail, time, command_id),
        )
        return inserted == 1

    async def _commands(self, where: str, params: tuple[Any, ...]) -> list[CommandRecord]:
        def run(conn: sqlite3.Connection) -> list[CommandRecord]:
            commands = conn.execute(
                f"SELECT {COMMAND_COLUMNS} FROM commands c WHERE {where} ORDER BY created, id",
                params,
            ).fetchall()
            results = conn.execute(
                f"SELECT {RESULT_COLUMNS} FROM command_results "
                f"WHERE command_id IN (SELECT id FROM commands c WHERE {where}) ORDER BY id",
                params,
            ).fetchall()
            return commands_from_rows(commands, results)

        return await self._call(run)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        found = await self._commands("c.id = ?", (command_id,))
        return found[0] if found else None

    async def pending_commands(self) -> list[CommandRecord]:
        return await self._commands(
            "NOT EXISTS (SELECT 1 FROM command_results r WHERE r.command_id = c.id "
            f"AND r.state IN ({_FINAL_LIST}))",
            (),
        )

    async def commands(self, deployment_id: str) -> list[CommandRecord]:
        return await self._commands("c.deployment_id = ?", (deployment_id,))

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
        await self._call(
            _execute_params,
            f"""INSERT INTO hosts ({_HOST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (host) DO UPDATE SET
                online = excluded.online, session = excluded.session,
                environment = excluded.environment, version = excluded.version,
                slot = excluded.slot, labels = excluded.labels,
                last_seen = excluded.last_seen""",
            (
                host,
                int(online),
                session,
                environment,
                version,
                slot,
                encode_json(labels, "host labels"),
                last_seen,
            ),
        )

    async def list_hosts(self) -> list[HostRecord]:
        rows = await self._call(_fetch, f"SELECT {_HOST_COLUMNS} FROM hosts ORDER BY host", ())
        return [host_from_row(row) for row in rows]

    async def open_alert(
        self, key: str, host: str | None, rule: str, started: float, evidence: Mapping[str, Any]
    ) -> bool:
        inserted = await self._call(
            _execute_params,
            """INSERT INTO alerts (key, host, rule, started, evidence) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (key) WHERE resolved IS NULL DO NOTHING""",
            (key, host, rule, started, encode_json(evidence, "alert evidence")),
        )
        return inserted == 1

    async def resolve_alert(self, key: str, resolved: float) -> bool:
        updated = await self._call(
            _execute_params,
            "UPDATE alerts SET resolved = ? WHERE key = ? AND resolved IS NULL",
            (resolved, key),
        )
        return updated == 1

    async def active_alerts(self) -> list[AlertRecord]:
        rows = await self._call(
            _fetch,
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE resolved IS NULL ORDER BY started, id",
            (),
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

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                """INSERT INTO events (time, kind, message, deployment, host, actor, evidence)
                VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (time, kind, message, deployment, host, actor, encoded),
            )
            assert cursor.lastrowid is not None  # an INTEGER PRIMARY KEY insert has one
            return cursor.lastrowid

        return await self._call(run)

    async def events(
        self, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[Event]:
        if deployment is None:
            sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
            params: tuple[Any, ...] = (after_seq, limit)
        else:
            sql = (
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? AND deployment = ? "
                "ORDER BY seq LIMIT ?"
            )
            params = (after_seq, deployment, limit)
        rows = await self._call(_fetch, sql, params)
        return [event_from_row(row) for row in rows]


def _execute_params(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return conn.execute(sql, params).rowcount


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()
