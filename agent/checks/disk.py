"""Disk usage per configured mount; ``percent`` is the fullest mount.

``statvfs`` can block forever on a dead network mount, so each mount is measured in
a worker thread: a hung mount times out alone, and while its call is still stuck the
next runs report it as blocked instead of piling up more threads behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psutil

from agent.checks.base import Check, Sink, describe, now


class DiskCheck(Check):
    name = "disk"

    def __init__(self, *, interval: float, timeout: float, mounts: Sequence[str]) -> None:
        super().__init__(interval=interval, timeout=timeout)
        self.mounts = list(mounts)
        self._stuck: dict[str, asyncio.Future[tuple[float, int, int]]] = {}

    async def collect(self, sink: Sink) -> None:
        started = now()
        results = await asyncio.gather(*(self._usage(mount) for mount in self.mounts))
        values: dict[str, float] = {}
        errors: list[str] = []
        worst: float | None = None
        for mount, result in zip(self.mounts, results, strict=True):
            if isinstance(result, str):
                errors.append(f"{mount}: {result}")
                continue
            percent, free, total = result
            values[f"percent:{mount}"] = percent
            values[f"free_bytes:{mount}"] = free
            values[f"total_bytes:{mount}"] = total
            worst = percent if worst is None else max(worst, percent)
        if worst is not None:
            values["percent"] = worst
        sink.emit(self.sample(started, values, error="; ".join(errors) if errors else None))

    async def _usage(self, mount: str) -> tuple[float, int, int] | str:
        stuck = self._stuck.get(mount)
        if stuck is not None:
            if not stuck.done():
                return "statvfs is still blocked since an earlier run"
            del self._stuck[mount]
        future = asyncio.ensure_future(asyncio.to_thread(_measure, mount))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.inner_timeout)
        except TimeoutError:
            self._stuck[mount] = future
            future.add_done_callback(_consume)
            return f"statvfs timed out after {self.inner_timeout:g}s"
        except OSError as exc:
            return describe(exc)


def _measure(mount: str) -> tuple[float, int, int]:
    usage = psutil.disk_usage(mount)
    return float(usage.percent), int(usage.free), int(usage.total)


def _consume(future: asyncio.Future[tuple[float, int, int]]) -> None:
    # The late result of a call we gave up on: retrieve it so asyncio does not warn.
    if not future.cancelled():
        future.exception()
