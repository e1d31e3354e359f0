"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), with no dependency,
for both daemons.

Messages are datagrams on the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` names the abstract namespace). READY=1 goes once the daemon works; WATCHDOG=1
every half ``$WATCHDOG_USEC``, but only while each watched loop has beaten its
heartbeat recently: a wedged loop stops the pings and systemd restarts the daemon.
When no watchdog is asked for, the pinging task returns at once: it never wakes the
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# How often the watchdog looks again while a loop has yet to beat for the first time.
STARTING_POLL = 0.5


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Heartbeat:
    """The last time each named loop made progress (monotonic seconds).

    A loop beats when it works and parks when it waits for its next piece of work (a
    check due in an hour, a batch to send): a parked loop is not stale however long it
    waits, so no loop has to wake up only to say it is alive. A loop that never comes
    back from a call (not parked) goes stale after its limit.
    """

    def __init__(self) -> None:
        self._beats: dict[str, float] = {}
        self._parked: set[str] = set()

    def beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()
        self._parked.discard(name)

    def park(self, name: str) -> None:
        """``name`` waits for its next work: progress, until it beats again."""
        self._beats[name] = time.monotonic()
        self._parked.add(name)

    def stale(self, limits: Mapping[str, float], *, origin: float = float("-inf")) -> list[str]:
        """The loops, not parked, that have not beaten within their limit; one that has
        never beaten counts from ``origin`` (by default it is stale at once)."""
        current = time.monotonic()
        return [
            name
            for name, limit in limits.items()
            if name not in self._parked and current - self._beats.get(name, origin) > limit
        ]


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = (
            "\0" + address[1:] if address.startswith("@") else address
        ) or None
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram; False (logged) if it cannot be sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", fields, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def watchdog(
        self, heartbeat: Heartbeat, limits: Mapping[str, float], stop: asyncio.Event
    ) -> None:
        """Ping at half the watchdog interval while no watched loop is stale.

        The first ping waits for every loop's first beat, checked every
        ``STARTING_POLL`` seconds meanwhile; a loop that has not beaten yet is reported
        only once its limit has passed since the watchdog started (every start is not
        an error)."""
        if self.watchdog_interval is None or not self.enabled:
            return
        period = self.watchdog_interval / 2
        started = time.monotonic()
        withheld = False
        while not stop.is_set():
            wait = period
            if not heartbeat.stale(limits):
                self.notify("WATCHDOG=1")
                if withheld:
                    log.warning("watchdog pings resumed")
                withheld = False
            elif overdue := heartbeat.stale(limits, origin=started):
                if not withheld:
                    log.error(
                        "withholding the watchdog ping: no progress in %s", ", ".join(overdue)
                    )
                    withheld = True
            else:
                wait = min(period, STARTING_POLL)  # starting: a loop's first beat is due
            await _wait(stop, wait)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process (we were started by a wrapper)
    return int(usec) / 1_000_000
