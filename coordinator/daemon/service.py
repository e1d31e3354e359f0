"""The coordinator daemon: the IO shell around the pure engine.

It keeps one MQTT session (reconnecting with backoff) and validates every inbound
message before it touches state. The engine runs only while this coordinator is
*active*: it leads (always, without ``ha.redis_url``; else while it holds the Redis
lease) and its store answers. Becoming active rebuilds the engine from the store's
snapshot and feeds it the latest retained status of every host; leaving it (lost
lease, store failure) drops the engine at once, so a coordinator that cannot persist
or no longer leads never decides or commands anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiomqtt
import msgspec
from aiohttp import web

from coordinator.daemon.api import build_app
from coordinator.daemon.eventhub import EventHub
from coordinator.daemon.hosts import HostRegistry
from coordinator.daemon.ingest import parse_inbound
from coordinator.daemon.lease import Lease
from coordinator.daemon.notify import Notifier, targets_from_config
from coordinator.daemon.outbox import Outbox, signed_command
from coordinator.daemon.pipeline import PUBLISH_WINDOW, Pipeline, Step
from coordinator.daemon.preflight import PreflightOutcome, run_preflight
from coordinator.daemon.series import SeriesRecorder
from coordinator.daemon.telemetry import Telemetry
from coordinator.engine import (
    CommandResultReceived,
    Engine,
    EngineAction,
    EngineEvent,
    HostStatusReceived,
    MetricsReceived,
    OperatorReply,
    OperatorRequest,
    PreflightReported,
    RunPreflight,
    SendCommand,
    Tick,
)
from coordinator.engine.fleet import StatusChange
from coordinator.engine.state import decode_deployment, decode_saved, encode_saved, joined
from coordinator.store import CommandResultRow, Store, StoreError, open_store
from shared import topics
from shared.config import CoordinatorConfig
from shared.errors import ConfigError, MessageError, RollguardError
from shared.messages import (
    MAX_PAYLOAD,
    Command,
    CommandResult,
    CoordinatorStatus,
    Event,
    HostStatus,
    MetricBatch,
    encode,
)
from shared.mqtt import QOS, make_client, run_forever, will_for
from shared.signing import PRIVATE_KEY_NAME, generate_keypair, load_private_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger("rollguard.coordinator")
TOKEN_NAME: Final = "api.token"
# Keep our broker session (and QoS 1 results addressed to us) across a short outage.
SESSION_EXPIRY: Final = 300
PUBLISH_TIMEOUT: Final = 5.0
# The longest the shell sleeps between ticks, so re-publishes and store retries run.
MAX_SLEEP: Final = 1.0
STORE_RETRY: Final = 2.0
REPLY_TIMEOUT: Final = 10.0
# An automatic full garbage collection walks everything the engine holds (600,000
# references at 1,000 hosts: 50-80 ms with the event loop stopped) and ran about once a
# second while deployments ran, in the path of a rollback. So the ticker collects at a
# quiet moment and freezes what survives (the automatic collections then walk only what
# is newer: a few ms), and now and then unfreezes first, so that a cycle among frozen
# objects is still collected.
GC_FREEZE_EVERY: Final = 5.0
GC_FULL_EVERY: Final = 600.0


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


class Coordinator:
    def __init__(
        self, config: CoordinatorConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.hosts = HostRegistry()
        self.telemetry = Telemetry()
        self.hub = EventHub()
        self.outbox = Outbox()
        self.store: Store = open_store(config.store, config.state_dir)
        self.notifier = Notifier(targets_from_config(config.environments))
        self.lease = Lease.from_config(config.ha, config.node) if config.ha.redis_url else None
        self.engine: Engine | None = None
        self.series = SeriesRecorder(max(1.0, config.engine.housekeeping * 4))
        self.mqtt_connected = False
        self.store_ok = False
        self.leader = self.lease is None
        self.fencing = 0
        self._key: Ed25519PrivateKey | None = None
        self._client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()
        self._preflights: set[asyncio.Task[None]] = set()
        self._results: list[CommandResult] = []
        self._result_writer: asyncio.Task[None] | None = None
        self._store_opened = asyncio.Event()
        self.pipeline = Pipeline(
            store=self.store,
            outbox=self.outbox,
            hub=self.hub,
            notifier=self.notifier,
            telemetry=self.telemetry,
            publish_command=self._publish_command,
            publish_event=self._publish_event,
            run_preflight=self._start_preflight,
            on_store_failure=self._store_failed,
        )

    # -- the engine ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.engine is not None

    def step(self, event: EngineEvent, now: float | None = None) -> Step | None:
        """Feed one event to the engine and queue its consequences; None when inactive."""
        engine = self.engine
        if engine is None:
            return None
        now = self.clock() if now is None else now
        actions = engine.handle(event, now)
        if not actions:
            # Nothing changed that the ticker must re-plan for now (a quiet event moves
            # no deadline earlier by more than MAX_SLEEP); waking it on every message
            # cost as much as judging the message.
            return None
        self._wake.set()
        return self._submit(engine, actions, now)

    def _submit(self, engine: Engine, actions: list[EngineAction], now: float) -> Step:
        assert self._key is not None
        commands: list[Command] = []
        snapshot: bytes | None = None
        for action in actions:
            if isinstance(action, SendCommand):
                commands.append(
                    signed_command(
                        self._key,
                        command_id=action.command_id,
                        host=action.host,
                        deployment=action.deployment_id,
                        action=action.action,
                        version=action.version,
                        slot=action.slot,
                        now=action.issued,
                        ttl=self.config.command_ttl,
                        fencing=self.fencing,
                    )
                )
            elif snapshot is None and type(action).__name__ == "DeploymentChanged":
                snapshot = encode_saved(engine.snapshot())
        step = Step(
            actions=actions,
            snapshot=snapshot,
            time=now,
            fencing=self.fencing,
            commands=commands,
            done=asyncio.get_running_loop().create_future(),
        )
        self.pipeline.submit(step)
        return step

    async def request(self, request: OperatorRequest) -> tuple[OperatorReply, bool]:
        """Run an operator request; return the engine's reply and whether its step was
        stored (a reply is only final once stored)."""
        engine = self.engine
        if engine is None:
            raise RollguardError(self._inactive_reason())
        now = self.clock()
        actions = engine.handle(request, now)
        self._wake.set()
        replies = [a for a in actions if isinstance(a, OperatorReply)]
        step = self._submit(engine, actions, now) if actions else None
        stored = True
        if step is not None and step.done is not None:
            stored = await asyncio.wait_for(asyncio.shield(step.done), REPLY_TIMEOUT)
        if not replies:
            raise RollguardError("the engine gave no answer to the request")
        return replies[-1], stored

    def _inactive_reason(self) -> str:
        if not self.store_ok:
            return "the coordinator is holding: its store is unreachable"
        if not self.leader:
            return "this coordinator is the standby; send requests to the leader"
        return "the coordinator is starting"

    async def _activate(self) -> None:
        """Rebuild the engine from the store and resume (leader with a working store)."""
        saved = await self.store.load_engine_state()
        if self.lease is None:
            self.fencing = max(self.fencing, await self.store.current_fence())
        if saved is None:
            engine = Engine(self.config)
        else:
            # The snapshot names its deployments; each lives in its own row.
            state = decode_saved(saved.snapshot)
            rows = [await self.store.get_deployment(d) for d in state.deployments]
            deployments = {r.id: decode_deployment(r.body) for r in rows if r is not None}
            engine = Engine.restore(self.config, joined(state, deployments))
        self.engine = engine
        now = self.clock()
        # The fleet comes from the broker's retained statuses, kept in the registry as
        # they arrive; a new engine learns them before anything else.
        for status in self.hosts.replay():
            self.step(HostStatusReceived(status=status), now)
        for action in engine.outstanding():
            if isinstance(action, SendCommand):
                await self._resend_stored(action.command_id, action.host)
            elif isinstance(action, RunPreflight):
                self._start_preflight(action)
        log.warning(
            "active: engine %s with %d deployment(s), fencing token %d",
            "restored" if saved else "started",
            len(engine.deployments()),
            self.fencing,
        )

    async def _resend_stored(self, command_id: str, host: str) -> None:
        record = await self.store.get_command(command_id)
        if record is None:
            log.error("outstanding command %s is not in the store; not re-sent", command_id)
            return
        command = msgspec.json.decode(record.payload, type=Command)
        payload = self.outbox.add_command(command, self.clock())
        await self._publish_command(host, payload)

    def _deactivate(self, reason: str) -> None:
        if self.engine is None:
            return
        self.engine = None
        dropped = self.pipeline.drop_pending()
        log.error("holding (%s); dropped %d unstored step(s)", reason, dropped)

    def _store_failed(self, exc: Exception) -> None:
        self.store_ok = False
        self._deactivate(f"store failure: {exc}")

    # -- inbound -----------------------------------------------------------------

    def receive(self, topic: str, payload: bytes) -> None:
        """Validate and apply one inbound message; a bad one is counted and logged."""
        now = self.clock()
        try:
            message = parse_inbound(topic, payload)
        except MessageError as exc:
            self.telemetry.rejected.labels(exc.reason).inc()
            log.warning("rejected message: %s", exc)
            return
        if isinstance(message, HostStatus):
            self.telemetry.ingested.labels("status").inc()
            if self.hosts.apply_status(message, now) is StatusChange.STALE:
                self.telemetry.stale.inc()
                return
            log.info(
                "host %s %s (session %d, version %s)",
                message.host,
                "online" if message.online else "offline",
                message.session,
                message.version,
            )
            self.telemetry.hosts_online.set(self.hosts.online_count())
            self.step(HostStatusReceived(status=message), now)
        elif isinstance(message, MetricBatch):
            self.telemetry.ingested.labels("metrics").inc()
            self.hosts.apply_batch(message, now)
            self.series.observe(message)
            self.step(MetricsReceived(batch=message), now)
        else:
            self.telemetry.ingested.labels("cmd_result").inc()
            self._result(message, now)

    def _result(self, result: CommandResult, now: float) -> None:
        if result.state == "accepted":
            self.outbox.accepted(result.id)
        elif result.state in ("succeeded", "failed", "rejected"):
            first_sent = self.outbox.finished(result.id)
            if first_sent is not None:
                self.telemetry.command_rtt.observe(max(0.0, now - first_sent))
        self.step(CommandResultReceived(result=result), now)
        if self.engine is not None and self.store_ok:
            self._results.append(result)
            if self._result_writer is None or self._result_writer.done():
                task = asyncio.create_task(self._store_results())
                self._result_writer = task
                self._preflights.add(task)
                task.add_done_callback(self._preflights.discard)

    async def _store_results(self) -> None:
        """Store the queued results, all that arrived meanwhile in one transaction.

        A rollback of 1,000 hosts brings 2,000 results at once: one transaction (four
        store round trips and an fsync) each kept the store busy for seconds, and the
        pipeline's next step, a decision waiting to be stored, queued behind them."""
        while self._results:
            batch, self._results = self._results, []
            try:
                async with self.store.transaction() as tx:
                    await tx.fence(self.fencing)
                    await asyncio.gather(
                        *(
                            tx.record_command_result(
                                r.id,
                                CommandResultRow(state=r.state, detail=r.detail, time=r.time),
                            )
                            for r in batch
                        )
                    )
            except StoreError as exc:
                log.warning("could not store %d command result(s): %s", len(batch), exc)

    # -- preflight ---------------------------------------------------------------

    def _start_preflight(self, action: RunPreflight) -> None:
        task = asyncio.create_task(self._preflight(action))
        self._preflights.add(task)
        task.add_done_callback(self._preflights.discard)

    async def _preflight(self, action: RunPreflight) -> None:
        outcomes = await run_preflight(action.commands)
        for outcome in outcomes:
            if outcome.skipped:
                continue
            self.step(
                PreflightReported(
                    deployment_id=action.deployment_id,
                    name=outcome.name,
                    ok=outcome.ok,
                    output_tail=_preflight_record(outcome),
                )
            )
        # Commands after the first failure were skipped: the deployment already failed.

    # -- readiness ---------------------------------------------------------------

    def refresh_telemetry(self) -> None:
        """Update the gauges read off state at scrape time."""
        engine = self.engine
        phases = [d.phase for d in engine.deployments()] if engine is not None else []
        self.telemetry.refresh(self.hosts.online_count(), phases)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        role = "leader" if self.leader else "standby"
        ready = self.mqtt_connected and self.store_ok and (self.active or not self.leader)
        detail: dict[str, Any] = {
            "broker": self.mqtt_connected,
            "store": self.store_ok,
            "role": role,
            "engine": self.active,
        }
        if not ready:
            detail["reason"] = (
                "broker unreachable" if not self.mqtt_connected else self._inactive_reason()
            )
        return ready, detail

    # -- MQTT --------------------------------------------------------------------

    def _status(self, online: bool) -> CoordinatorStatus:
        return CoordinatorStatus(
            online=online, node=self.config.node, leader=online and self.leader, time=self.clock()
        )

    def _make_client(self) -> aiomqtt.Client:
        client = make_client(
            self.config.mqtt,
            identifier=f"rollguard-coordinator-{self.config.node}",
            will=will_for(topics.COORDINATOR_STATUS, self._status(False)),
            session_expiry=SESSION_EXPIRY,
            queue_type=_inbox(self._deliver),
        )
        # The pipeline publishes a step's commands PUBLISH_WINDOW at a time; aiomqtt's
        # default (10) logged a warning for each of them.
        client.pending_calls_threshold = 4 * PUBLISH_WINDOW
        return client

    def _deliver(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        self.receive(message.topic.value, bytes(payload))

    async def _publish_command(self, host: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            return  # the outbox re-publishes once we are connected again
        try:
            await client.publish(topics.cmd(host), payload, qos=QOS, timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish a command to %s (will retry): %s", host, exc)

    async def _publish_event(self, event: Event) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.publish(topics.EVENTS, wire_event(event), qos=QOS, timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish event %d: %s", event.seq, exc)

    async def publish_status(self) -> None:
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    topics.COORDINATOR_STATUS,
                    encode(self._status(True)),
                    qos=QOS,
                    retain=True,
                    timeout=PUBLISH_TIMEOUT,
                )

    async def _session(self, client: aiomqtt.Client) -> None:
        for topic in (topics.ALL_STATUS, topics.ALL_METRICS, topics.ALL_RESULTS):
            await client.subscribe(topic, qos=QOS)
        self._client = client
        self.mqtt_connected = True
        await self.publish_status()
        for _command_id, host, payload in self.outbox.unanswered(self.clock()):
            await self._publish_command(host, payload)
        try:
            # Messages are handled as paho reads them (see _inbox); iterating only
            # waits for the connection to drop.
            async for _ in client.messages:
                pass
        except asyncio.CancelledError:
            # Graceful stop: say we are offline before the Will would.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(
                    topics.COORDINATOR_STATUS,
                    encode(self._status(False)),
                    qos=QOS,
                    retain=True,
                    timeout=PUBLISH_TIMEOUT,
                )
            raise
        finally:
            self.mqtt_connected = False
            self._client = None

    # -- background loops --------------------------------------------------------

    async def _ticker(self) -> None:
        """Tick the engine at its next wake-up, re-publish unanswered commands, and
        keep trying to (re)activate when leading with a store that came back."""
        gc_due = time.monotonic() + GC_FREEZE_EVERY
        gc_full_due = time.monotonic() + GC_FULL_EVERY
        while True:
            now = self.clock()
            for _command_id, host, payload in self.outbox.due(now):
                await self._publish_command(host, payload)
            if (mono := time.monotonic()) >= gc_due and not self.pipeline.pending():
                gc_due = mono + GC_FREEZE_EVERY
                if mono >= gc_full_due:
                    gc_full_due = mono + GC_FULL_EVERY
                    gc.unfreeze()
                gc.collect()
                gc.freeze()
            engine = self.engine
            if engine is not None:
                wake = engine.next_wakeup()
                if wake is not None and wake <= now:
                    self.step(Tick(), now)
                if self.series.due(now):
                    self._record_series(engine, now)
            elif self.leader:
                await self._try_activate()
            engine = self.engine
            deadline = now + MAX_SLEEP
            if engine is not None and (wake := engine.next_wakeup()) is not None:
                deadline = min(deadline, wake)
            if (due := self.outbox.next_due()) is not None:
                deadline = min(deadline, due)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - self.clock()))

    def _record_series(self, engine: Engine, now: float) -> None:
        records = self.series.flush(now, engine.deployments(), self.hosts.versions())
        if records:
            self.pipeline.submit(
                Step(actions=list(records), snapshot=None, time=now, fencing=self.fencing)
            )

    async def _try_activate(self) -> None:
        if not self._store_opened.is_set():
            return
        try:
            await self.store.ping()
            self.store_ok = True
            await self._activate()
        except StoreError as exc:
            if self.store_ok:
                log.error("store unreachable; holding: %s", exc)
            self.store_ok = False
            self._deactivate(f"store failure: {exc}")
            await asyncio.sleep(STORE_RETRY)

    def _lease_changed(self, leading: bool, token: int) -> None:
        self.leader = leading
        if leading:
            self.fencing = token
            log.warning("leader with fencing token %d", token)
        else:
            self._deactivate("lost the leader lease")
        self._wake.set()
        asyncio.get_running_loop().create_task(self.publish_status())

    async def _open_store(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.store.open()
                await self.store.migrate()
            except StoreError as exc:
                log.error("store unavailable (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), STORE_RETRY)
            else:
                self.store_ok = True
                self._store_opened.set()
                self._wake.set()
                return

    async def _start_store_and_lease(self, stop: asyncio.Event) -> None:
        await self._open_store(stop)
        if self.lease is not None and not stop.is_set():
            # Never below what the store has seen, even if Redis lost its counter.
            self.lease.min_token = await self.store.current_fence()
            await self.lease.run(stop, self._lease_changed)

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        token = load_or_create_token(self.config)
        self._key = load_or_create_key(self.config)
        runner = web.AppRunner(build_app(self, token), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.http.listen, self.config.http.port)
        await site.start()
        log.info("HTTP API on http://%s:%d", self.config.http.listen, self.config.http.port)
        self.notifier.start()
        tasks: list[asyncio.Task[Any]] = []
        try:
            tasks.append(asyncio.create_task(self._start_store_and_lease(stop)))
            tasks.append(asyncio.create_task(self.pipeline.run()))
            tasks.append(asyncio.create_task(self._ticker()))
            await run_forever(
                self.config.mqtt, self._make_client, self._session, stop=stop, name="coordinator"
            )
        finally:
            for task in [*tasks, *self._preflights]:
                task.cancel()
            await asyncio.gather(*tasks, *self._preflights, return_exceptions=True)
            if self.lease is not None:
                await self.lease.close()
            self.hub.close()
            await self.notifier.close()
            await self.store.close()
            await runner.cleanup()


def _preflight_record(outcome: PreflightOutcome) -> str:
    """The output tail as stored, ending with how the command ended: the event log
    must say why a backup failed, not only that it did."""
    if outcome.error is not None:
        ending = f"could not start: {outcome.error}"
    elif outcome.timed_out:
        ending = f"killed after its timeout ({outcome.duration:.1f} s)"
    else:
        ending = f"exit status {outcome.exit_code} after {outcome.duration:.1f} s"
    tail = outcome.output_tail[-2000:]
    if tail and not tail.endswith("\n"):
        tail += "\n"
    return f"{tail}[{outcome.name}: {ending}]"


def _inbox(deliver: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's queue of incoming messages, replaced by handling each one as paho
    reads it.

    Through aiomqtt's iterator every message cost a task and several turns of the event
    loop, in each of which paho read one more: offered 6,000 messages a second, the
    queue grew without bound (memory, and decisions on ever older data) while ingest
    fell under 1,000 a second. Handled as read, the coordinator keeps up with 6,000, and
    a burst waits in the socket and at the broker (TCP backpressure). A ``receive`` that
    raises leaves its message unacknowledged and drops the connection (the session loop
    reconnects); before, it ended the daemon.
    """

    class Inbox(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            deliver(item)

    return Inbox


def wire_event(event: Event) -> bytes:
    """The event as published on ``rollguard/v1/events``, within the 64 KiB every
    receiver enforces: a decision over a large fleet can carry more evidence than that,
    so its evidence is then left out and pointed at (the API serves it whole)."""
    payload = encode(event)
    if len(payload) <= MAX_PAYLOAD:
        return payload
    return encode(
        msgspec.structs.replace(
            event,
            evidence={
                "truncated": True,
                "bytes": len(payload),
                "see": f"/api/v1/deployments/{event.deployment}/events"
                if event.deployment
                else "/api/v1/events",
            },
        )
    )
