"""The coordinator's durable store, written once for SQLite and PostgreSQL.

Theory of operation. Every operation runs inside a transaction. ``Store.transaction()``
opens one, so the daemon persists one engine step (the deployment rows, the engine
snapshot, the commands it decided on, the events explaining why and the alerts it fired
or resolved) atomically: a command is stored before it is published, and a snapshot
never commits without its commands. Writes exist only on the transaction; ``write``
runs one operation in a transaction of its own. Reads exist on both: on the store each
runs in a read transaction of its own.

Below the store, a backend (sqlite.py, postgres.py) is a small connection interface:
open, close, ping, and ``begin()`` a transaction whose connection can ``execute`` and
``fetch``. SQL is written once with ``?`` placeholders; the backend names the few
statements that differ. Rows are mapped to records (records.py) by column name.

Fencing. With active/standby, a coordinator that lost its Redis lease may not know it
yet. Writes that change deployment or command state carry the lease's fencing token;
the store keeps the highest token it has seen in the one-row ``leader_fence`` table,
raised in the same transaction as the write, and refuses a lower token with
:class:`StaleLeaderError`, after which the whole transaction rolls back: nothing of it
is applied, even if the caller catches the error. The fence row stays locked until the
writing transaction ends, so a new leader's first write waits for the old leader's
open transaction and then shuts it out for good.

Timeouts. Every call is bounded by the store's ``timeout`` and raises
:class:`StoreError` when it runs out, so a dead database holds the coordinator rather
than hanging it. A commit that times out has an unknown outcome, as with any database;
the writes are upserts or insert-if-absent so that the caller can simply retry them.
"""

# S608: SQL is assembled only from module constants and record field names; values are
# always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from functools import cache
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar

import msgspec

from coordinator.store import schema
from coordinator.store.errors import StaleLeaderError, StoreError
from coordinator.store.records import (
    JSON_FIELDS,
    RESULT_STATES,
    AlertRow,
    CommandResultRow,
    CommandRow,
    DeploymentRow,
    EngineStateRow,
)
from shared.messages import Event

DEFAULT_TIMEOUT: Final = 5.0
T = TypeVar("T")
R = TypeVar("R", bound=msgspec.Struct)
Fetched = dict[str, Any]


class Connection(Protocol):
    """One transaction's connection. SQL uses ``?`` placeholders."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Fetched]:
        """Run one query; its rows by column name."""

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement once per row, in one call to the database driver; the
        number of rows changed in all."""


class Backend(Protocol):
    """What a database gives the store. Every call within ``timeout``, else StoreError."""

    dialect: schema.DialectName
    timeout: float
    # The statements that differ: appending an event (returns ``seq``), whether
    # ``schema_migrations`` exists (returns ``n``), and serialising migrations.
    APPEND_EVENT: str
    MIGRATIONS_EXIST: str
    LOCK_MIGRATIONS: str | None

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    def begin(self, *, write: bool) -> AbstractAsyncContextManager[Connection]:
        """A transaction: committed on normal exit, rolled back on an exception."""


_json: Final = msgspec.json.Encoder()
_EVENT_FIELDS: Final = ("time", "kind", "message", "deployment", "host", "actor", "evidence")


def _encode_json(value: Any, what: str) -> str:
    """Evidence is stored as JSON text, readable from any SQL prompt."""
    try:
        return _json.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise StoreError(f"{what} is not JSON-encodable: {exc}") from exc


def _record(row: Fetched, kind: type[R], table: str) -> R:
    """A row as a record, by column name; JSON columns decoded."""
    for name in JSON_FIELDS.get(table, ()):
        row[name] = msgspec.json.decode(row[name])
    return msgspec.convert(row, kind)


@cache
def _columns(kind: type[msgspec.Struct], exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(name for name in kind.__struct_fields__ if name not in exclude)


def _insert(table: str, columns: Sequence[str], conflict: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))}) {conflict}"
    )


def _select(kind: type[msgspec.Struct], table: str, prefix: str = "") -> str:
    return f"SELECT {', '.join(prefix + c for c in _columns(kind))} FROM {table}"


_DEPLOYMENT_COLUMNS: Final = _columns(DeploymentRow)
_SAVE_DEPLOYMENT: Final = _insert(
    "deployments",
    _DEPLOYMENT_COLUMNS,
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _DEPLOYMENT_COLUMNS if c not in {"id", "created"}),
)
_SAVE_ENGINE_STATE: Final = _insert(
    "engine_state",
    ("id", *_columns(EngineStateRow)),
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _columns(EngineStateRow)),
)
_COMMAND_COLUMNS: Final = _columns(CommandRow, ("results",))
_SAVE_COMMAND: Final = _insert("commands", _COMMAND_COLUMNS, "ON CONFLICT (id) DO NOTHING")
_RECORD_RESULT: Final = (
    "INSERT INTO command_results (command_id, state, detail, time) "
    "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM commands WHERE id = ?) "
    "ON CONFLICT (command_id, state) DO NOTHING"
)
_ALERT_COLUMNS: Final = _columns(AlertRow, ("resolved",))
_OPEN_ALERT: Final = _insert(
    "alerts", _ALERT_COLUMNS, "ON CONFLICT (key) WHERE resolved IS NULL DO NOTHING"
)
_COMMANDS: Final = (
    _select(CommandRow, "commands c", "c.").replace("c.results", "r.state, r.detail, r.time")
    + " LEFT JOIN command_results r ON r.command_id = c.id"
)


class Reads:
    """The queries, on a store (each in a transaction of its own) or a transaction."""

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Fetched]:
        raise NotImplementedError

    async def current_fence(self) -> int:
        """The highest fencing token the store has seen (0 on a fresh store)."""
        rows = await self._fetch("SELECT token FROM leader_fence WHERE id = 1")
        return int(rows[0]["token"])

    async def get_deployment(self, deployment_id: str) -> DeploymentRow | None:
        rows = await self._fetch(
            _select(DeploymentRow, "deployments") + " WHERE id = ?", (deployment_id,)
        )
        return _record(rows[0], DeploymentRow, "deployments") if rows else None

    async def list_deployments(
        self,
        limit: int = 100,
        environment: str | None = None,
        states: Collection[str] | None = None,
    ) -> list[DeploymentRow]:
        """Newest (most recently created) first."""
        where, params = ["1 = 1"], list[Any]()
        if environment is not None:
            where.append("environment = ?")
            params.append(environment)
        if states is not None:
            if not states:
                return []
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        rows = await self._fetch(
            _select(DeploymentRow, "deployments")
            + f" WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [_record(row, DeploymentRow, "deployments") for row in rows]

    async def load_engine_state(self) -> EngineStateRow | None:
        """The last saved engine snapshot, or None on a fresh store."""
        rows = await self._fetch(_select(EngineStateRow, "engine_state") + " WHERE id = 1")
        return _record(rows[0], EngineStateRow, "engine_state") if rows else None

    async def _commands(self, where: str, params: Sequence[Any]) -> list[CommandRow]:
        rows = await self._fetch(
            f"{_COMMANDS} WHERE {where} ORDER BY c.created, c.id, r.id", params
        )
        commands: dict[str, tuple[Fetched, list[CommandResultRow]]] = {}
        for row in rows:
            state, detail, at = row.pop("state"), row.pop("detail"), row.pop("time")
            _, results = commands.setdefault(row["id"], (row, []))
            if state is not None:
                results.append(CommandResultRow(state=state, detail=detail, time=at))
        return [
            msgspec.convert({**row, "results": results}, CommandRow)
            for row, results in commands.values()
        ]

    async def get_command(self, command_id: str) -> CommandRow | None:
        found = await self._commands("c.id = ?", (command_id,))
        return found[0] if found else None

    async def commands(self, deployment_id: str) -> list[CommandRow]:
        """A deployment's commands with their results, oldest first."""
        return await self._commands("c.deployment_id = ?", (deployment_id,))

    async def alerts(self, *, active_only: bool = False, limit: int = 100) -> list[AlertRow]:
        """Alerts, newest first; only the unresolved ones with ``active_only``."""
        where = "WHERE resolved IS NULL" if active_only else ""
        rows = await self._fetch(
            f"{_select(AlertRow, 'alerts')} {where} ORDER BY started DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [_record(row, AlertRow, "alerts") for row in rows]

    async def events(
        self, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[Event]:
        """Events with seq > after_seq, in seq order."""
        rows = await self._fetch(
            _select(Event, "events")
            + " WHERE seq > ? AND (CAST(? AS text) IS NULL OR deployment = ?) "
            "ORDER BY seq LIMIT ?",
            (after_seq, deployment, deployment, limit),
        )
        return [_record(row, Event, "events") for row in rows]


class Transaction(Reads):
    """One atomic unit of work; obtain one from ``Store.transaction()``.

    A transaction in which any operation raised never commits: leaving the ``async
    with`` block rolls it back, whether or not the caller caught the error.
    """

    def __init__(self, conn: Connection, backend: Backend) -> None:
        self._conn = conn
        self._backend = backend
        self._fenced: int | None = None
        self.failed = False

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except BaseException:
            # Also a StaleLeaderError or a timeout, after which nothing may commit.
            self.failed = True
            raise

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Fetched]:
        return await self._guard(self._conn.fetch(sql, params))

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._guard(self._conn.execute(sql, params))

    async def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        return await self._guard(self._conn.execute_many(sql, rows))

    async def fence(self, token: int) -> None:
        """Raise StaleLeaderError if ``token`` is below the highest seen, else record it."""
        if token == self._fenced:
            return
        # The UPDATE locks the fence row until this transaction ends, so fenced writers
        # are serialised: a writer with a lower token that was waiting re-reads the row
        # after the higher one commits and then matches nothing.
        raised = await self._execute(
            "UPDATE leader_fence SET token = ? WHERE id = 1 AND token <= ?", (token, token)
        )
        if not raised:
            current = await self.current_fence()
            self.failed = True
            raise StaleLeaderError(token, current)
        self._fenced = token

    async def save_deployment(self, record: DeploymentRow) -> None:
        """Insert or replace a deployment (fenced by its token); ``created`` keeps the
        first save's value."""
        await self.fence(record.fencing)
        await self._execute(_SAVE_DEPLOYMENT, [getattr(record, c) for c in _DEPLOYMENT_COLUMNS])

    async def save_engine_state(self, record: EngineStateRow) -> None:
        """Replace the engine's resumable state (fenced by its token)."""
        await self.fence(record.fencing)
        await self._execute(_SAVE_ENGINE_STATE, (1, record.snapshot, record.time, record.fencing))

    async def save_command(self, record: CommandRow) -> bool:
        """Insert if absent (fenced by its token); True if inserted. Saving an id again
        changes nothing, so a crash between storing and publishing re-sends the very
        same command. Its results are recorded with ``record_command_result``."""
        return await self.save_commands([record]) == 1

    async def save_commands(self, records: Sequence[CommandRow]) -> int:
        """``save_command`` for many in one call to the database (a rollback's thousand
        commands were as many round trips through the event loop and the driver); the
        number inserted."""
        for token in sorted({r.fencing for r in records}):
            await self.fence(token)
        rows = [[getattr(r, c) for c in _COMMAND_COLUMNS] for r in records]
        return await self._execute_many(_SAVE_COMMAND, rows)

    async def record_command_result(
        self, command_id: str, result: CommandResultRow, *, fencing: int | None = None
    ) -> bool:
        """Append to the command's result history; True if recorded. False when the
        command is unknown or already has this state (agents answer replays with the
        first result, and MQTT delivers at least once): both mean nothing to do."""
        return await self.record_command_results([(command_id, result)], fencing=fencing) == 1

    async def record_command_results(
        self, results: Sequence[tuple[str, CommandResultRow]], *, fencing: int | None = None
    ) -> int:
        """``record_command_result`` for many (command id, result) in one call to the
        database; the number recorded. A state that is not a result state refuses the
        whole batch before anything is written."""
        for _, result in results:
            if result.state not in RESULT_STATES:
                raise StoreError(
                    f"command result state {result.state!r} is not one of {RESULT_STATES}"
                )
        if fencing is not None:
            await self.fence(fencing)
        return await self._execute_many(
            _RECORD_RESULT,
            [(c, r.state, r.detail, r.time, c) for c, r in results],
        )

    async def open_alert(self, record: AlertRow) -> bool:
        """Open an alert unless one with its key is active; True if opened."""
        params = [getattr(record, c) for c in _ALERT_COLUMNS]
        params[_ALERT_COLUMNS.index("evidence")] = _encode_json(record.evidence, "alert evidence")
        return await self._execute(_OPEN_ALERT, params) == 1

    async def resolve_alert(self, key: str, resolved: float) -> bool:
        """Resolve the active alert with this key; True if there was one."""
        changed = await self._execute(
            "UPDATE alerts SET resolved = ? WHERE key = ? AND resolved IS NULL", (resolved, key)
        )
        return changed == 1

    async def append_event(self, event: Event, *, fencing: int | None = None) -> int:
        """Append one event (its ``seq`` is ignored) and return its seq. Seqs strictly
        increase in commit order, so a reader that saw seq N and asks for
        ``after_seq=N`` misses nothing."""
        evidence = _encode_json(event.evidence, "event evidence")
        if fencing is not None:
            await self.fence(fencing)
        params = [getattr(event, name) for name in _EVENT_FIELDS[:-1]]
        rows = await self._fetch(self._backend.APPEND_EVENT, (*params, evidence))
        return int(rows[0]["seq"])


# The transaction open in this task, so that a one-shot store call made inside it fails
# at once with a clear error instead of deadlocking (SQLite) or silently running outside
# it (PostgreSQL). A task spawned inside the block inherits the context but is not the
# owner: it simply waits its turn like any other task.
_open_transaction: ContextVar[tuple[object, asyncio.Task[Any] | None] | None] = ContextVar(
    "rollguard_store_transaction", default=None
)


class Store(Reads):
    """The coordinator's durable store. ``open()``, then ``migrate()``, then use; or
    ``async with store:`` for open and close."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.timeout = backend.timeout

    async def open(self) -> None:
        """Connect; raises StoreError if the database is unreachable within the timeout."""
        await self.backend.open()

    async def close(self) -> None:
        """Release connections. Idempotent."""
        await self.backend.close()

    async def ping(self) -> None:
        """Raise StoreError unless the database answers within the timeout (readiness)."""
        await self.backend.ping()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[Transaction]:
        current = _open_transaction.get()
        task = asyncio.current_task()
        if current is not None and current[0] is self and current[1] is task:
            raise StoreError(
                "a store method was called while this task holds an open transaction on "
                "the same store; call the method on the transaction object instead"
            )
        async with self.backend.begin(write=write) as conn:
            tx = Transaction(conn, self.backend)
            token = _open_transaction.set((self, task))
            try:
                yield tx
            finally:
                _open_transaction.reset(token)
            # A caller may catch an operation's error and carry on; its transaction
            # must still not commit, or half of an engine step would be stored.
            if tx.failed:
                raise StoreError("an operation in this transaction failed; rolled back")

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with store.transaction() as tx:`` commits on normal exit, rolls back
        on an exception, which propagates unchanged."""
        return self._transaction(write=True)

    async def write(self, operation: Callable[[Transaction], Awaitable[T]]) -> T:
        """One operation in a transaction of its own: ``await store.write(lambda tx:
        tx.save_deployment(record))``."""
        async with self.transaction() as tx:
            return await operation(tx)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Fetched]:
        # Reads need not take SQLite's write lock.
        async with self._transaction(write=False) as tx:
            return await tx._fetch(sql, params)

    async def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty database."""
        async with self._transaction(write=False) as tx:
            if not (await tx._fetch(self.backend.MIGRATIONS_EXIST))[0]["n"]:
                return 0
            rows = await tx._fetch("SELECT max(version) AS version FROM schema_migrations")
            return int(rows[0]["version"] or 0)

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order, each in its own transaction; return the
        versions applied (empty when up to date). Safe to run from two coordinators at
        once. Refuses a database migrated by a newer rollguard."""
        dialect = self.backend.dialect
        applied_now: list[int] = []
        while True:
            # One transaction per migration; the lock (SQLite: its write lock) makes a
            # second coordinator wait, then find the migration applied and skip it.
            async with self._transaction(write=True) as tx:
                if self.backend.LOCK_MIGRATIONS is not None:
                    await tx._fetch(self.backend.LOCK_MIGRATIONS)
                await tx._execute(schema.MIGRATIONS_TABLE.format_map(schema.TYPES[dialect]))
                rows = await tx._fetch("SELECT version, name FROM schema_migrations")
                todo = schema.pending(
                    {int(row["version"]): str(row["name"]) for row in rows}, schema.MIGRATIONS
                )
                if not todo:
                    return applied_now
                for statement in todo[0].render(dialect):
                    await tx._execute(statement)
                await tx._execute(
                    "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                    (todo[0].version, todo[0].name, time.time()),
                )
            applied_now.append(todo[0].version)
