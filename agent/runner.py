"""Runs every check at its interval, with jitter, each under its timeout, concurrently.

One scheduler task wakes when the next run is due, and only then (while it waits it
is parked: alive for the watchdog without waking to say so), and starts each due run
as its own task, so a check that hangs is cut off by its timeout and never delays another. Run k
of a check is due at ``start + k * interval + U(0, jitter * interval)``: a fleet does not
measure in lockstep and the average interval stays exact. A run still going when the
next is due (a check that ignores cancellation) makes that slot a failed sample
instead of a second concurrent run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

from agent.checks.base import Check, Sink, describe, now
from agent.events import wait_event
from shared.messages import Sample

log = logging.getLogger(__name__)
# With no checks at all, the loop waits this long at a time (or until stopped).
IDLE_WAIT: Final = 3600.0


class _Counting:
    """Passes samples on and remembers whether the run produced any."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.emitted = 0

    def emit(self, sample: Sample) -> None:
        self.emitted += 1
        self.sink.emit(sample)


class _Schedule:
    def __init__(self, check: Check, start: float, jitter: float, rng: random.Random) -> None:
        self.check = check
        self.start = start
        self.jitter = jitter
        self.rng = rng
        self.k = 0
        self.due = self._due()
        self.task: asyncio.Task[None] | None = None

    def _due(self) -> float:
        interval = self.check.interval
        return self.start + self.k * interval + self.rng.uniform(0, self.jitter * interval)

    def advance(self, current: float) -> None:
        """Move to the first slot after ``current``; slots missed while the process
        was stopped are skipped, not run in a burst."""
        interval = self.check.interval
        self.k = max(self.k + 1, int((current - self.start) // interval) + 1)
        self.due = self._due()


class Runner:
    def __init__(
        self,
        checks: Sequence[Check],
        sink: Sink,
        *,
        jitter: float,
        heartbeat: Callable[[], None] = lambda: None,
        park: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self.checks = list(checks)
        self.sink = sink
        self.jitter = jitter
        self.heartbeat = heartbeat
        self.park = park
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        schedules = [_Schedule(check, start, self.jitter, self.rng) for check in self.checks]
        try:
            while not stop.is_set():
                current = time.monotonic()
                for schedule in schedules:
                    if current >= schedule.due:
                        self._start(schedule)
                        schedule.advance(current)
                self.heartbeat()
                # Sleep until the next check is due, however far: parked, the loop
                # counts as alive for the watchdog without waking to say so.
                wake = min((s.due for s in schedules), default=current + IDLE_WAIT)
                self.park()
                await wait_event(stop, max(wake - time.monotonic(), 0.0))
                self.heartbeat()
        finally:
            await self._stop_runs(schedules)

    def _start(self, schedule: _Schedule) -> None:
        check = schedule.check
        if schedule.task is not None and not schedule.task.done():
            log.warning("check %s: the previous run is still going; skipping this one", check.name)
            self.sink.emit(check.failure(now(), "previous run still running past its timeout"))
            return
        self.runs += 1
        schedule.task = asyncio.create_task(self._run_one(check), name=f"check-{check.name}")

    async def _run_one(self, check: Check) -> None:
        sink = _Counting(self.sink)
        started = now()
        try:
            async with asyncio.timeout(check.timeout):
                await check.collect(sink)
        except TimeoutError:
            log.warning("check %s timed out after %gs", check.name, check.timeout)
            if not sink.emitted:
                self.sink.emit(check.failure(started, describe(TimeoutError(), check.timeout)))
        except Exception as exc:
            # Checks report failures as samples; an exception here is a bug in a check,
            # and still only that check's sample says so.
            log.exception("check %s crashed", check.name)
            self.sink.emit(check.failure(started, f"check crashed: {describe(exc)}"))

    async def _stop_runs(self, schedules: list[_Schedule]) -> None:
        tasks = [s.task for s in schedules if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for schedule in schedules:
            try:
                await schedule.check.close()
            except Exception:
                log.exception("check %s: close failed", schedule.check.name)
