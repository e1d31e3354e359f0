"""The fleet as the agents describe it: who is online, on which version and slot.

Statuses are retained on the broker, so a coordinator (re)starting gets every host's
latest one. The session counter rises on every agent connect; the agent's Will carries
the session it was registered with. So a status from an older session is stale, and an
offline status of the current session means that session ended: nothing more from it
(not even a late online status) is believed until a newer session speaks.
"""

from __future__ import annotations

import enum

import msgspec
from msgspec import Struct

from shared.messages import Environment, HostStatus, Slot


class HostRecord(Struct, kw_only=True):
    """One host as last reported; part of the engine snapshot."""

    host: str
    environment: Environment
    online: bool
    session: int
    version: str | None = None
    slot: Slot | None = None
    labels: dict[str, str] = {}
    # The agent's time and sequence number on its latest status, to drop reordered ones
    # within a session: by ``seq`` when the agent sends one (its clock may step back),
    # by time from an agent that predates it.
    status_time: float = 0.0
    status_seq: int = 0
    # Engine time when ``online`` last changed (offline since, for missing data).
    changed_at: float = 0.0


class StatusChange(enum.Enum):
    STALE = "stale"
    NEW = "new"
    UPDATED = "updated"
    WENT_OFFLINE = "went_offline"
    CAME_ONLINE = "came_online"


class Fleet:
    """Host records by id, updated from HostStatus messages."""

    def __init__(self, hosts: list[HostRecord] | None = None) -> None:
        self.hosts: dict[str, HostRecord] = {h.host: h for h in hosts or []}

    def get(self, host: str) -> HostRecord | None:
        return self.hosts.get(host)

    def in_environment(self, environment: str) -> list[HostRecord]:
        return sorted(
            (h for h in self.hosts.values() if h.environment == environment),
            key=lambda h: h.host,
        )

    def records(self) -> list[HostRecord]:
        """Copies of every record, by host id."""
        return [
            msgspec.structs.replace(h, labels=dict(h.labels)) for _, h in sorted(self.hosts.items())
        ]

    def apply(self, status: HostStatus, now: float) -> StatusChange:
        record = self.hosts.get(status.host)
        if record is None:
            self.hosts[status.host] = _record(status, now)
            return StatusChange.NEW
        if status.session < record.session:
            return StatusChange.STALE
        if status.session == record.session:
            if not record.online:
                # This session has ended (its Will was seen); nothing later from it counts.
                return StatusChange.STALE
            if status.online and _older(status, record):
                return StatusChange.STALE
        was_online = record.online
        if not status.online and status.session == record.session:
            # The current session's Will: the agent prepared it when it connected, so its
            # version and slot may predate a deploy since. It only ends the session.
            record.online = False
        else:
            record.environment = status.environment
            record.online = status.online
            record.session = status.session
            record.version = status.version
            record.slot = status.slot
            record.labels = dict(status.labels)
            record.status_time = status.time
            record.status_seq = status.seq
        if was_online != status.online:
            record.changed_at = now
            return StatusChange.CAME_ONLINE if status.online else StatusChange.WENT_OFFLINE
        return StatusChange.UPDATED


def _record(status: HostStatus, now: float) -> HostRecord:
    return HostRecord(
        host=status.host,
        environment=status.environment,
        online=status.online,
        session=status.session,
        version=status.version,
        slot=status.slot,
        labels=dict(status.labels),
        status_time=status.time,
        status_seq=status.seq,
        changed_at=now,
    )


def _older(status: HostStatus, record: HostRecord) -> bool:
    """Whether a status of the record's session came before the one the record holds."""
    if status.seq or record.status_seq:
        return status.seq < record.status_seq
    return status.time < record.status_time
