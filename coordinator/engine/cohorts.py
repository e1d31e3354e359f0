"""Who is judged as what in a deployment's current window, and their pooled counts.

A window opens for every target host when a step's bake starts (why windows reset at
step starts, and how a breach waits for a baseline without data yet: judge.py). The
canary cohort is every host ordered in the judged steps (for blue-green's health
window: their inactive-slot checks); the baseline is every target host not ordered
yet, still on the stable version. Pooled counts are kept per cohort and check as samples arrive, so
judging a cohort's rates costs the same for 10 hosts as for 10,000.
"""

from __future__ import annotations

from coordinator.engine.deployment import Deployment
from coordinator.engine.judge import Judgement, judge, quick_failures
from coordinator.engine.phases import Phase
from coordinator.engine.state import EngineState, Runtime
from coordinator.engine.windows import Tally
from shared.config.coordinator import EnvironmentPolicy

_JUDGED_PHASES = frozenset({Phase.BAKING, Phase.HELD, Phase.AWAITING_APPROVAL, Phase.VERIFYING})


class Cohorts:
    def __init__(self, state: EngineState) -> None:
        self.state = state

    def runtime(self, dep: Deployment) -> Runtime:
        runtime = self.state.runtimes.get(dep.id)
        if runtime is None:
            runtime = self.state.runtimes[dep.id] = Runtime()
            self.rebuild(dep)
        return runtime

    def judged_step(self, dep: Deployment) -> int | None:
        """The last step whose hosts are judged now, or None when nothing is judged."""
        phase = dep.paused_from if dep.phase is Phase.PAUSED else dep.phase
        if phase in _JUDGED_PHASES:
            return dep.step
        if phase is Phase.DEPLOYING and dep.step > 0:
            previous, current = dep.steps[dep.step - 1], dep.steps[dep.step]
            # Hosts already on the new version stay judged while the next ones deploy,
            # unless the step changes what is judged (blue-green's switch).
            if not previous.judge_slot and not current.judge_slot:
                return dep.step - 1
        return None

    def rebuild(self, dep: Deployment) -> None:
        """Recompute who is judged as what, and their pooled counts."""
        runtime = self.state.runtimes.setdefault(dep.id, Runtime())
        runtime.members.clear()
        runtime.slots.clear()
        runtime.pooled.clear()
        judged = self.judged_step(dep)
        if judged is None:
            runtime.wake = None
            return
        for step in dep.steps[: judged + 1]:
            for order in step.orders:
                runtime.members[order.host] = "canary"
        if dep.steps[judged].judge_slot:
            for order in dep.steps[judged].orders:
                if order.slot is not None:
                    runtime.slots[order.host] = order.slot
        ordered = dep.ordered_hosts()
        for host in dep.targets:
            if host not in ordered:
                runtime.members[host] = "baseline"
        for host in dep.unreachable:
            # Not reached by its step (or its rollback): neither judged nor compared.
            runtime.members.pop(host, None)
        for host, cohort in runtime.members.items():
            windows = self.state.windows.get(host)
            if windows is None:
                continue
            pooled = runtime.pooled.setdefault(cohort, {})
            for name, window in windows.checks.items():
                base = runtime.base_name(host, name)
                if base is not None:
                    pooled.setdefault(base, Tally()).merge(window.tally)

    def open_window(self, dep: Deployment, now: float) -> None:
        dep.window_start = now
        for host in dep.targets:
            self.state.host_windows(host).open(now)
        self.rebuild(dep)

    def ingest(self, dep: Deployment, host: str, reported: str, delta: Tally) -> None:
        runtime = self.runtime(dep)
        cohort = runtime.members.get(host)
        if cohort is None:
            return
        base = runtime.base_name(host, reported)
        if base is not None:
            runtime.pooled.setdefault(cohort, {}).setdefault(base, Tally()).merge(delta)

    def judgement(self, dep: Deployment, now: float) -> Judgement | None:
        runtime = self.runtime(dep)
        if not runtime.members:
            return None
        policy = self.state.policy(dep.environment)
        canary_view = self.state.cohort_view(dep, runtime, "canary")
        if not canary_view.hosts:
            return None
        baseline_view = self.state.cohort_view(dep, runtime, "baseline")
        silence = self.state.silence(policy)
        result = judge(
            policy, canary_view, baseline_view if baseline_view.hosts else None, silence, now
        )
        runtime.wake = self._next_change(policy, dep, runtime, result, now)
        return result

    def _next_change(
        self,
        policy: EnvironmentPolicy,
        dep: Deployment,
        runtime: Runtime,
        result: Judgement,
        now: float,
    ) -> float | None:
        """When a judged fact changes by time alone: a missing host's grace ends, a
        reporting host's required check falls silent, or the wait for the baseline's
        data ends."""
        times = [since + policy.missing_data_grace for since, _ in result.missing.values()]
        if result.decide_by is not None:
            times.append(result.decide_by)
        silence = self.state.silence(policy)
        reference = dep.window_start if dep.window_start is not None else now
        for host in runtime.cohort("canary"):
            if host in result.missing:
                continue
            checks = self.state.judged_checks(runtime, host)
            for check in policy.required_checks:
                window = checks.get(check)
                last = window.last_seen if window is not None else None
                start = max(last if last is not None else reference, silence.since)
                times.append(start + silence.intervals * silence.interval(check))
        future = [t for t in times if t > now]
        return min(future) if future else None

    def failed_on_arrival(self, dep: Deployment, host: str, now: float) -> bool:
        """Whether a canary host's new samples fail a rule: the hot path of every metric
        batch, in constant time (pooled rates, the host's own gauges and health)."""
        runtime = self.runtime(dep)
        if runtime.members.get(host) != "canary":
            return False
        policy = self.state.policy(dep.environment)
        view = self.state.cohort_view(dep, runtime, "canary")
        return bool(quick_failures(policy, view, host, now))
