"""Properties over random event sequences (hypothesis): random fleets, versions, faults
and operator requests, checked live by an oracle that recomputes from the samples the
engine actually received (the simulator's ground truth, not the engine's state):

* nothing is promoted (a bake passed, an operator's promote or approve) while a judged
  host's required data is missing, or after a rule failed in the current window;
* every finished rollback leaves every host on the stable version (and blue-green on
  its old slot);
* every phase change is an entry of the transition table; command ids are unique.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.engine import EngineAction, Record, SendCommand
from coordinator.engine.phases import PREVIOUS, TRANSITIONS, Phase, Trigger
from coordinator.engine.stats import wilson
from shared.messages import Sample

from .sim import Profile, Sim, compressed_config

START = 60.0
HORIZON = 4000.0
STABLE, NEW = "1.0.0", "2.0.0"
STRATEGIES = {"production": "canary", "staging": "blue-green", "development": "direct"}
PROMOTIONS = {"deployment.bake_passed", "deployment.promote", "deployment.approve"}


@dataclass(frozen=True)
class Fault:
    time: float
    kind: str
    host: int


faults = st.builds(
    Fault,
    time=st.floats(min_value=START, max_value=HORIZON - 500, allow_nan=False).map(
        lambda t: round(t, 1)
    ),
    kind=st.sampled_from(
        [
            "kill",
            "revive",
            "incident",
            "recover",
            "break",
            "fix",
            "cpu",
            "pause",
            "resume",
            "promote",
            "approve",
            "rollback",
            "fail_deploys",
        ]
    ),
    host=st.integers(min_value=0, max_value=7),
)
profiles = st.builds(
    Profile,
    error_rate=st.sampled_from([0.0, 0.002, 0.03, 0.3]),
    latency_median_ms=st.sampled_from([100.0, 900.0]),
    cpu=st.sampled_from([30.0, 79.0, 95.0]),
    database_fail=st.sampled_from([0.0, 0.0, 0.5, 1.0]),
)


class Oracle:
    """Checks the engine's decisions against the samples it received."""

    def __init__(self, sim: Sim, environment: str) -> None:
        self.sim = sim
        self.policy = sim.config.environments.get(environment)
        self.blue_green = environment == "staging"
        self.problems: list[str] = []
        self.promotions = 0
        self.rollbacks = 0

    def __call__(self, now: float, action: EngineAction) -> None:
        if not isinstance(action, Record):
            return
        if action.kind in PROMOTIONS:
            self.promotions += 1
            self._promotion(now, action)
        if action.kind == "deployment.rollback_done":
            self.rollbacks += 1
            self._rolled_back(now)
        if "trigger" in action.evidence:
            self._transition(action)

    def _transition(self, record: Record) -> None:
        source, trigger = Phase(record.evidence["from"]), Trigger(record.evidence["trigger"])
        target = TRANSITIONS.get((source, trigger))
        if target is None:
            self.problems.append(f"{record.kind}: {source} --{trigger}--> not in the table")
        elif target != PREVIOUS and target.value != record.evidence["to"]:
            self.problems.append(f"{record.kind}: went to {record.evidence['to']}, not {target}")

    def _rolled_back(self, now: float) -> None:
        # A host away is rolled back when it returns (test_unreachable.py); the rest now.
        for host in self.sim.hosts.values():
            if not host.alive:
                continue
            if host.version != STABLE or (self.blue_green and host.slot != "blue"):
                self.problems.append(
                    f"{now}: rolled back but {host.name} runs {host.version} on {host.slot}"
                )

    def _promotion(self, now: float, record: Record) -> None:
        rules = {r["rule"]: r for r in record.evidence.get("rules", [])}
        if "error_rate" not in rules:
            self.problems.append(f"{now}: {record.kind} without evidence")
            return
        start = rules["error_rate"]["window_start"]
        judged = sorted(rules["error_rate"]["hosts"])
        inactive = self._judging_inactive_slot()
        # A host the deployment could not reach is listed, not judged.
        dep = self.sim.engine.deployment("d1")
        away = set(dep.unreachable) if dep is not None else set()
        truth = sorted(
            h.name
            for h in self.sim.hosts.values()
            if (h.slots.get("green") == NEW if inactive else h.version == NEW)
            and h.name not in away
        )
        if judged != truth:
            self.problems.append(f"{now}: judged {judged} but {truth} run the new version")
        app = "application_green" if inactive else "application"
        seen: dict[str, list[tuple[float, Sample]]] = defaultdict(list)
        for time, host, sample in self.sim.sample_log:
            if time >= start and host in truth:
                seen[host].append((time, sample))
        for host in truth:
            self._host(now, host, app, inactive, seen[host])
        self._rates(now, app, start, truth)

    def _judging_inactive_slot(self) -> bool:
        # Blue-green judges the inactive slot until the switch commands went out.
        return self.blue_green and not any(c.action == "switch" for c in self.sim.sent)

    def _host(
        self, now: float, host: str, app: str, inactive: bool, samples: list[tuple[float, Sample]]
    ) -> None:
        if not self.sim.hosts[host].alive:
            self.problems.append(f"{now}: promoted while {host} is offline")
        arrivals = [t for t, s in samples if s.check == app]
        if not arrivals:
            self.problems.append(f"{now}: promoted without a {app} sample from {host}")
        elif now - arrivals[-1] >= self.policy.silent_intervals * 10.0:
            self.problems.append(f"{now}: promoted while {host} was silent since {arrivals[-1]}")
        limits = {"cpu": self.policy.cpu_percent, "memory": self.policy.memory_percent}
        over: dict[str, int] = defaultdict(int)
        failed: dict[str, int] = defaultdict(int)
        for _, sample in samples:
            if sample.check in limits:
                value = sample.values["percent"]
                over[sample.check] = over[sample.check] + 1 if value > limits[sample.check] else 0
                if over[sample.check] >= self.policy.gauge_consecutive:
                    self.problems.append(f"{now}: promoted after {host} {sample.check} breach")
            slot_check = sample.check.endswith("_green") or sample.check.endswith("_blue")
            if slot_check != inactive and sample.check not in limits:
                continue
            failed[sample.check] = 0 if sample.ok else failed[sample.check] + 1
            if failed[sample.check] >= self.policy.health_consecutive_failures:
                self.problems.append(f"{now}: promoted after {host} {sample.check} failures")

    def _rates(self, now: float, app: str, start: float, hosts: list[str]) -> None:
        requests = errors = count = slow = 0
        share = 1.0 - self.policy.latency_quantile
        for time, host, sample in self.sim.sample_log:
            if time < start or host not in hosts or sample.check != app:
                continue
            requests += int(sample.values.get("requests", 0))
            errors += int(sample.values.get("errors", 0))
            count += len(sample.latencies_ms)
            slow += sum(1 for v in sample.latencies_ms if v > self.policy.latency_ms)
            threshold = self.policy.error_rate
            if (
                threshold is not None
                and wilson(errors, requests, self.policy.confidence).lower > threshold
            ):
                self.problems.append(f"{now}: promoted after the error rate failed at {time}")
                return
            if count and wilson(slow, count, self.policy.confidence).lower > share:
                self.problems.append(f"{now}: promoted after latency failed at {time}")
                return


def apply(sim: Sim, fault: Fault, new: Profile) -> Callable[[], None]:
    host = f"host-{fault.host % len(sim.hosts):02d}"

    def run() -> None:
        kind = fault.kind
        if kind == "kill" and sim.hosts[host].alive:
            sim.kill(host)
        elif kind == "revive" and not sim.hosts[host].alive:
            sim.revive(host)
        elif kind == "incident":
            for version in (STABLE, NEW):
                sim.profiles[version] = Profile(error_rate=0.2, database_fail=1.0)
        elif kind == "recover":
            sim.profiles[STABLE], sim.profiles[NEW] = Profile(), new
        elif kind == "break":
            sim.profiles[NEW] = Profile(error_rate=0.3, database_fail=1.0, cpu=95.0)
        elif kind == "fix":
            sim.profiles[NEW] = Profile()
        elif kind == "cpu":
            sim.profiles[NEW] = Profile(cpu=96.0)
        elif kind == "fail_deploys":
            sim.fail_deploys.add(host)
        elif kind in ("pause", "resume", "promote", "approve", "rollback"):
            sim.operator(kind, "d1", reason="hypothesis")

    return run


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    environment=st.sampled_from(sorted(STRATEGIES)),
    hosts=st.integers(min_value=2, max_value=8),
    new=profiles,
    approval=st.booleans(),
    events=st.lists(faults, max_size=8),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_no_promotion_on_missing_data_or_a_failed_rule_and_rollbacks_restore_stable(
    environment: str,
    hosts: int,
    new: Profile,
    approval: bool,
    events: list[Fault],
    seed: int,
) -> None:
    config = compressed_config(approval=approval)
    sim = Sim(
        hosts=hosts,
        environment=environment,
        config=config,
        seed=seed,
        profiles={NEW: new},
        blue_green=environment == "staging",
    )
    sim.log_samples = True
    oracle = Oracle(sim, environment)
    sim.observers.append(oracle)
    for fault in events:
        sim.at(fault.time, apply(sim, fault, new))
    sim.run_until(START)
    sim.start("d1", NEW, environment=environment)
    sim.run_until(HORIZON)

    assert oracle.problems == []
    ids = [c.command_id for c in sim.sent if isinstance(c, SendCommand)]
    assert len(ids) == len(set(ids))
    phase = sim.engine.phase("d1")
    if phase is not None:
        assert phase is not Phase.FAILED, "honest agents: a rollback never fails"
        if phase is Phase.ROLLED_BACK:
            oracle._rolled_back(sim.now)
            assert oracle.problems == []


def test_the_oracle_catches_an_engine_that_promotes_regardless(monkeypatch: Any) -> None:
    """The properties can fail: with a judge that always says pass, the oracle reports a
    promotion over a failed rule and over a dead host."""
    import coordinator.engine.cohorts as cohorts
    from coordinator.engine.judge import Outcome
    from coordinator.engine.judge import judge as real

    def blind(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        result.outcome, result.failed, result.missing = Outcome.PASS, [], {}
        return result

    monkeypatch.setattr(cohorts, "judge", blind)
    monkeypatch.setattr(cohorts, "quick_failures", lambda *args, **kwargs: [])
    # Tolerating the one dead host of four, so that the blind engine goes on promoting.
    config = compressed_config(production="unreachable_share = 0.5")
    sim = Sim(hosts=4, config=config, profiles={NEW: Profile(error_rate=0.3)})
    sim.log_samples = True
    oracle = Oracle(sim, "production")
    sim.observers.append(oracle)
    sim.run_until(START)
    sim.start("d1", NEW)
    dep = sim.engine.deployment("d1")
    assert dep is not None
    canary = dep.steps[0].orders[0].host
    sim.at(300.0, lambda: sim.kill(canary))
    sim.run_until(HORIZON)
    assert any("error rate failed" in p for p in oracle.problems)
    assert any("offline" in p or "silent" in p for p in oracle.problems)
