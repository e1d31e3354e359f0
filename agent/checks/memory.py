"""Memory and swap utilisation (psutil, /proc/meminfo)."""

from __future__ import annotations

import psutil

from agent.checks.base import Check, Sink, describe, now


class MemoryCheck(Check):
    name = "memory"

    async def collect(self, sink: Sink) -> None:
        started = now()
        try:
            memory = psutil.virtual_memory()
            swap = psutil.swap_memory()
        except OSError as exc:
            sink.emit(self.failure(started, f"reading memory: {describe(exc)}"))
            return
        sink.emit(
            self.sample(
                started,
                {
                    "percent": memory.percent,
                    "total_bytes": memory.total,
                    "available_bytes": memory.available,
                    "used_bytes": memory.used,
                    "swap_percent": swap.percent,
                },
            )
        )
