"""The shell's one view of the fleet: who is online, on which version, and their latest
samples. It feeds both the API (``rollguard hosts``) and the engine.

A status is judged stale or new by the engine's own rule (``coordinator.engine.fleet``:
the agent's session counter, and a session ended by its Will stays ended), applied here
to the same kind of record, so the API, the engine and a freshly activated engine never
disagree about a host. The registry outlives the engine: a standby, or a leader whose
store is down, keeps it current from the broker's retained statuses, and a new engine
learns the fleet from :meth:`HostRegistry.replay`.
"""

from __future__ import annotations

from msgspec import Struct

from coordinator.engine.fleet import Fleet, HostRecord, StatusChange
from shared.messages import HostStatus, MetricBatch
from shared.views import CheckView


class HostActivity(Struct, kw_only=True):
    """What the agent last said besides its status: for display only."""

    agent_version: str
    last_seen: float
    checks: dict[str, CheckView] = {}
    batches: int = 0
    last_seq: int | None = None
    # (session, seq) of the batch that set each check's latest sample.
    check_order: dict[str, tuple[int, int]] = {}


class HostEntry(Struct, kw_only=True, frozen=True):
    """One host as the registry knows it: the engine's record and its activity."""

    record: HostRecord
    activity: HostActivity


class HostRegistry:
    def __init__(self) -> None:
        self._fleet = Fleet()
        self._activity: dict[str, HostActivity] = {}
        # The statuses that made each host what it is now, oldest first: the current
        # session's latest online status and, once it ended, its Will. Replaying them
        # to a new engine gives it exactly this registry's records.
        self._history: dict[str, list[HostStatus]] = {}
        # Kept as statuses arrive: counting 10,000 records on every status made a
        # fleet's births quadratic.
        self._online = 0

    def apply_status(self, status: HostStatus, now: float) -> StatusChange:
        """Apply a status by the engine's rule; STALE means it changed nothing."""
        before = self._fleet.get(status.host)
        was_online = before is not None and before.online
        change = self._fleet.apply(status, now)
        if change is StatusChange.STALE:
            return change
        record = self._fleet.hosts[status.host]
        self._online += record.online - was_online
        if status.online:
            self._history[status.host] = [status]
        else:
            births = [s for s in self._history.get(status.host, []) if s.online]
            same_session = [s for s in births if s.session == status.session]
            self._history[status.host] = [*same_session, status]
        activity = self._activity.get(status.host)
        if activity is None:
            self._activity[status.host] = HostActivity(
                agent_version=status.agent_version, last_seen=now
            )
        else:
            activity.agent_version = status.agent_version
            activity.last_seen = now
        return change

    def apply_batch(self, batch: MetricBatch, now: float) -> bool:
        """Keep a batch's samples for display; False for a host that never said hello
        (metrics before a birth status carry no identity worth showing)."""
        activity = self._activity.get(batch.host)
        if activity is None:
            return False
        activity.last_seen = now
        activity.batches += 1
        activity.last_seq = batch.seq
        order = (batch.session, batch.seq)
        for sample in batch.samples:
            current = activity.checks.get(sample.check)
            # The latest is the one from the newest batch (the agent's own order, which
            # a clock stepping back or a sample timed ahead cannot pin), or, from an
            # older session (an agent whose store was reset counts again), the newest
            # by time.
            seen = activity.check_order.get(sample.check, (0, 0))
            if (
                current is None
                or order >= seen
                or (batch.session < seen[0] and sample.time >= current.time)
            ):
                activity.check_order[sample.check] = order
                # The sample's own dict: wire messages are never changed once decoded.
                activity.checks[sample.check] = CheckView(
                    ok=sample.ok, time=sample.time, values=sample.values, error=sample.error
                )
        return True

    def replay(self) -> list[HostStatus]:
        """The statuses to feed a new engine so that its fleet equals this one."""
        return [status for host in sorted(self._history) for status in self._history[host]]

    def get(self, host: str) -> HostEntry | None:
        record = self._fleet.get(host)
        if record is None:
            return None
        return HostEntry(record=record, activity=self._activity[host])

    def entries(self) -> list[HostEntry]:
        """Every host, by id."""
        return [
            HostEntry(record=self._fleet.hosts[name], activity=self._activity[name])
            for name in sorted(self._fleet.hosts)
        ]

    def versions(self) -> dict[str, str | None]:
        return {name: record.version for name, record in self._fleet.hosts.items()}

    def online_count(self) -> int:
        return self._online
