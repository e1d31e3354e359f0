"""A deterministic fleet simulator driving the pure engine with a virtual clock.

Every host is a small agent model: it measures at fixed intervals (offset per host so
the fleet does not measure in lockstep), draws its samples from the profile of the
version it serves (seeded), and executes commands like the real agent: accepted, then
succeeded, then a new retained status. Faults are scheduled calls (a host dies, a
database goes down) at virtual times. Hours of rollout run in well under a second.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator.engine import (
    CancelCommand,
    CommandResultReceived,
    DeploymentChanged,
    Engine,
    EngineAction,
    EngineEvent,
    EngineSnapshot,
    HostStatusReceived,
    MetricsReceived,
    Notify,
    OperatorReply,
    OperatorRequest,
    PreflightReported,
    Record,
    RunPreflight,
    RunVerification,
    SendCommand,
    Tick,
    VerificationReported,
)
from shared.config import CoordinatorConfig, loads
from shared.evidence import decode_evidence
from shared.messages import CommandResult, Histogram, HostStatus, MetricBatch, Sample

# Test durations: the guide's hours, with a short ack timeout and grace so that faults
# resolve quickly in virtual time.
BASE_TOML = """
[engine]
housekeeping = 5.0
[engine.check_intervals]
application = 10.0
cpu = 60.0
memory = 60.0
database = 30.0
"""


def make_config(extra: str = "") -> CoordinatorConfig:
    return loads(CoordinatorConfig, BASE_TOML + extra)


def compressed_config(*, approval: bool = False, production: str = "") -> CoordinatorConfig:
    """Every strategy's bakes and timeouts cut to minutes, for property tests that run
    many deployments with faults; ``production`` adds lines to that environment."""
    return make_config(
        f"""
[environments.production]
missing_data_grace = 120.0
ack_timeout = 120.0
{production}
[environments.production.canary]
first_bake = 600.0
step_bake = 300.0
post_watch = 600.0
approval_before_full = {str(approval).lower()}
[environments.staging]
missing_data_grace = 120.0
ack_timeout = 120.0
[environments.staging.blue_green]
health_window = 300.0
watch = 600.0
[environments.development]
missing_data_grace = 120.0
ack_timeout = 120.0
[environments.development.direct]
verify_window = 300.0
"""
    )


@dataclass
class Profile:
    """How a version behaves on a host."""

    error_rate: float = 0.002
    # Lognormal request latency: median and spread.
    latency_median_ms: float = 120.0
    latency_sigma: float = 0.4
    cpu: float = 35.0
    memory: float = 50.0
    database_fail: float = 0.0


# Real traffic's latency histogram, as the agent scrapes it from a Prometheus app (the
# client libraries' default buckets, in ms).
TRAFFIC_BOUNDS = tuple(
    float(b) for b in (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw in constant time: exact by inverse CDF for few expected
    events, the normal approximation for many."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    mean = n * p
    if mean < 30 or n * (1 - p) < 30:
        if p > 0.5:
            return n - binomial(rng, n, 1 - p)
        u, k, prob = rng.random(), 0, (1 - p) ** n
        cumulative = prob
        while u > cumulative and k < n:
            prob *= (n - k) / (k + 1) * p / (1 - p)
            k += 1
            cumulative += prob
        return k
    return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))


def traffic_sample_values(
    rng: random.Random, profile: Profile, rate: float, interval: float
) -> tuple[dict[str, float], Histogram]:
    """One interval of real traffic at ``rate`` requests/s: its counts and histogram."""
    requests = binomial(rng, 2 * round(rate * interval), 0.5)
    errors = binomial(rng, requests, profile.error_rate)
    counts: list[int] = []
    left, below = requests, 0.0
    for bound in TRAFFIC_BOUNDS:
        z = math.log(bound / profile.latency_median_ms) / profile.latency_sigma
        cdf = 0.5 * math.erfc(-z / math.sqrt(2))
        share = (cdf - below) / (1.0 - below) if below < 1.0 else 0.0
        count = binomial(rng, left, min(1.0, max(0.0, share)))
        counts.append(count)
        left -= count
        below = cdf
    counts.append(left)
    values = {"traffic_requests": float(requests), "traffic_errors": float(errors)}
    return values, Histogram(bounds=list(TRAFFIC_BOUNDS), counts=counts)


@dataclass
class SimHost:
    name: str
    zone: str
    version: str
    environment: str
    slot: str | None = None
    slots: dict[str, str | None] = field(default_factory=dict)
    session: int = 1
    alive: bool = True
    # Connected but sending no samples (a hung collector): silent without a Will.
    mute: bool = False
    # What the Will registered at connect time says.
    connected_version: str | None = None
    connected_at: float = 0.0
    seq: int = 0
    executed: dict[str, str] = field(default_factory=dict)
    offset: float = 0.0
    # Commands received in order (id, action, version/slot), for assertions.
    history: list[tuple[str, str, str | None]] = field(default_factory=list)
    # Virtual time of the last batch the coordinator received from it.
    last_sent: float | None = None

    def status(self, now: float, online: bool = True) -> HostStatus:
        return HostStatus(
            host=self.name,
            online=online,
            session=self.session,
            environment=self.environment,  # type: ignore[arg-type]
            version=self.version,
            slot=self.slot,  # type: ignore[arg-type]
            labels={"zone": self.zone},
            time=now,
        )


class Sim:
    def __init__(
        self,
        *,
        hosts: int = 20,
        environment: str = "production",
        config: CoordinatorConfig | None = None,
        profiles: dict[str, Profile] | None = None,
        seed: int = 1,
        stable: str = "1.0.0",
        requests: int = 5,
        app_interval: float = 10.0,
        gauge_interval: float = 60.0,
        database_interval: float = 30.0,
        command_delay: float = 2.0,
        blue_green: bool = False,
        zones: int = 3,
        engine: Engine | None = None,
        traffic: float = 0.0,
    ) -> None:
        self.config = config or make_config()
        self.engine = engine or Engine(self.config)
        self.rng = random.Random(seed)
        self.profiles = profiles or {}
        self.requests = requests
        # Real traffic, requests per second per host, on top of the probes (0: probes only).
        self.traffic = traffic
        self.intervals = {
            "application": app_interval,
            "gauges": gauge_interval,
            "database": database_interval,
        }
        self.command_delay = command_delay
        self.now = 0.0
        self.hosts: dict[str, SimHost] = {}
        self.actions: list[tuple[float, EngineAction]] = []
        self.sent: list[SendCommand] = []
        self.cancelled: set[str] = set()
        self.replies: list[OperatorReply] = []
        self.snapshots: dict[str, Any] = {}
        self.preflight_ok: dict[str, bool] = {}
        # Post-deployment verification: each command's outcome (default passes), how
        # long it runs, and commands whose report never arrives.
        self.verify_ok: dict[str, bool] = {}
        self.verify_delay = 1.0
        self.verify_lost: set[str] = set()
        self.verify_runs: list[tuple[float, str, str]] = []
        self._queue: list[tuple[float, int, str, Any]] = []
        self.down_until: float | None = None
        # Ground truth for oracles: every sample the coordinator received, in order.
        self.log_samples = False
        self.sample_log: list[tuple[float, str, Sample]] = []
        self.fail_deploys: set[str] = set()
        # Called with every action as it happens (oracles in property tests).
        self.observers: list[Callable[[float, EngineAction], None]] = []
        self.persisted: EngineSnapshot | None = None
        self.crashes: list[float] = []
        self.restored_at: list[float] = []
        self.resent: list[EngineAction] = []
        self.repeats: list[str] = []
        self._counter = 0
        self._scheduled_tick: float | None = None
        for i in range(hosts):
            name = f"host-{i:02d}"
            host = SimHost(
                name=name,
                zone=f"zone-{i % zones}",
                version=stable,
                environment=environment,
                offset=self.rng.uniform(0, app_interval),
            )
            host.connected_version = stable
            if blue_green:
                host.slot = "blue"
                host.slots = {"blue": stable, "green": None}
            self.hosts[name] = host
            self.feed(HostStatusReceived(status=host.status(0.0)))
        for host in self.hosts.values():
            self._push(host.offset, "app", host.name)
            self._push(host.offset + 0.5, "gauges", host.name)
            self._push(host.offset + 0.7, "database", host.name)

    # Engine I/O ----------------------------------------------------------------------

    def feed(self, event: EngineEvent) -> list[EngineAction]:
        if self.down_until is not None:
            if self.now < self.down_until:
                return []  # the coordinator is down: the event is lost
            self._restart()
        actions = self.engine.handle(event, self.now)
        self._perform(actions)
        self._schedule_wakeup()
        return actions

    def crash(self, downtime: float) -> None:
        """SIGKILL the coordinator now; it restarts from its last snapshot after
        ``downtime`` (events meanwhile are lost, as on a dead coordinator)."""
        self.persisted = roundtrip(self.engine.snapshot(), EngineSnapshot)
        self.down_until = self.now + downtime
        self.crashes.append(self.now)
        self._push(self.down_until, "restart", None)

    def _restart(self) -> None:
        assert self.persisted is not None
        self.down_until = None
        self.engine = Engine.restore(self.config, self.persisted)
        self.restored_at.append(self.now)
        # The shell re-publishes what the engine still waits for, with the same ids.
        self.resent = self.engine.outstanding()
        for action in self.resent:
            if isinstance(action, SendCommand):
                self._push(self.now + self.command_delay, "deliver", action)
            elif isinstance(action, RunVerification):
                self._run_verification(action)
        # Re-subscribing delivers every retained status.
        for host in self.hosts.values():
            self.feed(HostStatusReceived(status=host.status(self.now, online=host.alive)))

    def _perform(self, actions: list[EngineAction]) -> None:
        for action in actions:
            self.actions.append((self.now, action))
            for observer in self.observers:
                observer(self.now, action)
            match action:
                case Record() | Notify():
                    # Every evidence the engine writes is of its kind's type.
                    decode_evidence(action.kind, action.evidence, notice=isinstance(action, Notify))
                case SendCommand():
                    self.sent.append(action)
                    self._push(self.now + self.command_delay, "deliver", action)
                case CancelCommand():
                    self.cancelled.add(action.command_id)
                case OperatorReply():
                    self.replies.append(action)
                case DeploymentChanged():
                    self.snapshots[action.deployment.id] = action.deployment
                case RunPreflight():
                    for command in action.commands:
                        self._push(
                            self.now + 1.0,
                            "preflight",
                            (action.deployment_id, command.name),
                        )
                case RunVerification():
                    self._run_verification(action)
                case _:
                    pass

    def _run_verification(self, action: RunVerification) -> None:
        # In order, stopping at the first failure, as the shell runs them.
        when = self.now
        for command in action.commands:
            when += self.verify_delay
            self.verify_runs.append((self.now, action.deployment_id, command.name))
            if command.name not in self.verify_lost:
                self._push(when, "verification", (action.deployment_id, command.name))
            if not self.verify_ok.get(command.name, True):
                break

    def _schedule_wakeup(self) -> None:
        wake = self.engine.next_wakeup()
        if wake is not None and (self._scheduled_tick is None or wake < self._scheduled_tick):
            self._scheduled_tick = wake
            self._push(wake, "tick", None)

    def _push(self, when: float, kind: str, payload: Any) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (when, self._counter, kind, payload))

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action`` (a fault, an operator request) at virtual time ``when``."""
        self._push(when, "call", action)

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, kind, payload = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            self._dispatch(kind, payload)
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "tick":
            if self._scheduled_tick is not None and self.now >= self._scheduled_tick:
                self._scheduled_tick = None
            self.feed(Tick())
        elif kind == "app":
            host = self.hosts[payload]
            self._push(self.now + self.intervals["application"], "app", payload)
            if host.alive and not host.mute:
                self._publish(host, self._app_samples(host))
        elif kind == "gauges":
            host = self.hosts[payload]
            self._push(self.now + self.intervals["gauges"], "gauges", payload)
            if host.alive and not host.mute:
                self._publish(host, self._gauge_samples(host))
        elif kind == "database":
            host = self.hosts[payload]
            self._push(self.now + self.intervals["database"], "database", payload)
            if host.alive and not host.mute:
                self._publish(host, [self._database_sample(host)])
        elif kind == "deliver":
            self._deliver(payload)
        elif kind == "preflight":
            deployment, name = payload
            self.feed(
                PreflightReported(
                    deployment_id=deployment,
                    name=name,
                    ok=self.preflight_ok.get(name, True),
                    output_tail="done",
                )
            )
        elif kind == "verification":
            deployment, name = payload
            ok = self.verify_ok.get(name, True)
            self.feed(
                VerificationReported(
                    deployment_id=deployment,
                    name=name,
                    ok=ok,
                    output_tail="smoke: all good\n" if ok else "smoke: GET /orders 502\n",
                )
            )
        elif kind == "call":
            payload()
        elif kind == "restart" and self.down_until is not None and self.now >= self.down_until:
            self.feed(Tick())

    # The agent model -----------------------------------------------------------------

    def profile(self, version: str | None) -> Profile:
        return self.profiles.get(version or "", Profile())

    def _publish(self, host: SimHost, samples: list[Sample]) -> None:
        host.seq += 1
        host.last_sent = self.now
        batch = MetricBatch(host=host.name, session=host.session, seq=host.seq, samples=samples)
        if self.log_samples and self.down_until is None:
            self.sample_log.extend((self.now, host.name, sample) for sample in samples)
        self.feed(MetricsReceived(batch=batch))

    def _app_sample(self, check: str, profile: Profile) -> Sample:
        errors = sum(1 for _ in range(self.requests) if self.rng.random() < profile.error_rate)
        latencies = [
            round(profile.latency_median_ms * math.exp(self.rng.gauss(0, profile.latency_sigma)), 3)
            for _ in range(self.requests)
        ]
        values = {"requests": float(self.requests), "errors": float(errors)}
        histogram = None
        if self.traffic > 0:
            traffic, histogram = traffic_sample_values(
                self.rng, profile, self.traffic, self.intervals["application"]
            )
            values.update(traffic)
        return Sample(
            check=check,
            time=self.now,
            ok=errors < self.requests,
            values=values,
            latencies_ms=latencies,
            histogram=histogram,
        )

    def _app_samples(self, host: SimHost) -> list[Sample]:
        samples = [self._app_sample("application", self.profile(host.version))]
        if host.slot is not None:
            inactive = "green" if host.slot == "blue" else "blue"
            version = host.slots.get(inactive)
            if version is not None:
                samples.append(self._app_sample(f"application_{inactive}", self.profile(version)))
        return samples

    def _gauge_samples(self, host: SimHost) -> list[Sample]:
        profile = self.profile(host.version)
        cpu = min(100.0, max(0.0, self.rng.gauss(profile.cpu, 3.0)))
        memory = min(100.0, max(0.0, self.rng.gauss(profile.memory, 2.0)))
        return [
            Sample(check="cpu", time=self.now, ok=True, values={"percent": round(cpu, 2)}),
            Sample(check="memory", time=self.now, ok=True, values={"percent": round(memory, 2)}),
        ]

    def _database_sample(self, host: SimHost) -> Sample:
        ok = self.rng.random() >= self.profile(host.version).database_fail
        return Sample(
            check="database",
            time=self.now,
            ok=ok,
            values={"latency_ms": 2.0},
            error=None if ok else "connection refused",
        )

    def _deliver(self, command: SendCommand) -> None:
        host = self.hosts[command.host]
        if command.command_id in self.cancelled or not host.alive:
            # Not delivered: a real shell keeps re-publishing until cancelled; a dead host
            # hears nothing. Re-deliver later while it might still be wanted.
            if command.command_id not in self.cancelled:
                self._push(self.now + 10.0, "deliver", command)
            return
        if command.command_id in host.executed:
            # Idempotent by id: a repeated id is answered with the first result and runs
            # nothing.
            self.repeats.append(command.command_id)
            state = host.executed[command.command_id]
            self.feed(CommandResultReceived(result=self._result(host, command, state)))
            return
        if command.action == "deploy" and host.name in self.fail_deploys:
            host.executed[command.command_id] = "failed"
            host.history.append((command.command_id, "deploy-failed", command.version))
            result = self._result(host, command, "failed")
            self.feed(CommandResultReceived(result=msgspec.structs.replace(result, detail="boom")))
            return
        host.executed[command.command_id] = "succeeded"
        host.history.append((command.command_id, command.action, command.version or command.slot))
        self.feed(CommandResultReceived(result=self._result(host, command, "accepted")))
        if command.action == "deploy":
            if command.slot is not None:
                host.slots[command.slot] = command.version
            else:
                host.version = command.version or host.version
        elif command.action == "rollback":
            if command.version is not None:
                host.version = command.version
        elif command.action == "switch" and command.slot is not None:
            host.slot = command.slot
            host.version = host.slots.get(command.slot) or host.version
        self.feed(HostStatusReceived(status=host.status(self.now)))
        self.feed(CommandResultReceived(result=self._result(host, command, "succeeded")))

    def _result(self, host: SimHost, command: SendCommand, state: str) -> CommandResult:
        return CommandResult(
            id=command.command_id,
            host=host.name,
            state=state,  # type: ignore[arg-type]
            version=host.version,
            slot=host.slot,  # type: ignore[arg-type]
            time=self.now,
        )

    # Faults and operators ------------------------------------------------------------

    def kill(self, name: str) -> None:
        """The host dies: its Will (offline, same session) arrives at once. Like the real
        one it was prepared at connect time, with the version and time of then."""
        host = self.hosts[name]
        host.alive = False
        will = host.status(self.now, online=False)
        will = msgspec.structs.replace(will, version=host.connected_version, time=host.connected_at)
        self.feed(HostStatusReceived(status=will))

    def partition(self, name: str, will_after: float = 90.0) -> None:
        """The host is cut off: nothing from it arrives and no command reaches it. The
        broker notices a keepalive and a half later and publishes its Will then."""
        host = self.hosts[name]
        host.alive = False
        session = host.session

        def will() -> None:
            if not host.alive and host.session == session:
                status = host.status(self.now, online=False)
                self.feed(
                    HostStatusReceived(
                        status=msgspec.structs.replace(
                            status, version=host.connected_version, time=host.connected_at
                        )
                    )
                )

        self.at(self.now + will_after, will)

    def revive(self, name: str) -> None:
        host = self.hosts[name]
        host.alive = True
        host.session += 1
        host.connected_version, host.connected_at = host.version, self.now
        self.feed(HostStatusReceived(status=host.status(self.now)))

    def operator(self, action: str, deployment: str, **fields: Any) -> OperatorReply:
        before = len(self.replies)
        self.feed(
            OperatorRequest(
                deployment_id=deployment,
                action=action,  # type: ignore[arg-type]
                actor=fields.pop("actor", "alice"),
                **fields,
            )
        )
        assert len(self.replies) == before + 1, "every operator request gets one reply"
        return self.replies[-1]

    def start(self, deployment: str, version: str, **fields: Any) -> OperatorReply:
        return self.operator("start", deployment, version=version, **fields)

    def finish(self, deployment: str, limit: float) -> str:
        """Run until ``deployment`` is finished (or ``limit``); return its phase."""
        terminal = {"completed", "rolled_back", "failed", "refused"}

        def done() -> bool:
            phase = self.engine.phase(deployment)
            return phase is not None and phase.value in terminal

        self.run_until(limit, stop=done)
        return self.phase(deployment)

    # Reading what happened -----------------------------------------------------------

    def records(self, kind: str | None = None) -> list[Record]:
        return [
            a for _, a in self.actions if isinstance(a, Record) and (kind is None or a.kind == kind)
        ]

    def notifications(self, kind: str | None = None) -> list[Notify]:
        return [
            a for _, a in self.actions if isinstance(a, Notify) and (kind is None or a.kind == kind)
        ]

    def first(self, kind: str) -> Record:
        found = self.records(kind)
        assert found, f"no {kind} record; kinds seen: {sorted({r.kind for r in self.records()})}"
        return found[0]

    def phase(self, deployment: str) -> str:
        phase = self.engine.phase(deployment)
        assert phase is not None
        return phase.value

    def versions(self) -> dict[str, str]:
        return {name: host.version for name, host in self.hosts.items()}

    def commands_for(self, deployment: str) -> list[SendCommand]:
        return [c for c in self.sent if c.deployment_id == deployment]


def roundtrip(value: Any, kind: type[Any]) -> Any:
    """Through JSON and back, as the daemon's store would."""
    return msgspec.json.decode(msgspec.json.encode(value), type=kind)
