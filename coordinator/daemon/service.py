"""The coordinator daemon: the IO shell around the pure engine.

It validates every inbound message before it touches state (its MQTT session is
``session.py``), keeps the one host registry (``hosts.py``), feeds the engine and hands
each step's consequences to the pipeline (``pipeline.py``: stored, then published). The
engine runs only while this coordinator is *active*: it leads (always, without
``ha.redis_url``; else while it holds the Redis lease, ``lease.py``) and its store
answers. Becoming active rebuilds the engine from the store (``activation.py``) and
feeds it the latest retained status of every host; leaving it (lost lease, store
failure) drops the engine at once, so a coordinator that cannot persist or no longer
leads never decides or commands anything. The process's lifecycle is ``main.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web
from prometheus_client import Histogram

from coordinator.daemon.activation import load_or_create_key, load_or_create_token, restore_engine
from coordinator.daemon.api import build_app
from coordinator.daemon.eventhub import EventHub
from coordinator.daemon.hosts import HostRegistry
from coordinator.daemon.ingest import (
    HostClocks,
    ThrottledLog,
    check_receipt,
    parse_inbound,
    sent_time,
    source_of,
)
from coordinator.daemon.lease import Lease
from coordinator.daemon.notify import Notifier, targets_from_config
from coordinator.daemon.outbox import Outbox, signed_command
from coordinator.daemon.pipeline import Commit, Pipeline
from coordinator.daemon.preflight import HookContext, PreflightOutcome, run_preflight
from coordinator.daemon.series import SeriesRecorder
from coordinator.daemon.session import BrokerSession
from coordinator.daemon.telemetry import Telemetry
from coordinator.daemon.views import host_view
from coordinator.engine import (
    BrokerConnectivity,
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
    RunVerification,
    SendCommand,
    Tick,
    VerificationReported,
)
from coordinator.engine.fleet import StatusChange
from coordinator.engine.state import encode_saved
from coordinator.store import CommandResultRow, Store, StoreError, open_store
from shared import topics
from shared.config import CoordinatorConfig
from shared.errors import MessageError, RollguardError
from shared.messages import (
    Command,
    CommandResult,
    HostStatus,
    MetricBatch,
    encode,
)

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
# objects is still collected. Every second rather than every five: while a fleet
# connects (1,000 hosts' first statuses and windows) the automatic collections over what
# five seconds left unfrozen took 28-38 ms, against 22 ms at most at one second; each
# collection at the quiet moment takes about 4 ms either way.
GC_FREEZE_EVERY: Final = 1.0
GC_FULL_EVERY: Final = 600.0


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
        self.notifier = Notifier(
            targets_from_config(config.environments),
            on_outcome=lambda outcome, n, _: self.telemetry.notified(
                outcome, n.environment, n.kind
            ),
            link=config.http.deployment_link,
        )
        self.lease = Lease.from_config(config.ha, config.node) if config.ha.redis_url else None
        self.engine: Engine | None = None
        self.series = SeriesRecorder(max(1.0, config.engine.housekeeping * 4))
        self.store_ok = False
        self.leader = self.lease is None
        self.fencing = 0
        self._key: Ed25519PrivateKey | None = None
        self._wake = asyncio.Event()
        self._preflights: set[asyncio.Task[None]] = set()
        self._results: list[CommandResult] = []
        self._result_writer: asyncio.Task[None] | None = None
        self._store_opened = asyncio.Event()
        # What the engine was last told of the broker session (it starts connected).
        self._told_connected = True
        self._inbound_log = ThrottledLog(log, config.ingest.log_interval)
        self.clocks = HostClocks()
        self._clock_log = ThrottledLog(log, config.ingest.log_interval)
        # Retained messages to put right at the broker, by topic (see _repair_retained).
        self._retained_repairs: dict[str, bytes] = {}
        self._step_timers: dict[type[EngineEvent], Histogram] = {}
        self.session = BrokerSession(
            config,
            clock=clock,
            receive=self.receive,
            unanswered=self._unanswered,
            leading=lambda: self.leader,
        )
        self.pipeline = Pipeline(
            store=self.store,
            outbox=self.outbox,
            hub=self.hub,
            notifier=self.notifier,
            telemetry=self.telemetry,
            publish_command=self.session.publish_command,
            publish_event=self.session.publish_event,
            run_preflight=self._start_preflight,
            on_store_failure=self._store_failed,
        )

    # -- the engine ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.engine is not None

    def step(self, event: EngineEvent, now: float | None = None) -> Commit | None:
        """Feed one event to the engine and queue its consequences; None when inactive."""
        engine = self.engine
        if engine is None:
            return None
        now = self.clock() if now is None else now
        started = time.perf_counter()
        actions = engine.handle(event, now)
        self._step_timer(type(event)).observe(time.perf_counter() - started)
        if not actions:
            # Nothing changed that the ticker must re-plan for now (a quiet event moves
            # no deadline earlier by more than MAX_SLEEP); waking it on every message
            # cost as much as judging the message.
            return None
        self._wake.set()
        return self._submit(engine, actions, now)

    def _step_timer(self, kind: type[EngineEvent]) -> Histogram:
        timer = self._step_timers.get(kind)
        if timer is None:
            timer = self._step_timers[kind] = self.telemetry.engine_step.labels(kind.__name__)
        return timer

    def _submit(self, engine: Engine, actions: list[EngineAction], now: float) -> Commit:
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
                snapshot = encode_saved(engine.saved())
        step = Commit(
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
        started = time.perf_counter()
        actions = engine.handle(request, now)
        self._step_timer(type(request)).observe(time.perf_counter() - started)
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
        if self.lease is None:
            self.fencing = max(self.fencing, await self.store.current_fence())
        engine, restored = await restore_engine(self.store, self.config)
        self.engine = engine
        now = self.clock()
        self._told_connected = True
        self._tell_connectivity(now)
        # The fleet comes from the broker's retained statuses, kept in the registry as
        # they arrive; a new engine learns them before anything else. A host that came
        # back meanwhile is converged by a command stored and published by that step;
        # only the commands stored before are re-sent here, by id.
        stored = {a.command_id for a in engine.outstanding() if isinstance(a, SendCommand)}
        for status in self.hosts.replay():
            self.step(HostStatusReceived(status=status), now)
        for action in engine.outstanding():
            if isinstance(action, SendCommand):
                if action.command_id in stored:
                    await self._resend_stored(action.command_id, action.host)
            elif isinstance(action, RunPreflight | RunVerification):
                self._start_preflight(action)
        log.warning(
            "active: engine %s with %d deployment(s), fencing token %d",
            "restored" if restored else "started",
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
        await self.session.publish_command(host, payload)

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

    def receive(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Validate and apply one inbound message; a bad one is counted and logged.

        Nothing a message carries can end the session: a refusal is counted by reason,
        any other exception while handling it by kind and error (its traceback logged),
        both logged once per host per ``ingest.log_interval``."""
        now = self.clock()
        try:
            message = parse_inbound(topic, payload)
            check_receipt(
                message, retained=retained, now=now, max_skew=self.config.ingest.max_clock_skew
            )
        except MessageError as exc:
            self.telemetry.rejected.labels(exc.reason).inc()
            self._inbound_log.warning(source_of(topic), now, f"rejected message: {exc}")
            self._repair_retained(topic, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - a message must never end the session
            self._handler_failed("parse", topic, now, exc)
            return
        if not retained:
            self._observe_clock(message, now)
        try:
            self._apply(message, now)
        except Exception as exc:  # noqa: BLE001 - a message must never end the session
            self._handler_failed(type(message).__name__, topic, now, exc)

    def _observe_clock(self, message: HostStatus | MetricBatch | CommandResult, now: float) -> None:
        """Estimate the host's clock offset; warn (once per host per interval) when it
        is more than half the skew the coordinator accepts, before its samples are
        refused for it."""
        offset = self.clocks.observe(message.host, sent_time(message), now)
        limit = self.config.ingest.max_clock_skew
        if abs(offset) > limit / 2:
            self._clock_log.warning(
                message.host,
                now,
                f"host {message.host}'s clock runs about {abs(offset):.0f}s "
                f"{'ahead of' if offset > 0 else 'behind'} the coordinator's (times more "
                f"than {limit:g}s ahead are refused: ingest.max_clock_skew)",
            )

    def _repair_retained(self, topic: str, reason: str) -> None:
        """Undo what a refused message may have left at the broker as retained.

        A retained batch or result is cleared. A refused status may have replaced the
        host's retained one (the broker cannot tell), which every later subscriber, this
        coordinator after a restart included, would read as the host's state: the last
        status this coordinator accepted from the host is put back (none: cleared).
        Done by the ticker, once per topic however many arrived meanwhile."""
        try:
            parsed = topics.parse_host_topic(topic)
        except MessageError:
            return
        if reason == "retained":
            self._retained_repairs[topic] = b""
        elif parsed.kind is topics.HostTopic.STATUS:
            accepted = [s for s in self.hosts.replay() if s.host == parsed.host]
            self._retained_repairs[topic] = encode(accepted[-1]) if accepted else b""
        self._wake.set()

    async def _flush_repairs(self) -> None:
        repairs, self._retained_repairs = self._retained_repairs, {}
        for topic, payload in repairs.items():
            await self.session.publish_retained(topic, payload)

    def _handler_failed(self, kind: str, topic: str, now: float, exc: Exception) -> None:
        self.telemetry.handler_errors.labels(kind, type(exc).__name__).inc()
        self._inbound_log.warning(
            source_of(topic),
            now,
            f"handling a message on {topic} failed ({type(exc).__name__}: {exc}); "
            "the message was dropped",
            exc_info=True,
        )

    def _apply(self, message: HostStatus | MetricBatch | CommandResult, now: float) -> None:
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
                    await tx.record_command_results(
                        [
                            (r.id, CommandResultRow(state=r.state, detail=r.detail, time=r.time))
                            for r in batch
                        ]
                    )
            except StoreError as exc:
                log.warning("could not store %d command result(s): %s", len(batch), exc)

    # -- preflight and post-deployment verification ------------------------------

    def _start_preflight(self, action: RunPreflight | RunVerification) -> None:
        task = asyncio.create_task(self._preflight(action))
        self._preflights.add(task)
        task.add_done_callback(self._preflights.discard)

    async def _preflight(self, action: RunPreflight | RunVerification) -> None:
        """Run a deployment's hook commands (preflight, or its verification once every
        host runs the new version) with its context, and report each outcome."""
        dep = self.engine.deployment(action.deployment_id) if self.engine else None
        context = (
            HookContext(
                deployment_id=dep.id,
                version=dep.version,
                previous_version=dep.from_version,
                environment=dep.environment,
                strategy=dep.strategy,
            )
            if dep is not None
            else None
        )
        label = "preflight" if isinstance(action, RunPreflight) else "verification"
        outcomes = await run_preflight(action.commands, context=context, label=label)
        for outcome in outcomes:
            if outcome.skipped:
                continue
            report = PreflightReported if isinstance(action, RunPreflight) else VerificationReported
            self.step(
                report(
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
        self.telemetry.clock_offset.set(self.clocks.largest())
        self.telemetry.refresh_alerts([a.rule for a in engine.alerts()] if engine else [])
        self.telemetry.refresh_analysis(engine.judgements(self.clock()) if engine else {})
        self.telemetry.refresh_hosts(
            [host_view(e) for e in self.hosts.entries()], self.config.http.metrics_max_hosts
        )

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        role = "leader" if self.leader else "standby"
        ready = self.session.connected and self.store_ok and (self.active or not self.leader)
        detail: dict[str, Any] = {
            "broker": self.session.connected,
            "store": self.store_ok,
            "role": role,
            "engine": self.active,
        }
        if not ready:
            detail["reason"] = (
                "broker unreachable" if not self.session.connected else self._inactive_reason()
            )
        return ready, detail

    # -- MQTT --------------------------------------------------------------------

    def _unanswered(self) -> list[tuple[str, bytes]]:
        """Every unanswered command, to publish again on (re)connecting."""
        return [(host, payload) for _id, host, payload in self.outbox.unanswered(self.clock())]

    # -- background loops --------------------------------------------------------

    async def _ticker(self) -> None:
        """Tick the engine at its next wake-up, re-publish unanswered commands, and
        keep trying to (re)activate when leading with a store that came back."""
        gc_due = time.monotonic() + GC_FREEZE_EVERY
        gc_full_due = time.monotonic() + GC_FULL_EVERY
        while True:
            now = self.clock()
            self._tell_connectivity(now)
            for _command_id, host, payload in self.outbox.due(now):
                await self.session.publish_command(host, payload)
            if self._retained_repairs:
                await self._flush_repairs()
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

    def _tell_connectivity(self, now: float) -> None:
        """Tell the engine when our broker session went down or came back: while we hear
        nobody, no host's silence is its fault (the engine stops its missing-data clocks
        and gives every host a fresh grace when we are back). Checked before every tick,
        so no tick judges silence the engine has not been told about."""
        connected = self.session.connected
        if self.engine is not None and connected != self._told_connected:
            self._told_connected = connected
            log.warning(
                "broker session %s: %s",
                "back" if connected else "lost",
                "hosts get a fresh missing-data grace"
                if connected
                else "missing-data clocks stopped until it is back",
            )
            self.step(BrokerConnectivity(connected=connected), now)

    def _record_series(self, engine: Engine, now: float) -> None:
        records = self.series.flush(now, engine.deployments(), self.hosts.versions())
        if records:
            self.pipeline.submit(
                Commit(actions=list(records), snapshot=None, time=now, fencing=self.fencing)
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
        asyncio.get_running_loop().create_task(self.session.publish_status())

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
            await self.session.run(stop)
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
