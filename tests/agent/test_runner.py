"""The runner: intervals with jitter, timeouts, a hung check that delays nobody."""

from __future__ import annotations

import asyncio
import random

from agent.checks.base import Check, Sink
from agent.runner import Runner, _Schedule
from tests.agent.conftest import RecordingSink


class Quick(Check):
    name = "quick"

    async def collect(self, sink: Sink) -> None:
        sink.emit(self.sample(0.0, {"n": 1}))


class Hung(Check):
    """Never returns (until cancelled)."""

    name = "hung"

    async def collect(self, sink: Sink) -> None:
        await asyncio.Event().wait()


class Crashing(Check):
    name = "crashing"

    async def collect(self, sink: Sink) -> None:
        raise RuntimeError("bug in a check")


async def run_for(runner: Runner, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 3)


async def test_a_hung_check_never_delays_another(sink: RecordingSink) -> None:
    # The hung check's first run is still in flight for the whole test (its timeout is
    # far away); had it blocked the runner, the quick check would have run once at most.
    quick = Quick(interval=0.1, timeout=0.1)
    hung = Hung(interval=30.0, timeout=20.0)
    await run_for(Runner([hung, quick], sink, jitter=0.0), 1.0)
    assert len([s for s in sink.samples if s.check == "quick"]) >= 3
    assert [s for s in sink.samples if s.check == "hung"] == []


async def test_a_hung_run_ends_as_a_timed_out_sample(sink: RecordingSink) -> None:
    hung = Hung(interval=0.5, timeout=0.2)
    await run_for(Runner([hung], sink, jitter=0.0), 0.9)
    hung_runs = [s for s in sink.samples if s.check == "hung"]
    assert len(hung_runs) >= 1
    assert all(s.ok is False and s.error == "timed out after 0.2s" for s in hung_runs)


async def test_a_crashing_check_becomes_its_own_failed_sample(sink: RecordingSink) -> None:
    await run_for(Runner([Crashing(interval=10, timeout=1)], sink, jitter=0.0), 0.1)
    assert [(s.check, s.ok, s.error) for s in sink.samples] == [
        ("crashing", False, "check crashed: RuntimeError: bug in a check")
    ]


async def test_timeout_is_capped_at_the_interval() -> None:
    assert Quick(interval=0.5, timeout=5).timeout == 0.5


def test_jittered_slots_stay_on_the_grid_and_skip_missed_ones() -> None:
    rng = random.Random(7)
    schedule = _Schedule(Quick(interval=10, timeout=1), start=100.0, jitter=0.1, rng=rng)
    dues = [schedule.due]
    for _ in range(5):
        schedule.advance(schedule.due)
        dues.append(schedule.due)
    for k, due in enumerate(dues):
        assert 100 + 10 * k <= due <= 100 + 10 * k + 1.0
    assert len({round(d - 100 - 10 * k, 6) for k, d in enumerate(dues)}) > 1  # jittered
    schedule.advance(1000.0)  # the process was stopped for a long time
    assert 1000.0 < schedule.due <= 1011.0
