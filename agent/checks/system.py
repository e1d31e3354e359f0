"""Load average and network I/O counters: reported for context, not judged.

Counters go out as deltas over the interval (the counts behind any rate), with the
per-second rates derived from them.
"""

from __future__ import annotations

import os
import time

import psutil

from agent.checks.base import Check, Sink, describe, now

_COUNTERS = (
    "bytes_sent",
    "bytes_recv",
    "packets_sent",
    "packets_recv",
    "errin",
    "errout",
    "dropin",
    "dropout",
)


class SystemCheck(Check):
    name = "system"

    def __init__(self, *, interval: float, timeout: float) -> None:
        super().__init__(interval=interval, timeout=timeout)
        self._cores = psutil.cpu_count() or 1
        self._last: tuple[float, dict[str, int]] | None = None

    async def collect(self, sink: Sink) -> None:
        started = now()
        try:
            load1, load5, load15 = os.getloadavg()
            counters = psutil.net_io_counters(pernic=False)
        except OSError as exc:
            sink.emit(self.failure(started, f"reading load and network counters: {describe(exc)}"))
            return
        values: dict[str, float] = {
            "load1": load1,
            "load5": load5,
            "load15": load15,
            "load1_per_core": load1 / self._cores,
        }
        if counters is not None:
            current = {name: int(getattr(counters, name)) for name in _COUNTERS}
            at = time.monotonic()
            if self._last is not None:
                last_at, last = self._last
                elapsed = max(at - last_at, 1e-6)
                for name, value in current.items():
                    # A counter that went down was reset (interface re-created): count anew.
                    delta = value - last[name] if value >= last[name] else value
                    values[name] = delta
                values["bytes_sent_per_s"] = values["bytes_sent"] / elapsed
                values["bytes_recv_per_s"] = values["bytes_recv"] / elapsed
            self._last = (at, current)
        sink.emit(self.sample(started, values))
