"""The coordinator's durable store: the interface both backends keep.

Theory of operation. Every operation runs inside a transaction. ``Store.transaction()``
opens one explicitly, so the daemon can persist one engine step (the deployment
snapshot, the commands it decided on and the events explaining why) atomically: a
command is stored before it is published, and a snapshot never commits without its
commands. The one-shot methods on ``Store`` (``save_deployment`` and friends) are the
same operations, each in a transaction of its own.

Fencing. With active/standby, a coordinator that lost its Redis lease may not know it
yet. Writes that change deployment or command state carry the lease's fencing token;
the store keeps the highest token it has seen in the one-row ``leader_fence`` table,
raised in the same transaction as the write, and refuses a lower token with
:class:`StaleLeaderError`, after which the whole transaction rolls back: nothing of it
is applied, even if the caller catches the error. The fence row stays locked until the
writing transaction ends, so a new leader's first write waits for the old leader's
open transaction and then shuts it out for good. (Call ``tx.fence(token)`` first to
take that lock before anything else in a transaction.)

Timeouts. Every call is bounded by the store's ``timeout`` (PostgreSQL adds at most
twice a short grace to cut off a query the server does not answer) and raises
:class:`StoreError` when it runs out, so a dead database holds the coordinator rather
than hanging it. A commit that times out has an unknown outcome, as with any database;
the writes are upserts or insert-if-absent so that the caller can simply retry them.
"""

# The store's signatures follow the daemon's contract: records are passed positionally,
# the fencing token is keyword-only so it can never be passed by accident.
# ruff: noqa: PLR0917

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, Self

from coordinator.store.errors import StoreError
from coordinator.store.records import (
    AlertRecord,
    CommandRecord,
    DeploymentRecord,
    HostRecord,
    ResultState,
    StepRecord,
)
from shared.messages import Event

DEFAULT_TIMEOUT: Final = 5.0


class Transaction(ABC):
    """The operations of one atomic unit of work. Obtain one from ``Store.transaction()``.

    A transaction in which any operation raised never commits: leaving the ``async
    with`` block rolls it back, whether or not the caller caught the error.
    """

    @abstractmethod
    async def fence(self, token: int) -> None:
        """Raise StaleLeaderError if ``token`` is below the highest seen, else record it."""

    @abstractmethod
    async def current_fence(self) -> int:
        """The highest fencing token the store has seen (0 on a fresh store)."""

    # -- deployments and steps
    @abstractmethod
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
        """Insert or replace a deployment; ``created`` keeps the first save's time."""

    @abstractmethod
    async def get_deployment(self, deployment_id: str) -> DeploymentRecord | None: ...

    # -- the engine's snapshot
    @abstractmethod
    async def save_engine_state(self, snapshot: bytes, time: float, *, fencing: int) -> None:
        """Replace the engine's resumable state (one row)."""

    @abstractmethod
    async def load_engine_state(self) -> tuple[bytes, float] | None:
        """The last saved engine snapshot and its engine time, or None on a fresh store."""

    @abstractmethod
    async def list_deployments(
        self,
        limit: int = 100,
        environment: str | None = None,
        states: Collection[str] | None = None,
    ) -> list[DeploymentRecord]:
        """Newest (most recently created) first."""

    @abstractmethod
    async def active_deployments(self) -> list[DeploymentRecord]:
        """Deployments not in TERMINAL_STATES, oldest first: the ones to resume."""

    @abstractmethod
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
        """Insert or update one step. A step starts once, so ``started`` keeps its first
        value, and a later call with ``ended``/``outcome`` of None does not erase them:
        replaying a step's start after a restart loses nothing."""

    @abstractmethod
    async def steps(self, deployment_id: str) -> list[StepRecord]: ...

    # -- commands
    @abstractmethod
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
        """Insert if absent; True if inserted. Saving an id again changes nothing, so a
        crash between storing and publishing re-sends the very same command."""

    @abstractmethod
    async def record_command_result(
        self,
        command_id: str,
        state: ResultState,
        detail: str,
        time: float,
        *,
        fencing: int | None = None,
    ) -> bool:
        """Append to the command's result history; True if recorded. False when the
        command is unknown or already has this state (agents answer replays with the
        first result, and MQTT delivers at least once): both mean nothing to do."""

    @abstractmethod
    async def get_command(self, command_id: str) -> CommandRecord | None: ...

    @abstractmethod
    async def pending_commands(self) -> list[CommandRecord]:
        """Commands with no final result, oldest first: what to resend after a restart."""

    @abstractmethod
    async def commands(self, deployment_id: str) -> list[CommandRecord]: ...

    # -- hosts
    @abstractmethod
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
    ) -> None: ...

    @abstractmethod
    async def list_hosts(self) -> list[HostRecord]:
        """Every host ever seen, by name."""

    # -- alerts
    @abstractmethod
    async def open_alert(
        self, key: str, host: str | None, rule: str, started: float, evidence: Mapping[str, Any]
    ) -> bool:
        """Open an alert unless one with this key is already active; True if opened."""

    @abstractmethod
    async def resolve_alert(self, key: str, resolved: float) -> bool:
        """Resolve the active alert with this key; True if there was one."""

    @abstractmethod
    async def active_alerts(self) -> list[AlertRecord]: ...

    # -- event log
    @abstractmethod
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
        """Append one event and return its seq. Seqs strictly increase in commit order,
        so a reader that saw seq N and asks for ``after_seq=N`` misses nothing."""

    @abstractmethod
    async def events(
        self, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[Event]:
        """Events with seq > after_seq, in seq order."""


# The transaction open in this task, so that a one-shot store method called inside it
# fails at once with a clear error instead of deadlocking (SQLite) or silently writing
# outside it (PostgreSQL). A task spawned inside the block inherits the context but is
# not the owner: it simply waits its turn like any other task.
class TransactionGuard:
    """Marks a transaction of one store open in the current task (a context manager)."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.owner = asyncio.current_task()

    def __enter__(self) -> Self:
        self._token = _open_transaction.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        _open_transaction.reset(self._token)


_open_transaction: ContextVar[TransactionGuard | None] = ContextVar(
    "rollguard_store_transaction", default=None
)


def refuse_nested(store: object) -> None:
    guard = _open_transaction.get()
    if (
        guard is not None
        and guard.store is store
        and guard.owner is not None
        and guard.owner is asyncio.current_task()
    ):
        raise StoreError(
            "a store method was called while this task holds an open transaction on the "
            "same store; call the method on the transaction object instead"
        )


class Store(ABC):
    """The coordinator's durable store. ``open()``, then ``migrate()``, then use; or
    ``async with store:`` for open and close. Every one-shot method below runs in a
    transaction of its own; see :class:`Transaction` for what each does."""

    timeout: float

    @abstractmethod
    async def open(self) -> None:
        """Connect; raises StoreError if the database is unreachable within the timeout."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations in order, each in its own transaction; return the
        versions applied (empty when up to date). Safe to run from two coordinators at
        once. Refuses a database migrated by a newer rollguard."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty database."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreError unless the database answers within the timeout (readiness)."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with store.transaction() as tx:`` commits on normal exit, rolls back
        on an exception, which propagates unchanged."""

    @abstractmethod
    def _reading(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction for reads only (SQLite need not take the write lock)."""

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

    # -- one-shot operations, each in its own transaction

    async def current_fence(self) -> int:
        async with self._reading() as tx:
            return await tx.current_fence()

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
        async with self.transaction() as tx:
            await tx.save_deployment(
                deployment_id,
                environment,
                version,
                strategy,
                state,
                snapshot,
                fencing=fencing,
                updated=updated,
            )

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        async with self._reading() as tx:
            return await tx.get_deployment(deployment_id)

    async def save_engine_state(self, snapshot: bytes, time: float, *, fencing: int) -> None:
        async with self.transaction() as tx:
            await tx.save_engine_state(snapshot, time, fencing=fencing)

    async def load_engine_state(self) -> tuple[bytes, float] | None:
        async with self._reading() as tx:
            return await tx.load_engine_state()

    async def list_deployments(
        self,
        limit: int = 100,
        environment: str | None = None,
        states: Collection[str] | None = None,
    ) -> list[DeploymentRecord]:
        async with self._reading() as tx:
            return await tx.list_deployments(limit, environment, states)

    async def active_deployments(self) -> list[DeploymentRecord]:
        async with self._reading() as tx:
            return await tx.active_deployments()

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
        async with self.transaction() as tx:
            await tx.record_step(
                deployment_id, step_index, percent, started, ended, outcome, fencing=fencing
            )

    async def steps(self, deployment_id: str) -> list[StepRecord]:
        async with self._reading() as tx:
            return await tx.steps(deployment_id)

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
        async with self.transaction() as tx:
            return await tx.save_command(
                command_id, deployment_id, host, action, payload, created, fencing=fencing
            )

    async def record_command_result(
        self,
        command_id: str,
        state: ResultState,
        detail: str,
        time: float,
        *,
        fencing: int | None = None,
    ) -> bool:
        async with self.transaction() as tx:
            return await tx.record_command_result(command_id, state, detail, time, fencing=fencing)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        async with self._reading() as tx:
            return await tx.get_command(command_id)

    async def pending_commands(self) -> list[CommandRecord]:
        async with self._reading() as tx:
            return await tx.pending_commands()

    async def commands(self, deployment_id: str) -> list[CommandRecord]:
        async with self._reading() as tx:
            return await tx.commands(deployment_id)

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
        async with self.transaction() as tx:
            await tx.upsert_host(
                host, online, session, environment, version, slot, labels, last_seen
            )

    async def list_hosts(self) -> list[HostRecord]:
        async with self._reading() as tx:
            return await tx.list_hosts()

    async def open_alert(
        self, key: str, host: str | None, rule: str, started: float, evidence: Mapping[str, Any]
    ) -> bool:
        async with self.transaction() as tx:
            return await tx.open_alert(key, host, rule, started, evidence)

    async def resolve_alert(self, key: str, resolved: float) -> bool:
        async with self.transaction() as tx:
            return await tx.resolve_alert(key, resolved)

    async def active_alerts(self) -> list[AlertRecord]:
        async with self._reading() as tx:
            return await tx.active_alerts()

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
        async with self.transaction() as tx:
            return await tx.append_event(
                time, kind, message, deployment, host, actor, evidence, fencing=fencing
            )

    async def events(
        self, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[Event]:
        async with self._reading() as tx:
            return await tx.events(after_seq, deployment, limit)
