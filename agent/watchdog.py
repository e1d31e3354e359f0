"""The agent's side of systemd's notify protocol: the protocol itself is
``shared.sdnotify`` (the coordinator speaks it too). The agent sends READY=1 once its
loops run and WATCHDOG=1 only while the collection and MQTT loops beat their
heartbeats (agent/app.py names the loops and their limits)."""

from __future__ import annotations

from shared.sdnotify import Heartbeat, Notifier

__all__ = ["Heartbeat", "Notifier"]
