"""Low probe volume, the case that breaks naive rules: 5 requests per 10 s on each of two
canary hosts, a 1 h bake, production's 1 % threshold.

Measured in the issue on other rules: "3 consecutive breaching samples" let a 1.5 %
error rate through 79 % of the time, a plain windowed rate rolled back 28 % of good
canaries at 0.2 %. The engine's rule (pooled counts, 99.9 % Wilson bounds with the
small-count correction, judged after every batch like the engine's hot path) must roll
back at most 1 % of good canaries and every bad one.

1,000 seeded bakes run through the rule exactly as the engine evaluates it; a smaller
number run through the whole engine and simulated fleet to show it behaves the same.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from coordinator.engine.fleet import HostRecord
from coordinator.engine.judge import quick_failures
from coordinator.engine.rules import CohortView, Verdict, error_rate
from coordinator.engine.windows import CheckWindow, Tally

from .sim import Profile, Sim, make_config

BAKE = 3600.0
INTERVAL = 10.0
REQUESTS = 5
HOSTS = ("canary-a", "canary-b")
POLICY = make_config().environments.production


@dataclass
class Bake:
    rolled_back: bool
    at: float | None
    verdict_at_end: Verdict | None


def _binomial(rng: random.Random, n: int, p: float) -> int:
    # One uniform per batch, by inverse CDF: the sums below are 1,000 hours of probes.
    u, k, prob = rng.random(), 0, (1 - p) ** n
    cumulative = prob
    while u > cumulative and k < n:
        prob *= (n - k) / (k + 1) * p / (1 - p)
        k += 1
        cumulative += prob
    return k


def bake(p: float, seed: int) -> Bake:
    """One bake, judged after every batch like Driver.samples_arrived does."""
    rng = random.Random(seed)
    pooled = Tally()
    no_checks: dict[str, CheckWindow] = {}
    view = CohortView(
        name="canary",
        hosts=list(HOSTS),
        window_start=0.0,
        checks=lambda host: no_checks,
        pooled={"application": pooled},
        records=lambda host: HostRecord(
            host=host, environment="production", online=True, session=1
        ),
    )
    offsets = {HOSTS[0]: 2.0, HOSTS[1]: 7.0}
    t = 0.0
    while t < BAKE:
        for host in HOSTS:
            now = t + offsets[host]
            if now > BAKE:
                continue
            pooled.requests += REQUESTS
            pooled.errors += _binomial(rng, REQUESTS, p)
            if quick_failures(POLICY, view, host, now):
                return Bake(True, now, None)
        t += INTERVAL
    return Bake(False, None, error_rate(POLICY, view, BAKE).verdict)


def bakes(p: float, count: int, first_seed: int) -> list[Bake]:
    return [bake(p, first_seed + i) for i in range(count)]


def test_good_canaries_at_0_2_percent_are_rolled_back_at_most_1_percent_of_the_time() -> None:
    results = bakes(0.002, 1000, first_seed=10_000)
    false_rollbacks = sum(b.rolled_back for b in results)
    assert false_rollbacks <= 10, f"{false_rollbacks / 10:.1f} % of good canaries rolled back"
    # Not just "not rolled back": nearly all are proven good by the end of the hour.
    passed = sum(b.verdict_at_end is Verdict.PASS for b in results)
    assert passed >= 950


def test_bad_canaries_at_3_percent_are_rolled_back_in_every_bake_within_minutes() -> None:
    results = bakes(0.03, 1000, first_seed=20_000)
    assert all(b.rolled_back for b in results)
    times = [b.at for b in results if b.at is not None]
    median = statistics.median(times)
    assert median <= 300, f"median detection {median:.0f} s"
    assert max(times) < BAKE  # every one within the bake


def test_a_1_5_percent_canary_is_never_promoted() -> None:
    # The rule may not prove 1.5 % is over 1 % within the hour, but it never proves it is
    # under: the bake ends inconclusive (extended, then held), never passed.
    results = bakes(0.015, 200, first_seed=30_000)
    assert not any(b.verdict_at_end is Verdict.PASS for b in results)


def _engine_bake(p: float, seed: int) -> tuple[str, float | None]:
    config = make_config("[environments.production.canary]\ninitial_percent = 50\nsteps = [100]\n")
    sim = Sim(hosts=4, config=config, seed=seed, profiles={"2.0.0": Profile(error_rate=p)})
    sim.run_until(60.0)
    assert sim.start("d1", "2.0.0").accepted
    sim.run_until(62.0 + BAKE + 1, stop=lambda: sim.phase("d1") in ("rolling_back", "rolled_back"))
    fails = sim.records("deployment.fail")
    if fails:
        return "rolled_back", fails[0].time - 62.0
    return sim.phase("d1"), None


def test_the_whole_engine_agrees_on_seeded_bakes() -> None:
    good = [_engine_bake(0.002, seed) for seed in range(25)]
    assert [outcome for outcome, _ in good].count("rolled_back") == 0
    assert all(outcome in ("deploying", "baking") for outcome, _ in good)  # promoted
    bad = [_engine_bake(0.03, 100 + seed) for seed in range(25)]
    assert all(outcome == "rolled_back" for outcome, _ in bad)
    median = statistics.median(t for _, t in bad if t is not None)
    assert median <= 300
