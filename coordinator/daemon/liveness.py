"""The coordinator's systemd notifications: READY=1 once its store is open (the HTTP
API already listens by then), WATCHDOG=1 only while its loop and its store make
progress, so that a wedged coordinator is restarted instead of holding every
deployment in silence.

What counts as progress, checked every half watchdog interval:

* the event loop: this task runs on it, so a blocked loop sends nothing;
* the store: a ping answers (or fails) within ``store_limit``. A store that refuses
  (PostgreSQL down) is an outage the coordinator already rides out (it holds and
  retries, and a restart would not help); a ping that hangs is a stall;
* the engine: its next wake-up is not overdue by more than ``engine_limit`` (the
  ticker steps it when due; an overdue one means the ticker is stuck).

Without ``$WATCHDOG_USEC`` the task sends READY=1 and returns: nothing wakes the
process for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from coordinator.engine import Engine
from shared.errors import RollguardError
from shared.sdnotify import Heartbeat, Notifier

log = logging.getLogger(__name__)

STORE: str = "store"
ENGINE: str = "engine"


class _Store(Protocol):
    async def ping(self) -> None: ...


class Supervised(Protocol):
    """What the supervisor reads off the coordinator (coordinator.daemon.service)."""

    @property
    def store(self) -> _Store: ...

    @property
    def store_ok(self) -> bool: ...

    @property
    def engine(self) -> Engine | None: ...

    def clock(self) -> float: ...


async def supervise(
    coordinator: Supervised,
    notifier: Notifier,
    stop: asyncio.Event,
    *,
    store_limit: float,
    engine_limit: float,
    poll: float,
) -> None:
    """READY=1 once the store is open (checked every ``poll`` seconds until then),
    then WATCHDOG=1 while the loop, the store and the engine make progress."""
    if not notifier.enabled:
        return
    while not coordinator.store_ok:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll):
                await stop.wait()
        if stop.is_set():
            return
    notifier.notify("READY=1", "STATUS=store open; serving")
    if notifier.watchdog_interval is None:
        return
    heartbeat = Heartbeat()
    period = notifier.watchdog_interval / 2
    probes = asyncio.create_task(
        _probe(
            coordinator,
            heartbeat,
            stop,
            store_limit=store_limit,
            engine_limit=engine_limit,
            period=period,
        )
    )
    try:
        await notifier.watchdog(
            heartbeat, {STORE: period + store_limit, ENGINE: period + store_limit}, stop
        )
    finally:
        probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probes


async def _probe(
    coordinator: Supervised,
    heartbeat: Heartbeat,
    stop: asyncio.Event,
    *,
    store_limit: float,
    engine_limit: float,
    period: float,
) -> None:
    """Beat ``store`` when a ping returns in time, ``engine`` when its wake-up is not
    overdue; every ``period`` until ``stop``."""
    while not stop.is_set():
        try:
            async with asyncio.timeout(store_limit):
                await coordinator.store.ping()
        except TimeoutError:
            log.error("store ping did not return within %.1f s", store_limit)
        except RollguardError:
            heartbeat.beat(STORE)  # an outage, answered: the coordinator holds and retries
        else:
            heartbeat.beat(STORE)
        engine = coordinator.engine
        wake = engine.next_wakeup() if engine is not None else None
        if wake is None or coordinator.clock() - wake <= engine_limit:
            heartbeat.beat(ENGINE)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(period):
                await stop.wait()
