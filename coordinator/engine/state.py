"""What the engine holds between events, the outbox it fills, and the snapshot format.

Two kinds of state live here. Durable state (deployments, history, host records, firing
alerts) is what ``Engine.snapshot()`` exports. Derived state (sample windows, pooled
cohort counts, which notifications were sent) is rebuilt from new data after a
restore, on purpose: a restarted engine judges only what it has seen itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import Struct

from coordinator.engine.actions import DeploymentChanged, EngineAction, Notify, Record, Severity
from coordinator.engine.alerts import Alerts, FiringAlert, cache_thresholds
from coordinator.engine.deployment import Deployment, HistoryEntry, decode_body, encode_body
from coordinator.engine.errors import SnapshotError
from coordinator.engine.fleet import Fleet, HostRecord
from coordinator.engine.phases import ACTIVE
from coordinator.engine.rules import CohortView, Silence
from coordinator.engine.windows import (
    GAUGE_CHECKS,
    CheckWindow,
    HostWindows,
    Limits,
    Tally,
    base_check,
    slot_check,
)
from shared.config.coordinator import CoordinatorConfig, EnvironmentPolicy
from shared.evidence import Evidence, encode_evidence
from shared.kinds import EventKind
from shared.messages import Slot

SNAPSHOT_FORMAT = 1


class EngineSnapshot(Struct, kw_only=True):
    """Everything needed to resume: persist it whole, restore it with Engine.restore."""

    format: int = SNAPSHOT_FORMAT
    # The engine time it was taken at.
    time: float
    deployments: list[Deployment] = []
    history: list[HistoryEntry] = []
    hosts: list[HostRecord] = []
    alerts: list[FiringAlert] = []
    # EngineState.offline_from and EngineState.carried.
    offline_from: dict[str, float] = {}
    carried: dict[str, tuple[float, str]] = {}


@dataclass
class Runtime:
    """A deployment's derived state: cohorts of the current window and their counts."""

    # host -> "canary" | "baseline" for the hosts judged in this window.
    members: dict[str, str] = field(default_factory=dict)
    # host -> slot whose checks are judged (blue-green's inactive slot), if any.
    slots: dict[str, Slot] = field(default_factory=dict)
    pooled: dict[str, dict[str, Tally]] = field(default_factory=dict)
    # Notifications already sent for a condition, so each is sent once.
    notified: set[str] = field(default_factory=set)
    # The earliest time a fact may change without a new event (silence, grace).
    wake: float | None = None
    # Commands of the current attempt still awaited, by host (None: to be recomputed).
    waiting: dict[str, set[str]] | None = None

    def base_name(self, host: str, reported: str) -> str | None:
        """The base check a host's reported check counts as in this window, if any."""
        slot = self.slots.get(host)
        if slot is None:
            return reported if base_check(reported) == reported else None
        if reported in GAUGE_CHECKS:
            return reported
        return base_check(reported) if reported == slot_check(base_check(reported), slot) else None

    def cohort(self, name: str) -> list[str]:
        return sorted(h for h, c in self.members.items() if c == name)


class Effects:
    """Actions of one handle() call, with the deployments it changed.

    ``drain`` puts the DeploymentChanged snapshots first: a shell that persists before
    it publishes never sends a command its store does not know about.
    """

    def __init__(self) -> None:
        self.actions: list[EngineAction] = []
        self.changed: dict[str, Deployment] = {}

    def add(self, action: EngineAction) -> None:
        self.actions.append(action)

    def extend(self, actions: list[EngineAction]) -> None:
        self.actions.extend(actions)

    def touch(self, deployment: Deployment) -> None:
        self.changed[deployment.id] = deployment

    def record(
        self,
        now: float,
        kind: EventKind,
        message: str,
        *,
        deployment: str | None = None,
        host: str | None = None,
        actor: str | None = None,
        evidence: Evidence | Mapping[str, Any] | None = None,
    ) -> None:
        self.add(
            Record(
                time=now,
                kind=kind,
                message=message,
                deployment=deployment,
                host=host,
                actor=actor,
                evidence=_fields(evidence),
            )
        )

    def notify(
        self,
        now: float,
        kind: EventKind,
        severity: Severity,
        message: str,
        *,
        environment: str | None = None,
        deployment: str | None = None,
        evidence: Evidence | Mapping[str, Any] | None = None,
    ) -> None:
        self.add(
            Notify(
                time=now,
                kind=kind,
                severity=severity,
                message=message,
                environment=environment,
                deployment=deployment,
                evidence=_fields(evidence),
            )
        )

    def drain(self, now: float) -> list[EngineAction]:
        first: list[EngineAction] = [DeploymentChanged.of(d, now) for d in self.changed.values()]
        return first + self.actions


def _fields(evidence: Evidence | Mapping[str, Any] | None) -> dict[str, Any]:
    """Evidence as the event log stores it: a JSON object (a transition's fields with
    typed parts, such as a judgement or command states, converted)."""
    if evidence is None:
        return {}
    if isinstance(evidence, Struct):
        return encode_evidence(evidence)
    fields: dict[str, Any] = msgspec.to_builtins(evidence)
    return fields


class EngineState:
    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.fleet = Fleet()
        self.windows: dict[str, HostWindows] = {}
        self.alerts = Alerts(config.alerts, cache_hit_rate=cache_thresholds(config))
        # Active deployments and the latest finished one of each environment.
        self.deployments: dict[str, Deployment] = {}
        self.history: list[HistoryEntry] = []
        self.commands: dict[str, str] = {}
        self.runtimes: dict[str, Runtime] = {}
        self.now = 0.0
        # Nothing before this engine time counts as a host's silence: the engine's start,
        # its restore, or the shell's reconnection to the broker.
        self.since: float | None = None
        # Whether the shell's session with the broker is up (BrokerConnectivity): while
        # it is down, nothing counts as a host's silence. When it went down, if it is.
        self.broker_connected = True
        self.disconnected_at: float | None = None
        # Since when each host is offline by its Will, on the clock that runs only while
        # the shell hears the broker (shifted by each outage and by the engine's own
        # downtime): the offline grace is counted on it. Saved with the snapshot, so a
        # restore does not restart the grace of a host long gone.
        self.offline_from: dict[str, float] = {}
        # Judged hosts that were missing when the shell lost the broker (or when the
        # snapshot was taken), until they send a sample: since when (on the clock that
        # stops while nobody listens) and why. Everyone else gets a fresh grace when the
        # shell is back; these do not, or every blip of the broker session would give
        # a dead canary the time to pass its bake.
        self.carried: dict[str, tuple[float, str]] = {}

    # Lookups -------------------------------------------------------------------------

    def policy(self, environment: str) -> EnvironmentPolicy:
        return self.config.environments.get(environment)

    def limits(self, environment: str) -> Limits:
        policy = self.policy(environment)
        return Limits(
            latency_ms=policy.latency_ms,
            gauges={
                "cpu": policy.cpu_percent,
                "memory": policy.memory_percent,
                "disk": policy.disk_percent,
            },
            max_count=self.config.engine.max_count,
        )

    def silence(self, policy: EnvironmentPolicy) -> Silence:
        since = self.since if self.since is not None else self.now
        return Silence(
            interval=self.config.engine.interval,
            intervals=policy.silent_intervals,
            # Disconnected from the broker, the engine hears nobody: silence starts now,
            # at every moment, so no clock runs until the shell is back.
            since=since if self.broker_connected else self.now,
            offline_for=self.offline_for,
            carried=self.carried_now(),
        )

    def watched_at(self, now: float) -> float:
        """The time the hosts' clocks stand at: ``now``, or, while the shell is away from
        the broker, the moment it went (no clock that measures a host runs meanwhile)."""
        if self.broker_connected:
            return now
        return min(now, self.disconnected_at if self.disconnected_at is not None else now)

    def offline_for(self, host: str, now: float) -> float:
        """How long ``host`` has been offline by its Will, on the clock that stops while
        the shell is away; without an entry, for long (infinity)."""
        since = self.offline_from.get(host)
        return float("inf") if since is None else self.watched_at(now) - since

    def outage_ended(self, went: float, back: float) -> None:
        """Nobody watched the hosts from ``went`` to ``back`` (the shell away from the
        broker, or the engine's own downtime): no offline clock ran meanwhile, and the
        hosts missing before stay missing for as long as they were."""
        offline = self.offline_from
        for host, since in offline.items():
            offline[host] = since + max(0.0, back - max(since, went))
        self.carried = _later(self.carried, max(0.0, back - went))

    def carried_now(self) -> Mapping[str, tuple[float, str]]:
        """``carried`` as of now: while the shell is away, its missing time stands where
        it was when the shell went."""
        if self.broker_connected or not self.carried:
            return self.carried
        return _later(self.carried, self.now - self.watched_at(self.now))

    def host_windows(self, host: str) -> HostWindows:
        windows = self.windows.get(host)
        if windows is None:
            windows = self.windows[host] = HostWindows(host)
        return windows

    def plain_checks(self, host: str) -> dict[str, CheckWindow]:
        """A host's checks as the fleet sees them (no blue-green slot checks). Read only."""
        windows = self.windows.get(host)
        return windows.plain if windows is not None else {}

    def judged_checks(self, runtime: Runtime, host: str) -> dict[str, CheckWindow]:
        """A host's checks by base name, as judged in the deployment's window. Read only."""
        windows = self.windows.get(host)
        if windows is None:
            return {}
        slot = runtime.slots.get(host)
        return windows.plain if slot is None else windows.for_slot(slot)

    def cohort_view(self, deployment: Deployment, runtime: Runtime, name: str) -> CohortView:
        return CohortView(
            name=name,
            hosts=runtime.cohort(name),
            window_start=deployment.window_start
            if deployment.window_start is not None
            else self.now,
            checks=lambda host: self.judged_checks(runtime, host),
            pooled=runtime.pooled.get(name, {}),
            records=self.fleet.get,
        )

    def active_in(self, environment: str) -> Deployment | None:
        for deployment in self.deployments.values():
            if deployment.environment == environment and deployment.phase in ACTIVE:
                return deployment
        return None

    def deployment_of(self, host: str) -> Deployment | None:
        record = self.fleet.get(host)
        if record is None:
            return None
        deployment = self.active_in(record.environment)
        if deployment is None or host not in deployment.targets:
            return None
        return deployment

    def known_id(self, deployment_id: str) -> bool:
        return deployment_id in self.deployments or any(
            h.deployment == deployment_id for h in self.history
        )


def _later(carried: Mapping[str, tuple[float, str]], by: float) -> dict[str, tuple[float, str]]:
    """``carried`` with each host's missing time started ``by`` seconds later."""
    return {host: (since + by, why) for host, (since, why) in carried.items()}


class SavedState(Struct, kw_only=True):
    """The snapshot as the store keeps it. Each deployment lives once, in its own row
    written in the same transaction, and is named here by id; hosts are left out, since
    the broker's retained statuses are their source of truth and are fed to a restored
    engine first (10,000 of them would bloat every save)."""

    format: int = SNAPSHOT_FORMAT
    time: float
    deployments: list[str] = []
    history: list[HistoryEntry] = []
    alerts: list[FiringAlert] = []
    offline_from: dict[str, float] = {}
    carried: dict[str, tuple[float, str]] = {}


# The one codec: JSON, for the snapshot whole, the saved state and each deployment.
# Rows written before the store's schema version 3 hold msgpack, still read here.
_encoder = msgspec.json.Encoder()
_snapshot_decoder = msgspec.json.Decoder(EngineSnapshot)
_saved_decoder = msgspec.json.Decoder(SavedState)


def _legacy(data: bytes) -> bool:
    return not data.lstrip().startswith(b"{")


def encode_snapshot(snapshot: EngineSnapshot) -> bytes:
    """JSON bytes of the whole snapshot."""
    return _encoder.encode(snapshot)


def decode_snapshot(data: bytes) -> EngineSnapshot:
    """The snapshot in ``data``; SnapshotError if it is not one."""
    try:
        return _snapshot_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SnapshotError(f"not an engine snapshot: {exc}") from exc


def encode_saved(saved: SavedState) -> bytes:
    """The saved state (``Engine.saved``) as JSON."""
    return _encoder.encode(saved)


def decode_saved(data: bytes) -> SavedState:
    """The saved state in ``data``; SnapshotError if it is not one."""
    try:
        if not _legacy(data):
            return _saved_decoder.decode(data)
        whole = msgspec.msgpack.decode(data, type=EngineSnapshot)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SnapshotError(f"not a saved engine state: {exc}") from exc
    return SavedState(
        format=whole.format,
        time=whole.time,
        deployments=[d.id for d in whole.deployments],
        history=whole.history,
        alerts=whole.alerts,
        offline_from=whole.offline_from,
        carried=whole.carried,
    )


def joined(saved: SavedState, deployments: Mapping[str, Deployment]) -> EngineSnapshot:
    """The snapshot again, from the saved state and its deployments' rows by id."""
    missing = [d for d in saved.deployments if d not in deployments]
    if missing:
        raise SnapshotError(f"the saved engine state names deployments not stored: {missing}")
    return EngineSnapshot(
        format=saved.format,
        time=saved.time,
        deployments=[deployments[d] for d in saved.deployments],
        history=saved.history,
        alerts=saved.alerts,
        offline_from=saved.offline_from,
        carried=saved.carried,
    )


def encode_deployment(deployment: Deployment) -> bytes:
    """A deployment's row body: JSON."""
    return encode_body(deployment)


def decode_deployment(data: bytes) -> Deployment:
    """A deployment from its row body; SnapshotError if it is not one."""
    try:
        if _legacy(data):
            return msgspec.msgpack.decode(data, type=Deployment)
        return decode_body(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SnapshotError(f"not a stored deployment: {exc}") from exc
