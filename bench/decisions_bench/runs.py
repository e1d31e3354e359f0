"""One seeded run of a scenario through the real engine, and many in worker processes."""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from coordinator.engine import EngineAction, Record
from decisions_bench.scenarios import BY_NAME, NEW, World, normal_profile
from shared.kinds import EventKind
from tests.engine.sim import Sim, make_config

HOSTS = 10
# Real traffic per host, requests per second (0: the agents' probes only).
TRAFFIC = 20.0
# Virtual time before the deployment starts (the hosts have reported by then).
WARMUP = 60.0
# The first bake starts once the canary's deploy is confirmed (the simulator answers a
# command in 2 s): judged from then.
SETTLE = 30.0
# Tries to start past the host gate before a run gives up.
_START_ATTEMPTS = 10
# A run ends at the first of these: rolled back, or the first bake passed.
_DECIDED = frozenset({EventKind.DEPLOYMENT_FAIL, EventKind.DEPLOYMENT_BAKE_PASSED})


@dataclass(frozen=True)
class Run:
    scenario: str
    seed: int
    traffic: bool
    rolled_back: bool
    # Seconds from the first bake's start to the rollback (None: not rolled back).
    decided_after: float | None
    # The first bake passed (promoted to the next step) within the run.
    promoted: bool
    held: bool


def run(scenario_name: str, seed: int, traffic: bool) -> Run:
    scenario = BY_NAME[scenario_name]
    config = make_config()
    bake = config.environments.production.canary.first_bake
    rng = random.Random(seed * 7919 + (1 if traffic else 0))
    sim = Sim(
        hosts=HOSTS,
        config=config,
        seed=seed,
        traffic=TRAFFIC if traffic else 0.0,
    )
    # The deploy command is confirmed about 2 s after the start; the bake starts then.
    world = World(normal=normal_profile(rng), bake_start=WARMUP + 2.0, bake=bake, rng=rng)
    scenario.setup(sim, world)
    sim.run_until(WARMUP)
    reply = sim.start("d1", NEW)
    # The host gate refuses a start while a host's alert fires (a few errors in the
    # first probes can fire one): as an operator would, wait for it to clear.
    for _ in range(_START_ATTEMPTS):
        if reply.accepted:
            break
        sim.run_until(sim.now + 60.0)
        reply = sim.start("d1", NEW)
    if not reply.accepted:
        raise RuntimeError(f"{scenario_name} seed {seed}: start refused: {reply.message}")
    end = sim.now + bake + SETTLE

    seen: set[EventKind] = set()

    def note(_: float, action: EngineAction) -> None:
        if isinstance(action, Record):
            seen.add(action.kind)

    sim.observers.append(note)
    sim.run_until(end, stop=lambda: bool(seen & _DECIDED))
    acked = sim.records(EventKind.DEPLOYMENT_ACKED)
    start = acked[0].time if acked else WARMUP
    fails = sim.records(EventKind.DEPLOYMENT_FAIL)
    return Run(
        scenario=scenario_name,
        seed=seed,
        traffic=traffic,
        rolled_back=bool(fails),
        decided_after=fails[0].time - start if fails else None,
        promoted=bool(sim.records(EventKind.DEPLOYMENT_BAKE_PASSED)),
        held=bool(sim.records(EventKind.DEPLOYMENT_HOLD)),
    )


def _batch(jobs: list[tuple[str, int, bool]]) -> list[Run]:
    return [run(*job) for job in jobs]


def run_all(jobs: Iterable[tuple[str, int, bool]], workers: int) -> list[Run]:
    """Every job, in ``workers`` processes (1: in this one), results in job order."""
    todo = list(jobs)
    if workers <= 1:
        return _batch(todo)
    size = max(1, len(todo) // (workers * 8))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [r for batch in pool.map(_batch, chunks) for r in batch]
