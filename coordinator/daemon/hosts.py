"""What the coordinator shows about each host: its latest status and samples.

This is presentation state for the API and the CLI (``rollguard hosts``); the
decisions are the engine's. Statuses respect the agent's session counter: a Will
from an older session never marks a reborn agent offline.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.messages import HostStatus, MetricBatch


class CheckView(msgspec.Struct, kw_only=True):
    ok: bool
    time: float
    values: dict[str, float]
    error: str | None = None


class HostView(msgspec.Struct, kw_only=True):
    host: str
    online: bool
    session: int
    environment: str
    version: str | None
    slot: str | None
    labels: dict[str, str]
    agent_version: str
    last_seen: float
    checks: dict[str, CheckView] = {}
    batches: int = 0
    last_seq: int | None = None


class HostRegistry:
    def __init__(self) -> None:
        self._hosts: dict[str, HostView] = {}
        # Kept as statuses arrive: the daemon reads it on every status, and counting
        # 10,000 views each time made a fleet's births quadratic.
        self._online = 0

    def apply_status(self, status: HostStatus, now: float) -> HostView | None:
        """Apply a status; return the view if it changed the host, None if stale."""
        view = self._hosts.get(status.host)
        if view is not None and status.session < view.session:
            return None
        if view is None:
            view = HostView(
                host=status.host,
                online=status.online,
                session=status.session,
                environment=status.environment,
                version=status.version,
                slot=status.slot,
                labels=dict(status.labels),
                agent_version=status.agent_version,
                last_seen=now,
            )
            self._hosts[status.host] = view
            self._online += status.online
            return view
        if status.session == view.session and not status.online and not view.online:
            return None
        self._online += status.online - view.online
        view.online = status.online
        view.session = status.session
        view.environment = status.environment
        view.version = status.version
        view.slot = status.slot
        view.labels = dict(status.labels)
        view.agent_version = status.agent_version
        view.last_seen = now
        return view

    def apply_batch(self, batch: MetricBatch, now: float) -> HostView | None:
        view = self._hosts.get(batch.host)
        if view is None:
            return None  # metrics before a birth status carry no identity worth showing
        view.last_seen = now
        view.batches += 1
        view.last_seq = batch.seq
        for sample in batch.samples:
            current = view.checks.get(sample.check)
            if current is None or sample.time >= current.time:
                # The sample's own dict: wire messages are never changed once decoded.
                view.checks[sample.check] = CheckView(
                    ok=sample.ok, time=sample.time, values=sample.values, error=sample.error
                )
        return view

    def get(self, host: str) -> HostView | None:
        return self._hosts.get(host)

    def all(self) -> list[HostView]:
        return [self._hosts[name] for name in sorted(self._hosts)]

    def online_count(self) -> int:
        return self._online

    def as_builtins(self) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(view) for view in self.all()]
