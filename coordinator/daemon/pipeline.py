"""From the engine's actions to the world, in order: store first, then publish.

The engine runs synchronously on the ingest path; what it decides goes into one
queue drained by a single writer task. For each engine step the writer commits, in one
transaction, the engine snapshot, the deployment rows, the signed commands and the
events; only after the commit does it publish the commands and events and send the
notifications. So a crash at any point either loses the whole step (the engine is
restored from the store as it was before it) or re-sends exactly the stored commands,
with the same ids, which agents answer from memory.

When a commit fails (store unreachable, or a stale leader refused by the fence), the
step's commands are never published and the coordinator is told to hold: it drops its
engine and rebuilds it from the store once the store answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Final

import msgspec

from coordinator.daemon.eventhub import EventHub
from coordinator.daemon.notify import Notification, Notifier
from coordinator.daemon.outbox import Outbox
from coordinator.daemon.telemetry import Telemetry
from coordinator.engine import (
    CancelCommand,
    DeploymentChanged,
    EngineAction,
    Notify,
    OperatorReply,
    Record,
    RunPreflight,
    RunVerification,
    SendCommand,
)
from coordinator.store import (
    AlertRow,
    CommandRow,
    DeploymentRow,
    EngineStateRow,
    Store,
    StoreError,
    Transaction,
)
from shared.kinds import EventKind, notify_kind
from shared.messages import Command, Event

log = logging.getLogger("rollguard.pipeline")
QUEUE_LIMIT: Final = 100_000
# Publishes of one step in flight at once (see _together).
PUBLISH_WINDOW: Final = 64

Publish = Callable[[str, bytes, bool], Awaitable[None]]
SignCommand = Callable[[SendCommand], Command]


@dataclass
class Commit:
    """What one engine step commits: its actions, the saved state and the signed
    commands, stored in one transaction and then published."""

    actions: list[EngineAction]
    snapshot: bytes | None
    time: float
    fencing: int
    commands: list[Command] = field(default_factory=list)
    # Resolved once the step is committed (True) or failed to commit (False).
    done: asyncio.Future[bool] | None = None
    # When the engine took the step (perf_counter), for rollguard_step_stored_seconds.
    taken: float = field(default_factory=perf_counter)


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        outbox: Outbox,
        hub: EventHub,
        notifier: Notifier,
        telemetry: Telemetry,
        publish_command: Callable[[str, bytes], Awaitable[None]],
        publish_event: Callable[[Event], Awaitable[None]],
        run_preflight: Callable[[RunPreflight | RunVerification], None],
        on_store_failure: Callable[[Exception], None],
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._hub = hub
        self._notifier = notifier
        self._telemetry = telemetry
        self._publish_command = publish_command
        self._publish_event = publish_event
        self._run_preflight = run_preflight
        self._on_store_failure = on_store_failure
        self._queue: asyncio.Queue[Commit] = asyncio.Queue(QUEUE_LIMIT)

    def submit(self, step: Commit) -> None:
        """Queue a step; never blocks the ingest path."""
        self._queue.put_nowait(step)

    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        while True:
            step = await self._queue.get()
            try:
                await self._handle(step)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad step must not stop the writer
                log.exception("failed to carry out an engine step")
                if step.done is not None and not step.done.done():
                    step.done.set_result(False)

    def drop_pending(self) -> int:
        """Forget queued steps (after a store failure or losing the lease)."""
        dropped = 0
        while not self._queue.empty():
            step = self._queue.get_nowait()
            if step.done is not None and not step.done.done():
                step.done.set_result(False)
            dropped += 1
        return dropped

    async def _handle(self, step: Commit) -> None:
        try:
            events = await self._persist(step)
        except StoreError as exc:
            log.error("could not store an engine step; holding: %s", exc)
            if step.done is not None and not step.done.done():
                step.done.set_result(False)
            self._on_store_failure(exc)
            return
        self._telemetry.step_stored.observe(perf_counter() - step.taken)
        if step.done is not None and not step.done.done():
            step.done.set_result(True)
        commands = {command.id: command for command in step.commands}
        versions = {
            a.deployment_id: a.version for a in step.actions if isinstance(a, DeploymentChanged)
        }
        publishes: list[Awaitable[None]] = []
        for action in step.actions:
            match action:
                case SendCommand(command_id=command_id):
                    command = commands[command_id]
                    payload = self._outbox.add_command(command, step.time)
                    publishes.append(self._publish_command(command.host, payload))
                case CancelCommand(command_id=command_id):
                    self._outbox.finished(command_id)
                case RunPreflight() | RunVerification():
                    self._run_preflight(action)
                case Notify():
                    notification = _notification(action, versions)
                    if notification is not None:
                        self._notifier.notify(notification)
                case _:
                    pass
        # Published together, in this order on the wire: awaiting each PUBACK in turn
        # made a 1,000-host rollback 1,000 broker round trips.
        await _together(publishes)
        for event in events:
            self._telemetry.decisions.labels(event.kind).inc()
            self._hub.publish(event)
        await _together([self._publish_event(event) for event in events])

    async def _persist(self, step: Commit) -> list[Event]:
        return await persist(self._store, step)


async def persist(store: Store, step: Commit) -> list[Event]:
    """Store one engine step in one transaction; the events as stored, with their seqs.

    The deployments it changed (their rows), the engine's saved state, its events, the
    alerts it fired or resolved and its signed commands: all or nothing."""
    events: list[Event] = []
    fencing = step.fencing
    async with store.transaction() as tx:
        await tx.fence(fencing)
        if step.snapshot is not None:
            await tx.save_engine_state(
                EngineStateRow(snapshot=step.snapshot, time=step.time, fencing=fencing)
            )
        for action in step.actions:
            match action:
                case DeploymentChanged():
                    await tx.save_deployment(_deployment_record(action, fencing))
                case Record():
                    event = Event(
                        seq=0,
                        time=action.time,
                        kind=action.kind,
                        message=action.message,
                        deployment=action.deployment,
                        host=action.host,
                        actor=action.actor,
                        evidence=dict(action.evidence),
                    )
                    seq = await tx.append_event(event, fencing=fencing)
                    events.append(msgspec.structs.replace(event, seq=seq))
                    await _store_alert(tx, action)
                case _:
                    pass
        # One call to the database for all of them: a rollback's hundred commands one
        # at a time were a hundred trips through the event loop and the driver before
        # the first went out.
        await tx.save_commands(
            [
                CommandRow(
                    id=command.id,
                    deployment_id=command.deployment,
                    host=command.host,
                    action=command.action,
                    payload=msgspec.json.encode(command),
                    created=command.issued,
                    fencing=fencing,
                )
                for command in step.commands
            ]
        )
    return events


def _deployment_record(changed: DeploymentChanged, fencing: int) -> DeploymentRow:
    """The deployment's row: the engine's checkpoint whole, and the columns filtered on."""
    return DeploymentRow(
        id=changed.deployment_id,
        environment=changed.environment,
        version=changed.version,
        strategy=changed.strategy,
        state=changed.phase.value,
        body=changed.body,
        fencing=fencing,
        created=changed.created,
        updated=changed.updated,
    )


async def _store_alert(tx: Transaction, record: Record) -> None:
    """An alert the engine fired is opened, one it resolved is closed, keyed by host
    and rule (at most one active per key, so a replayed step changes nothing)."""
    if record.kind not in (EventKind.ALERT_FIRED, EventKind.ALERT_RESOLVED):
        return
    rule = str(record.evidence.get("rule", ""))
    key = f"{rule}:{record.host or ''}"
    if record.kind is EventKind.ALERT_FIRED:
        await tx.open_alert(
            AlertRow(
                key=key,
                host=record.host,
                rule=rule,
                message=record.message,
                started=record.time,
                evidence=dict(record.evidence),
            )
        )
    else:
        await tx.resolve_alert(key, record.time)


async def _together(publishes: list[Awaitable[None]]) -> None:
    """Await publishes with at most PUBLISH_WINDOW in flight, started in list order.

    Bounded because aiomqtt scans every pending publish on each new one (and warns past
    its ``pending_calls_threshold``), and the broker takes only its receive maximum
    (20 by default) unacknowledged at a time anyway."""
    if len(publishes) <= 1:
        for publish in publishes:
            await publish
        return
    window = asyncio.Semaphore(PUBLISH_WINDOW)

    async def bounded(publish: Awaitable[None]) -> None:
        async with window:
            await publish

    await asyncio.gather(*(bounded(publish) for publish in publishes))


def _notification(action: Notify, versions: dict[str, str]) -> Notification | None:
    """The webhook message for one engine Notify; None for a kind told otherwise
    (shared.kinds.notify_kind, total over the engine's kinds)."""
    kind = notify_kind(action.kind)
    if kind is None:
        return None
    return Notification(
        kind=kind,
        environment=action.environment or "",
        deployment=action.deployment,
        host=action.host,
        version=versions.get(action.deployment or ""),
        message=action.message,
        evidence=dict(action.evidence),
        time=action.time,
        # The engine sends one Notify per state change; its time makes the key unique
        # per change and identical if a resumed coordinator ever repeats it.
        key=f"{action.host or ''}@{action.time:.6f}",
    )


def operator_replies(actions: list[EngineAction]) -> list[OperatorReply]:
    return [a for a in actions if isinstance(a, OperatorReply)]
