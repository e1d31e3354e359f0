"""The scenarios: what the new version (and the world) does, and what should happen.

A scenario sets the two versions' profiles and schedules faults on a simulator before
the deployment starts. ``expect`` is the right decision: ``rollback`` (the release is
bad: it should be rolled back within the first bake) or ``keep`` (it is good, or the
trouble is not its fault: a rollback is a false one, or an incident blamed on it).
Per-run noise: every run draws its fleet's normal error rate and latency, so the good
releases are not one lucky profile.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from tests.engine.sim import Profile, Sim

STABLE = "1.0.0"
NEW = "2.0.0"
Expect = Literal["rollback", "keep"]
# Scenario groups in the JSON line.
Group = Literal["good", "breach", "subtle", "incident", "host_loss"]


@dataclass(frozen=True)
class World:
    """One run's setting: the fleet's normal behaviour, and when the bake starts."""

    normal: Profile
    bake_start: float
    bake: float
    rng: random.Random


Setup = Callable[[Sim, World], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    group: Group
    expect: Expect
    setup: Setup


def normal_profile(rng: random.Random) -> Profile:
    """A fleet's normal behaviour: errors 0.1..0.5 %, median latency 80..200 ms."""
    return Profile(
        error_rate=rng.uniform(0.001, 0.005),
        latency_median_ms=rng.uniform(80.0, 200.0),
        latency_sigma=rng.uniform(0.3, 0.5),
    )


def _new(change: Callable[[Profile], Profile]) -> Setup:
    def setup(sim: Sim, world: World) -> None:
        sim.profiles[STABLE] = world.normal
        sim.profiles[NEW] = change(world.normal)

    return setup


def _same(sim: Sim, world: World) -> None:
    sim.profiles[STABLE] = world.normal
    sim.profiles[NEW] = world.normal


def _incident(change: Callable[[Profile], Profile], length: float) -> Setup:
    """Both versions degrade together for ``length`` s at a random time in the bake
    (a database or network outage): the release is not at fault."""

    def setup(sim: Sim, world: World) -> None:
        _same(sim, world)
        start = world.bake_start + world.rng.uniform(60.0, world.bake - length - 60.0)
        bad = change(world.normal)

        def begin() -> None:
            sim.profiles[STABLE] = bad
            sim.profiles[NEW] = bad

        def end() -> None:
            sim.profiles[STABLE] = world.normal
            sim.profiles[NEW] = world.normal

        sim.at(start, begin)
        sim.at(start + length, end)

    return setup


def _lose(cohort: Literal["canary", "baseline"]) -> Setup:
    """A host of ``cohort`` dies at a random time in the bake and stays down."""

    def setup(sim: Sim, world: World) -> None:
        _same(sim, world)
        when = world.bake_start + world.rng.uniform(60.0, world.bake / 2)

        def kill() -> None:
            dep = sim.engine.deployment("d1")
            assert dep is not None
            ordered = {o.host for step in dep.steps[: dep.step + 1] for o in step.orders}
            names = sorted(ordered) if cohort == "canary" else sorted(set(sim.hosts) - ordered)
            sim.kill(world.rng.choice(names))

        sim.at(when, kill)

    return setup


def _database_down(sim: Sim, world: World) -> None:
    sim.profiles[STABLE] = world.normal
    sim.profiles[NEW] = replace(world.normal, database_fail=1.0)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("good", "good", "keep", _same),
    Scenario("errors_8pct", "breach", "rollback", _new(lambda p: replace(p, error_rate=0.08))),
    Scenario(
        "latency_p95_over_1000ms",
        "breach",
        "rollback",
        _new(lambda p: replace(p, latency_median_ms=700.0, latency_sigma=0.5)),
    ),
    Scenario("cpu_over_80", "breach", "rollback", _new(lambda p: replace(p, cpu=95.0))),
    Scenario("memory_over_90", "breach", "rollback", _new(lambda p: replace(p, memory=96.0))),
    Scenario("health_database_failing", "breach", "rollback", _database_down),
    Scenario(
        "errors_doubled",
        "subtle",
        "rollback",
        _new(lambda p: replace(p, error_rate=2 * p.error_rate)),
    ),
    Scenario(
        "latency_plus_20pct",
        "subtle",
        "rollback",
        _new(lambda p: replace(p, latency_median_ms=1.2 * p.latency_median_ms)),
    ),
    Scenario(
        "incident_errors_8pct_10min",
        "incident",
        "keep",
        _incident(lambda p: replace(p, error_rate=0.08), 600.0),
    ),
    Scenario(
        "incident_latency_x4_10min",
        "incident",
        "keep",
        _incident(lambda p: replace(p, latency_median_ms=4 * p.latency_median_ms), 600.0),
    ),
    Scenario("canary_host_lost", "host_loss", "rollback", _lose("canary")),
    Scenario("baseline_host_lost", "host_loss", "keep", _lose("baseline")),
)
BY_NAME = {s.name: s for s in SCENARIOS}
