"""The decision engine: events in, actions out, no IO and no clock.

Shaped like h11: a pure object the shell drives. Everything is deterministic: the same
events at the same times give the same actions.

How the shell drives it
-----------------------
* Every validated MQTT message becomes one event: ``hosts/+/status`` ->
  HostStatusReceived, ``hosts/+/metrics`` -> MetricsReceived, ``hosts/+/cmd/result`` ->
  CommandResultReceived; API calls -> OperatorRequest; preflight outcomes ->
  PreflightReported. Call ``handle(event, now)`` with the shell's clock.
* Sleep until ``next_wakeup()`` (or the next message) and then ``handle(Tick(), now)``.
* Perform the returned actions in order. DeploymentChanged comes first: persist it (or
  the whole ``snapshot()``) before publishing the SendCommands of the same call, so a
  command is never out that the store does not know. Re-publish every SendCommand with
  its id until the agent answers, stop on CancelCommand or at its expiry.
* Acknowledgements alone emit no DeploymentChanged: a lost one is asked again after a
  restart by re-publishing the same id, which the agent answers from memory. While a
  bake runs, every Tick emits a DeploymentChanged, a checkpoint of the bake clock.

After a crash, ``Engine.restore(config, snapshot)`` resumes: deployments continue with
the bake time they had at their last checkpoint (the downtime is not bake time),
commands keep their ids (``outstanding()`` lists what to re-publish and which preflight
commands to re-run), and because sample windows are not in the snapshot every judged
window restarts at the first event after the restore, so nothing is promoted on data
this engine has not seen.
"""

from __future__ import annotations

from typing import Final

import msgspec

from coordinator.engine.actions import EngineAction, RunPreflight, RunVerification, SendCommand
from coordinator.engine.alerts import Alerts, FiringAlert, cache_thresholds
from coordinator.engine.deployment import Deployment, HistoryEntry
from coordinator.engine.driver import Driver
from coordinator.engine.errors import EngineError, SnapshotError
from coordinator.engine.events import (
    BrokerConnectivity,
    CommandResultReceived,
    EngineEvent,
    HostStatusReceived,
    MetricsReceived,
    OperatorRequest,
    PreflightReported,
    Tick,
    VerificationReported,
)
from coordinator.engine.fleet import Fleet, HostRecord, StatusChange
from coordinator.engine.judge import judge
from coordinator.engine.operator import Operator
from coordinator.engine.phases import ACTIVE, Phase
from coordinator.engine.state import (
    SNAPSHOT_FORMAT,
    Effects,
    EngineSnapshot,
    EngineState,
    SavedState,
)
from coordinator.engine.verification import Verification
from shared.config.coordinator import CoordinatorConfig
from shared.evidence import CommandAnswer, Restarted
from shared.evidence import Judgement as JudgementEvidence
from shared.kinds import EventKind
from shared.messages import CommandResult, HostStatus, MetricBatch

# How a final answer is recorded in the event log ("accepted" is not recorded).
ANSWERED_AS: Final[dict[str, EventKind]] = {
    "succeeded": EventKind.COMMAND_SUCCEEDED,
    "failed": EventKind.COMMAND_FAILED,
    "rejected": EventKind.COMMAND_REJECTED,
}


class Engine:
    def __init__(self, config: CoordinatorConfig) -> None:
        self._state = EngineState(config)
        self._driver = Driver(self._state)
        self._operator = Operator(self._state, self._driver)
        # Set by restore to the snapshot's engine time: the first handle() restarts
        # clocks and windows at its `now`.
        self._resuming: float | None = None

    @property
    def config(self) -> CoordinatorConfig:
        return self._state.config

    # The shell's interface -------------------------------------------------------------

    def handle(self, event: EngineEvent, now: float) -> list[EngineAction]:
        """Apply one event at engine time ``now``; return the actions, in order.

        Time never runs backwards inside the engine: an earlier ``now`` than the last
        one is taken as the last one.
        """
        state = self._state
        now = max(now, state.now)
        state.now = now
        if state.since is None:
            state.since = now
        out = Effects()
        if self._resuming is not None:
            self._resume(self._resuming, now, out)
        if not state.broker_connected:
            # Before the event too: a stall of the shell (a paused VM) longer than the
            # slack must not time a command out on the tick that ends it.
            self._hold_clocks(now, out)
        match event:
            case MetricsReceived(batch=batch):
                self._metrics(batch, now, out)
            case HostStatusReceived(status=status):
                self._status(status, now, out)
            case CommandResultReceived(result=result):
                self._result(result, now, out)
            case OperatorRequest():
                self._operator.handle(event, now, out)
            case PreflightReported():
                self._operator.preflight_reported(event, now, out)
            case VerificationReported():
                done = self._driver.verification.reported(event, now, out)
                if done is not None:
                    self._driver.drive(done, now, out)
            case Tick():
                self._tick(now, out)
            case BrokerConnectivity(connected=connected):
                self._connectivity(connected, now, out)
            case _:
                raise EngineError(f"not an engine event: {type(event).__name__}")
        if not state.broker_connected:
            # Also a bake an operator resumed, or a command sent, meanwhile.
            self._hold_clocks(now, out)
        return out.drain(now)

    def next_wakeup(self) -> float | None:
        """The engine time by which the shell should send a Tick (None: only on events)."""
        state = self._state
        times: list[float] = []
        active = [d for d in state.deployments.values() if d.phase in ACTIVE]
        if active or (state.fleet.hosts and state.config.alerts.enabled):
            times.append(state.now + state.config.engine.housekeeping)
        for dep in active:
            if dep.phase is Phase.BAKING:
                times.append(state.now + max(0.0, dep.bake.length - dep.bake.at(state.now)))
            if dep.phase is Phase.PREFLIGHT and dep.preflight_deadline is not None:
                times.append(dep.preflight_deadline)
            if dep.phase is Phase.VERIFYING and dep.verify_deadline is not None:
                times.append(dep.verify_deadline)
            times.extend(c.deadline for c in dep.commands.values() if not c.final)
            runtime = state.runtimes.get(dep.id)
            if runtime is not None and runtime.wake is not None:
                times.append(runtime.wake)
        # Anything due at or before now was handled by the last event; only the future
        # needs a wake-up (the housekeeping tick bounds how late a fact is noticed).
        future = [t for t in times if t > state.now]
        return min(future) if future else None

    def outstanding(self) -> list[EngineAction]:
        """What the shell must (re)do after a restore: re-publish every unanswered
        command (same id, so agents run nothing twice) and re-run unreported preflight."""
        actions: list[EngineAction] = []
        for dep in sorted(self._state.deployments.values(), key=lambda d: d.id):
            if dep.phase is Phase.PREFLIGHT and any(p.ok is None for p in dep.preflight):
                policy = self._state.policy(dep.environment)
                pending = {p.name for p in dep.preflight if p.ok is None}
                commands = [c for c in policy.preflight if c.name in pending]
                actions.append(RunPreflight(deployment_id=dep.id, commands=commands))
            if Verification.running(dep):
                policy = self._state.policy(dep.environment)
                pending = set(Verification.pending(dep))
                commands = [c for c in policy.verify if c.name in pending]
                actions.append(RunVerification(deployment_id=dep.id, commands=commands))
            for command in dep.commands.values():
                if command.state in ("pending", "accepted"):
                    actions.append(
                        SendCommand(
                            command_id=command.id,
                            deployment_id=dep.id,
                            host=command.host,
                            action=command.action,
                            version=command.version,
                            slot=command.slot,
                            issued=command.issued,
                        )
                    )
        return actions

    # Reading state (copies: the engine's own objects never leave it) --------------------

    def deployment(self, deployment_id: str) -> Deployment | None:
        dep = self._state.deployments.get(deployment_id)
        return None if dep is None else dep.checkpoint(self._state.now)

    def phase(self, deployment_id: str) -> Phase | None:
        """A deployment's phase, without copying it (None: not held in full)."""
        dep = self._state.deployments.get(deployment_id)
        return None if dep is None else dep.phase

    def deployments(self) -> list[Deployment]:
        return [d.checkpoint(self._state.now) for d in self._state.deployments.values()]

    def hosts(self) -> list[HostRecord]:
        return self._state.fleet.records()

    def history(self) -> list[HistoryEntry]:
        return list(self._state.history)

    def alerts(self) -> list[FiringAlert]:
        return self._state.alerts.snapshot()

    def judgements(self, now: float) -> dict[str, JudgementEvidence]:
        """Each judged deployment's rules as its next decision would judge them at
        ``now`` (for /metrics and the dashboard). Reading them changes nothing: not the
        cohorts, not when the engine next wakes."""
        state = self._state
        cohorts = self._driver.cohorts
        out: dict[str, JudgementEvidence] = {}
        for dep in state.deployments.values():
            runtime = state.runtimes.get(dep.id)
            if runtime is None or not runtime.members or cohorts.judged_step(dep) is None:
                continue
            policy = state.policy(dep.environment)
            canary = state.cohort_view(dep, runtime, "canary")
            if not canary.hosts:
                continue
            baseline = state.cohort_view(dep, runtime, "baseline")
            silence = state.silence(policy)
            result = judge(policy, canary, baseline if baseline.hosts else None, silence, now)
            out[dep.id] = result.evidence()
        return out

    # Persistence -----------------------------------------------------------------------

    def snapshot(self) -> EngineSnapshot:
        state = self._state
        return EngineSnapshot(
            format=SNAPSHOT_FORMAT,
            time=state.now,
            deployments=[d.checkpoint(state.now) for d in state.deployments.values()],
            history=list(state.history),
            hosts=state.fleet.records(),
            alerts=state.alerts.snapshot(),
            offline_from=dict(state.offline_from),
            carried=dict(state.carried),
        )

    def saved(self) -> SavedState:
        """What the store keeps of :meth:`snapshot` beside the deployments' own rows:
        built without copying a deployment or a host record, since the pipeline saves
        it on every step that changes a deployment, in the path of a rollback."""
        state = self._state
        return SavedState(
            format=SNAPSHOT_FORMAT,
            time=state.now,
            deployments=list(state.deployments),
            history=list(state.history),
            alerts=state.alerts.snapshot(),
            offline_from=dict(state.offline_from),
            carried=dict(state.carried),
        )

    @classmethod
    def restore(cls, config: CoordinatorConfig, snapshot: EngineSnapshot) -> Engine:
        if snapshot.format != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"snapshot format {snapshot.format} is not {SNAPSHOT_FORMAT}; cannot restore"
            )
        engine = cls(config)
        state = engine._state
        state.now = snapshot.time
        state.fleet = Fleet(
            [msgspec.structs.replace(h, labels=dict(h.labels)) for h in snapshot.hosts]
        )
        state.alerts = Alerts(
            config.alerts, snapshot.alerts, cache_hit_rate=cache_thresholds(config)
        )
        state.history = list(snapshot.history)
        state.offline_from = dict(snapshot.offline_from)
        state.carried = dict(snapshot.carried)
        for stored in snapshot.deployments:
            dep = stored.copy()
            if dep.id in state.deployments:
                raise SnapshotError(f"deployment {dep.id} appears twice in the snapshot")
            state.deployments[dep.id] = dep
            for command_id in dep.commands:
                state.commands[command_id] = dep.id
        engine._resuming = snapshot.time
        return engine

    def _resume(self, saved: float, now: float, out: Effects) -> None:
        """The first event after a restore: restart every clock at ``now`` so that the
        downtime counts neither as bake time nor against hosts or agents."""
        self._resuming = None
        state = self._state
        # The engine's downtime counts against no host's offline grace.
        state.outage_ended(saved, now)
        state.since = now
        for dep in list(state.deployments.values()):
            if dep.phase not in ACTIVE:
                continue
            policy = state.policy(dep.environment)
            if dep.phase is Phase.BAKING:
                # Running, or stopped while the shell was away from the broker.
                dep.bake.since = now
            self._extend_deadlines(dep, now)
            if dep.preflight_deadline is not None:
                dep.preflight_deadline = max(dep.preflight_deadline, now + policy.ack_timeout)
            if dep.verify_deadline is not None:
                dep.verify_deadline = max(dep.verify_deadline, now + policy.ack_timeout)
            if self._driver.cohorts.judged_step(dep) is not None:
                self._driver.cohorts.open_window(dep, now)
            out.touch(dep)
            out.record(
                now,
                EventKind.DEPLOYMENT_RESUMED_AFTER_RESTART,
                f"{dep.id}: resumed in {dep.phase.value} with {dep.bake.at(now):.0f} of "
                f"{dep.bake.length:.0f} s baked; judging restarts on fresh data",
                deployment=dep.id,
                evidence=Restarted(bake_elapsed=dep.bake.at(now), bake_length=dep.bake.length),
            )

    # Events ----------------------------------------------------------------------------

    def _metrics(self, batch: MetricBatch, now: float, out: Effects) -> None:
        state = self._state
        windows = state.host_windows(batch.host)
        if windows.duplicate(batch.session, batch.seq):
            return
        record = state.fleet.get(batch.host)
        environment = record.environment if record is not None else None
        limits = state.limits(environment or "production")
        self._driver.reach.saw(batch.host, now)
        state.carried.pop(batch.host, None)
        dep = state.deployment_of(batch.host)
        for sample in batch.samples:
            # Numbers no host can plausibly send count nowhere (windows.untrusted).
            if not windows.trusted(sample, now, limits):
                continue
            delta = windows.ingest(sample, now, limits)
            out.extend(state.alerts.observe(batch.host, environment, sample, now))
            if delta is not None and dep is not None:
                self._driver.cohorts.ingest(dep, batch.host, sample.check, delta)
        if dep is not None:
            self._driver.samples_arrived(dep, batch.host, now, out)

    def _status(self, status: HostStatus, now: float, out: Effects) -> None:
        state = self._state
        before = state.fleet.get(status.host)
        session = before.session if before is not None else None
        change = state.fleet.apply(status, now)
        if change is StatusChange.STALE:
            return
        if change in (StatusChange.WENT_OFFLINE, StatusChange.CAME_ONLINE) or (
            change is StatusChange.NEW and not status.online
        ):
            out.extend(state.alerts.status(status.host, status.environment, status.online, now))
        if status.online:
            self._driver.reach.saw(status.host, now)
        if change is StatusChange.WENT_OFFLINE or (
            change is StatusChange.NEW and not status.online
        ):
            self._driver.reach.went_offline(
                status.host, now, first_heard=change is StatusChange.NEW
            )
        elif change is StatusChange.CAME_ONLINE or (change is StatusChange.NEW and status.online):
            self._driver.reach.came_online(status.host)
        if status.online and (session is None or status.session > session):
            # A host back (a new session: its birth status; or first heard of, as after
            # the coordinator's restart) runs what it should run now, whether or not a
            # deployment is running.
            self._driver.converge(status.host, status.session, now, out)
        dep = state.deployment_of(status.host)
        if dep is None:
            return
        online_changed = change in (StatusChange.WENT_OFFLINE, StatusChange.CAME_ONLINE)
        # A host going offline or coming back may change a verdict: judge fully. Any
        # other status only confirms commands.
        self._driver.commands.heard_from(dep, status.host)
        self._driver.drive(dep, now, out, full=online_changed)

    def _result(self, result: CommandResult, now: float, out: Effects) -> None:
        state = self._state
        deployment_id = state.commands.get(result.id)
        dep = state.deployments.get(deployment_id) if deployment_id is not None else None
        command = dep.commands.get(result.id) if dep is not None else None
        if dep is None or command is None:
            out.record(
                now,
                EventKind.COMMAND_UNKNOWN,
                f"result {result.state} for unknown command {result.id} from {result.host}",
                host=result.host,
                evidence=CommandAnswer(command=result.id, state=result.state, detail=result.detail),
            )
            return
        evidence = CommandAnswer(
            command=command.id,
            state=result.state,
            detail=result.detail,
            version=result.version,
            slot=result.slot,
            agent_time=result.time,
        )
        if result.host != command.host:
            out.record(
                now,
                EventKind.COMMAND_HOST_MISMATCH,
                f"{result.host} answered {command.id}, which was sent to {command.host}; ignored",
                deployment=dep.id,
                host=result.host,
                evidence=evidence,
            )
            return
        if command.final:
            if result.state != command.state:
                out.record(
                    now,
                    EventKind.COMMAND_LATE,
                    f"{command.host} answered {command.id} {result.state} after it was "
                    f"{command.state}",
                    deployment=dep.id,
                    host=command.host,
                    evidence=evidence,
                )
            return
        # An answer alone is not persisted at once (no DeploymentChanged): if it is lost
        # in a crash, the restored engine still waits for it, the shell re-publishes the
        # same id and the agent answers again from memory. Decisions taken on it are.
        if result.state == "accepted":
            if command.state == "pending":
                command.state = "accepted"
            return
        self._driver.reach.saw(command.host, now)
        command.state = result.state
        command.detail = result.detail[:1024]
        command.answered = now
        self._driver.commands.heard_from(dep, command.host)
        out.record(
            now,
            ANSWERED_AS[result.state],
            f"{command.host}: {command.action} {command.version or command.slot or ''} "
            f"{result.state}{': ' + result.detail[:200] if result.detail else ''}",
            deployment=dep.id,
            host=command.host,
            evidence=evidence,
        )
        self._driver.drive(dep, now, out, full=result.state != "succeeded")

    def _connectivity(self, connected: bool, now: float, out: Effects) -> None:
        """The shell's session with the broker went down or came back.

        While it is down nobody watches the hosts or hears their answers, so no clock
        that measures them runs: no missing-data clock (EngineState.silence), no bake
        clock (a canary that went bad meanwhile must not pass on the data from before),
        no command's ack timeout (answers wait at the broker). Back, every host's silence
        is counted afresh from now (except for the judged hosts that were missing when
        it went: EngineState.carried), bakes go on from where they stopped, each unanswered
        command has its ack timeout again from now, and deployments are judged again (a
        hold for missing data clears once every judged host has data again)."""
        state = self._state
        if connected == state.broker_connected:
            return
        went = state.disconnected_at
        if not connected:
            self._carry_missing(now)
        state.broker_connected = connected
        state.disconnected_at = None if connected else now
        if connected:
            if went is not None:
                state.outage_ended(went, now)
            state.since = now
            for dep in state.deployments.values():
                if dep.phase not in ACTIVE:
                    continue
                if dep.phase is Phase.BAKING and dep.bake.since is None:
                    dep.bake.since = now
                self._extend_deadlines(dep, now)
                out.touch(dep)
        else:
            self._hold_clocks(now, out)
        self._tick(now, out)

    def _carry_missing(self, now: float) -> None:
        """The shell is losing the broker: remember which judged hosts are missing now
        (EngineState.carried, where the hosts already there stay until they send a
        sample), so that its return does not excuse them."""
        carried = self._state.carried
        for dep in self._state.deployments.values():
            if dep.phase not in ACTIVE:
                continue
            result = self._driver.cohorts.judgement(dep, now)
            if result is None:
                continue
            for host, found in result.missing.items():
                if host not in carried or found[0] < carried[host][0]:
                    carried[host] = found

    def _hold_clocks(self, now: float, out: Effects) -> None:
        """Stop the bake clocks and keep the ack timeouts from running out (disconnected)."""
        for dep in self._state.deployments.values():
            if dep.phase not in ACTIVE:
                continue
            if dep.phase is Phase.BAKING and dep.bake.since is not None:
                dep.bake.stop(now)
                out.touch(dep)
            timeout = self._state.policy(dep.environment).ack_timeout
            if self._extend_deadlines(dep, now, slack=timeout / 2):
                out.touch(dep)

    def _extend_deadlines(self, dep: Deployment, now: float, *, slack: float = 0.0) -> bool:
        """Give each command of ``dep`` still waited for (unanswered, or answered and its
        status not in yet) its ack timeout from ``now`` at least; only when less than
        ``slack`` of it is left (so that a long outage does not save every deployment on
        every tick). Whether any deadline moved."""
        timeout = self._state.policy(dep.environment).ack_timeout
        moved = False
        for command in dep.commands.values():
            waited = not command.final or command.state == "succeeded"
            if waited and command.deadline < now + timeout - slack:
                command.deadline = now + timeout
                moved = True
        return moved

    def _tick(self, now: float, out: Effects) -> None:
        state = self._state
        for dep in list(state.deployments.values()):
            if dep.phase not in ACTIVE:
                continue
            self._driver.drive(dep, now, out)
            if dep.phase is Phase.BAKING:
                out.touch(dep)  # a checkpoint of the running bake clock
        hosts = [(h.host, h.environment, h.online) for h in state.fleet.hosts.values()]
        out.extend(
            state.alerts.tick(
                sorted(hosts),
                state.plain_checks,
                state.config.engine.interval,
                state.since if state.since is not None else now,
                now,
                listening=state.broker_connected,
            )
        )
