"""CPU utilisation over the interval since the previous run (psutil, /proc/stat)."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import psutil

from agent.checks.base import Check, Sink, describe, now

# psutil measures between two calls; the first window is this long (at most).
MIN_WINDOW: Final = 0.5


class CpuCheck(Check):
    name = "cpu"

    def __init__(self, *, interval: float, timeout: float) -> None:
        super().__init__(interval=interval, timeout=timeout)
        # Prime psutil's counters so the first run measures a real window.
        psutil.cpu_percent(interval=None)
        psutil.cpu_times_percent(interval=None)
        self._primed = time.monotonic()
        self._cores = psutil.cpu_count() or 1

    async def collect(self, sink: Sink) -> None:
        started = now()
        # Never longer than half the run's timeout, or the first run would time out.
        wait = min(MIN_WINDOW, self.timeout / 2) - (time.monotonic() - self._primed)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            percent = psutil.cpu_percent(interval=None)
            times = psutil.cpu_times_percent(interval=None)
        except OSError as exc:
            sink.emit(self.failure(started, f"reading CPU times: {describe(exc)}"))
            return
        values = {"percent": percent, "cores": self._cores}
        for field in ("user", "system", "iowait", "steal"):
            if hasattr(times, field):
                values[field] = getattr(times, field)
        sink.emit(self.sample(started, values))
