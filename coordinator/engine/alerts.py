"""The fleet monitor: the guide's alert thresholds on every host, deployment or not.

Each (host, rule) pair is a small hysteresis machine: it fires after ``fire_after``
consecutive breaching evaluations and resolves after ``resolve_after`` consecutive clear
ones; an evaluation that is neither (a gauge between the threshold and the threshold
minus the hysteresis band, a rate whose bounds straddle the threshold) resets both
streaks. One notification per state change, so a flapping metric cannot flood anyone.

Rates are pooled over the host's last ``rate_window`` seconds of samples and judged
with the same confidence bounds as a deployment: a breach needs the lower bound over
the threshold, clearing needs the estimate at or under it. The window slides on the
engine's clock: a sample counts from its arrival for ``rate_window`` seconds, and one
timed before the window (a backlog replayed late, a clock far behind) is not counted,
so no host's clock, ahead or behind, can keep a sample in the window. A rate alert
whose window has emptied (the host sent no requests for ``rate_window``) resolves at
the next tick: nothing supports it any more. Offline (by the agent's
Will) fires at once, since the Will is already a definite fact; silence fires when a
check the host reports has not arrived for ``silent_intervals`` of its interval.
Checks on a blue-green inactive slot (suffixed ``_blue``/``_green``) serve no traffic
and raise no fleet alert; the deployment judges them. The cache hit rate is judged only
where its environment sets a threshold (``cache_hit_rate``), as a gauge read upside
down: a breach under the threshold, clear at or over it plus the hysteresis band.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec
from msgspec import Struct

from coordinator.engine.actions import EngineAction, Notify, Record
from coordinator.engine.stats import rate_verdict, wilson
from coordinator.engine.windows import (
    GAUGE_CHECKS,
    CheckWindow,
    Tally,
    base_check,
    gauge_value,
    tally_sample,
)
from shared.config.coordinator import AlertPolicy, CoordinatorConfig
from shared.evidence import AlertChange, Verdict, encode_evidence
from shared.kinds import EventKind
from shared.messages import Sample


class FiringAlert(Struct, kw_only=True):
    """An alert that is firing; part of the engine snapshot so a restart does not fire
    it again."""

    host: str
    rule: str
    since: float
    message: str


@dataclass(slots=True)
class _Streaks:
    breach: int = 0
    clear: int = 0


@dataclass(frozen=True, slots=True)
class _At:
    """Where and when an alert is judged."""

    host: str
    environment: str | None
    now: float


@dataclass
class _HostState:
    streaks: dict[str, _Streaks] = field(default_factory=dict)
    # Each sample's counts, by the engine time it arrived (so in order).
    recent: deque[tuple[float, Tally]] = field(default_factory=deque)
    # The sums of ``recent``, kept as samples enter and leave the window.
    total: Tally = field(default_factory=Tally)
    # Engine time of the last sample with requests (or of the first sample at all).
    last_requests: float = 0.0

    def slide(self, now: float, window: float) -> None:
        """Take out what arrived more than ``window`` seconds before ``now``."""
        recent = self.recent
        while recent and recent[0][0] < now - window:
            self.total.add_counts(recent.popleft()[1], -1)


BREACH, CLEAR, NEUTRAL = "breach", "clear", "neutral"


def _streak(verdict: Verdict) -> str:
    """A rate's verdict as an alert counts it: only a definite breach or a clear
    estimate moves a streak."""
    if verdict is Verdict.FAIL:
        return BREACH
    return CLEAR if verdict is Verdict.PASS else NEUTRAL


CACHE_RULE = "cache_hit_rate"


def cache_thresholds(config: CoordinatorConfig) -> dict[str, float]:
    """Each environment's cache hit-rate threshold, where it sets one."""
    envs = config.environments
    policies = {
        "development": envs.development,
        "staging": envs.staging,
        "production": envs.production,
    }
    return {
        name: policy.cache_hit_rate
        for name, policy in policies.items()
        if policy.cache_hit_rate is not None
    }


class Alerts:
    def __init__(
        self,
        policy: AlertPolicy,
        firing: Iterable[FiringAlert] = (),
        *,
        cache_hit_rate: Mapping[str, float] | None = None,
    ) -> None:
        self.policy = policy
        # By environment; an environment without one does not judge the rate.
        self.cache_hit_rate = dict(cache_hit_rate or {})
        self._hosts: dict[str, _HostState] = {}
        self.firing: dict[tuple[str, str], FiringAlert] = {(a.host, a.rule): a for a in firing}

    def firing_on(self, host: str) -> list[FiringAlert]:
        return [a for (h, _), a in sorted(self.firing.items()) if h == host]

    def snapshot(self) -> list[FiringAlert]:
        return [
            FiringAlert(host=a.host, rule=a.rule, since=a.since, message=a.message)
            for _, a in sorted(self.firing.items())
        ]

    def observe(
        self, host: str, environment: str | None, sample: Sample, now: float
    ) -> list[EngineAction]:
        """Judge one sample; return the alerts it fires or resolves."""
        if not self.policy.enabled or base_check(sample.check) != sample.check:
            return []
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _HostState(last_requests=now)
        at = _At(host, environment, now)
        out: list[EngineAction] = []
        policy = self.policy
        if sample.check in GAUGE_CHECKS:
            value = gauge_value(sample)
            limit = {
                "cpu": policy.cpu_percent,
                "memory": policy.memory_percent,
                "disk": policy.disk_percent,
            }[sample.check]
            if value is not None:
                if value > limit:
                    verdict = BREACH
                elif value <= limit - policy.hysteresis_percent:
                    verdict = CLEAR
                else:
                    verdict = NEUTRAL
                reading = value
                out += self._judge(
                    at,
                    state,
                    sample.check,
                    verdict,
                    lambda: (
                        f"{sample.check} at {reading:g} % (threshold {limit:g} %)",
                        AlertChange(rule=sample.check, value=reading, threshold=limit),
                    ),
                )
        out += self._judge(
            at,
            state,
            f"health:{sample.check}",
            CLEAR if sample.ok else BREACH,
            lambda: (
                f"{sample.check} check passing"
                if sample.ok
                else f"{sample.check} check failing: {sample.error or 'no detail'}",
                AlertChange(rule=f"health:{sample.check}", ok=sample.ok, error=sample.error),
            ),
        )
        if sample.check == "cache" and sample.ok:
            out += self._cache(at, state, sample)
        values = sample.values
        if (
            "requests" in values
            or "traffic_requests" in values
            or sample.latencies_ms
            or sample.histogram is not None
        ):
            out += self._rates(at, state, sample)
        return out

    def _rates(self, at: _At, state: _HostState, sample: Sample) -> list[EngineAction]:
        policy = self.policy
        state.slide(at.now, policy.rate_window)
        if sample.time >= at.now - policy.rate_window:
            tally = tally_sample(sample, policy.latency_ms, sketch=False)
            state.recent.append((at.now, tally))
            state.total.add_counts(tally)
            state.last_requests = at.now
        total = state.total
        out: list[EngineAction] = []
        if total.requests:
            errors, requests = total.errors, total.requests
            verdict = rate_verdict(
                errors, requests, policy.error_rate, policy.confidence, pass_at_estimate=True
            )
            # Most samples clear by their estimate, and then no bound is computed.
            lower = (
                None
                if verdict is Verdict.PASS
                else wilson(errors, requests, policy.confidence).lower
            )

            def describe_errors() -> tuple[str, AlertChange]:
                return (
                    f"error rate {errors}/{requests} = {errors / requests:.2%} over "
                    f"{policy.rate_window:g} s (threshold {policy.error_rate:.2%})",
                    AlertChange(
                        rule="error_rate",
                        errors=errors,
                        requests=requests,
                        lower=lower,
                        threshold=policy.error_rate,
                    ),
                )

            out += self._judge(at, state, "error_rate", _streak(verdict), describe_errors)
        if total.latency_n:
            share = 1.0 - policy.latency_quantile
            slow, count = total.slow_definite, total.latency_n
            verdict = rate_verdict(
                slow,
                count,
                share,
                policy.confidence,
                pass_events=total.slow_possible,
                pass_at_estimate=True,
            )
            slow_lower = (
                None if verdict is Verdict.PASS else wilson(slow, count, policy.confidence).lower
            )

            def describe_latency() -> tuple[str, AlertChange]:
                return (
                    f"{slow}/{count} requests over {policy.latency_ms:g} ms in "
                    f"{policy.rate_window:g} s (p{policy.latency_quantile * 100:g} threshold)",
                    AlertChange(
                        rule="latency",
                        slow=slow,
                        requests=count,
                        lower=slow_lower,
                        share=share,
                        latency_ms=policy.latency_ms,
                    ),
                )

            out += self._judge(at, state, "latency", _streak(verdict), describe_latency)
        return out

    def _cache(self, at: _At, state: _HostState, sample: Sample) -> list[EngineAction]:
        threshold = self.cache_hit_rate.get(at.environment or "")
        if threshold is None:
            if (at.host, CACHE_RULE) in self.firing:
                # Restored from a snapshot taken under a config that judged it.
                state.streaks.pop(CACHE_RULE, None)
                return self._set(
                    at,
                    CACHE_RULE,
                    fire=False,
                    message="no cache hit-rate threshold configured",
                    evidence=AlertChange(rule=CACHE_RULE),
                )
            return []
        rate = sample.values.get("hit_rate")
        if rate is None or not 0.0 <= rate <= 1.0:
            return []  # no lookups this interval: nothing to judge
        if rate < threshold:
            verdict = BREACH
        # (The epsilon: 0.8 + 0.05 is 0.8500000000000001, and 85 % must clear it.)
        elif rate >= min(1.0, threshold + self.policy.hysteresis_percent / 100.0) - 1e-12:
            verdict = CLEAR
        else:
            verdict = NEUTRAL
        hits, misses = sample.values.get("hits"), sample.values.get("misses")

        def describe() -> tuple[str, AlertChange]:
            return (
                f"cache hit rate {rate:.1%} (threshold {threshold:.1%})",
                AlertChange(
                    rule=CACHE_RULE,
                    value=rate,
                    threshold=threshold,
                    hits=None if hits is None else int(hits),
                    misses=None if misses is None else int(misses),
                ),
            )

        return self._judge(at, state, CACHE_RULE, verdict, describe)

    def status(
        self, host: str, environment: str | None, online: bool, now: float
    ) -> list[EngineAction]:
        """The agent's Will (or a graceful offline) fires at once; coming back resolves."""
        if not self.policy.enabled:
            return []
        message = "host offline (agent's Will or shutdown)" if not online else "host online"
        at = _At(host, environment, now)
        return self._set(
            at,
            "offline",
            fire=not online,
            message=message,
            evidence=AlertChange(rule="offline", online=online),
        )

    def tick(
        self,
        hosts: Iterable[tuple[str, str | None, bool]],
        checks: Callable[[str], dict[str, CheckWindow]],
        interval: Callable[[str], float],
        since: float,
        now: float,
        *,
        listening: bool = True,
    ) -> list[EngineAction]:
        """Silence: an online host whose check has not arrived for N intervals; and rate
        alerts whose window has slid empty resolve. Not ``listening`` (the coordinator
        is disconnected from the broker), silence is nobody's: it neither fires nor
        resolves, and no rate alert resolves for want of requests."""
        if not self.policy.enabled:
            return []
        out: list[EngineAction] = []
        for host, environment, online in hosts:
            if not listening:
                continue
            out += self._slide(_At(host, environment, now))
            silent = []
            if online:
                for name, window in sorted(checks(host).items()):
                    if window.last_seen is None:
                        continue
                    allowance = self.policy.silent_intervals * interval(name)
                    if now - max(window.last_seen, since) > allowance:
                        silent.append(name)
            out += self._set(
                _At(host, environment, now),
                "silent",
                fire=bool(silent),
                message=(
                    f"no {', '.join(silent)} samples for {self.policy.silent_intervals} intervals"
                    if silent
                    else "reporting again"
                ),
                evidence=AlertChange(rule="silent", checks=silent),
            )
        return out

    def _slide(self, at: _At) -> list[EngineAction]:
        state = self._hosts.get(at.host)
        if state is None:
            if (at.host, "error_rate") in self.firing or (at.host, "latency") in self.firing:
                # A rate alert restored from a snapshot: its window starts now, so it
                # resolves if the host sends no requests for a whole window.
                self._hosts[at.host] = _HostState(last_requests=at.now)
            return []
        window = self.policy.rate_window
        state.slide(at.now, window)
        if at.now - state.last_requests <= window:
            return []
        out: list[EngineAction] = []
        for rule, empty in (
            ("error_rate", not state.total.requests),
            ("latency", not state.total.latency_n),
        ):
            if empty and (at.host, rule) in self.firing:
                state.streaks.pop(rule, None)
                out += self._set(
                    at,
                    rule,
                    fire=False,
                    message=f"no requests in the last {window:g} s",
                    evidence=AlertChange(rule=rule),
                )
        return out

    def _judge(
        self,
        at: _At,
        state: _HostState,
        rule: str,
        verdict: str,
        describe: Callable[[], tuple[str, AlertChange]],
    ) -> list[EngineAction]:
        """Count one evaluation; ``describe`` builds the message and evidence, only when
        the alert changes state."""
        streaks = state.streaks.get(rule)
        if streaks is None:
            streaks = state.streaks[rule] = _Streaks()
        if verdict == BREACH:
            streaks.breach += 1
            streaks.clear = 0
        elif verdict == CLEAR:
            streaks.clear += 1
            streaks.breach = 0
        else:
            streaks.breach = streaks.clear = 0
        firing = (at.host, rule) in self.firing
        if firing:
            change = streaks.clear >= self.policy.resolve_after
        else:
            change = streaks.breach >= self.policy.fire_after
        if not change:
            return []
        message, evidence = describe()
        evidence = msgspec.structs.replace(
            evidence, breach_streak=streaks.breach, clear_streak=streaks.clear
        )
        return self._set(at, rule, fire=not firing, message=message, evidence=evidence)

    def _set(
        self,
        at: _At,
        rule: str,
        *,
        fire: bool,
        message: str,
        evidence: AlertChange,
    ) -> list[EngineAction]:
        host, environment, now = at.host, at.environment, at.now
        key = (host, rule)
        if fire == (key in self.firing):
            return []
        if fire:
            self.firing[key] = FiringAlert(host=host, rule=rule, since=now, message=message)
            kind, severity, text = (
                EventKind.ALERT_FIRED,
                "warning",
                f"{host}: {rule} alert: {message}",
            )
        else:
            since = self.firing.pop(key).since
            evidence = msgspec.structs.replace(evidence, fired_at=since, duration=now - since)
            kind, severity, text = (
                EventKind.ALERT_RESOLVED,
                "info",
                f"{host}: {rule} resolved: {message}",
            )
        fields = encode_evidence(evidence)
        return [
            Record(time=now, kind=kind, message=text, host=host, evidence=fields),
            Notify(
                time=now,
                kind=kind,
                severity="warning" if severity == "warning" else "info",
                message=text,
                environment=environment,
                host=host,
                evidence=fields,
            ),
        ]
