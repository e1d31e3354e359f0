"""The fleet monitor: the guide's thresholds on every host, with hysteresis and dedup."""

from __future__ import annotations

from coordinator.engine import (
    Engine,
    EngineAction,
    HostStatusReceived,
    MetricsReceived,
    Notify,
    Record,
    Tick,
)
from shared.messages import HostStatus, MetricBatch, Sample

from .sim import make_config


class Host:
    def __init__(self, engine: Engine, name: str = "web-1") -> None:
        self.engine = engine
        self.name = name
        self.seq = 0
        self.session = 1
        self.out: list[EngineAction] = []

    def status(self, now: float, online: bool = True, session: int | None = None) -> None:
        event = HostStatusReceived(
            status=HostStatus(
                host=self.name,
                online=online,
                session=self.session if session is None else session,
                environment="production",
                version="1.0.0",
                time=now,
            )
        )
        self.out += self.engine.handle(event, now)

    def send(self, now: float, *samples: Sample) -> list[EngineAction]:
        self.seq += 1
        batch = MetricBatch(
            host=self.name, session=self.session, seq=self.seq, samples=list(samples)
        )
        actions = self.engine.handle(MetricsReceived(batch=batch), now)
        self.out += actions
        return actions

    def cpu(self, now: float, percent: float) -> list[EngineAction]:
        return self.send(now, Sample(check="cpu", time=now, ok=True, values={"percent": percent}))

    def fired(self, kind: str) -> list[Notify]:
        return [a for a in self.out if isinstance(a, Notify) and a.kind == kind]


def test_a_gauge_fires_after_three_breaches_and_resolves_below_the_hysteresis_band() -> None:
    host = Host(Engine(make_config()))
    host.status(0.0)
    assert not host.cpu(60, 85) and not host.cpu(120, 86)
    fired = host.cpu(180, 87)
    notify = [a for a in fired if isinstance(a, Notify)]
    assert [n.kind for n in notify] == ["alert.fired"]
    assert notify[0].evidence["rule"] == "cpu" and notify[0].evidence["value"] == 87
    assert notify[0].environment == "production"
    for t in (240, 300, 360, 420):  # still breaching: deduplicated
        host.cpu(t, 90)
    for t in (480, 540, 600, 660):  # 76-79 %: under the threshold, inside the band
        host.cpu(t, 77)
    assert len(host.fired("alert.fired")) == 1 and not host.fired("alert.resolved")
    assert host.engine.alerts()[0].rule == "cpu"
    host.cpu(720, 70)
    host.cpu(780, 70)
    resolved = host.cpu(840, 70)
    kinds = [a.kind for a in resolved if isinstance(a, Notify)]
    assert kinds == ["alert.resolved"]
    record = next(a for a in resolved if isinstance(a, Record))
    assert record.evidence["fired_at"] == 180 and record.evidence["duration"] == 660
    assert host.engine.alerts() == []


def test_one_failed_probe_in_five_raises_no_error_rate_alert_but_a_real_breach_does() -> None:
    host = Host(Engine(make_config()))
    host.status(0.0)
    for i in range(30):
        errors = 1.0 if i % 10 == 0 else 0.0  # 3 errors in 150 requests: 2 %, noisy
        host.send(
            10.0 * (i + 1),
            Sample(
                check="application",
                time=10.0 * (i + 1),
                ok=True,
                values={"requests": 5.0, "errors": errors},
            ),
        )
    assert not host.fired("alert.fired")
    for i in range(30, 60):
        host.send(
            10.0 * (i + 1),
            Sample(
                check="application",
                time=10.0 * (i + 1),
                ok=True,
                values={"requests": 5.0, "errors": 1.0},
            ),
        )
    fired = host.fired("alert.fired")
    assert [n.evidence["rule"] for n in fired] == ["error_rate"]
    assert fired[0].evidence["lower"] > 0.01


def test_failing_health_checks_fire_per_check() -> None:
    host = Host(Engine(make_config()))
    host.status(0.0)
    for t in (30, 60, 90):
        host.send(t, Sample(check="database", time=t, ok=False, error="connection refused"))
    fired = host.fired("alert.fired")
    assert [n.evidence["rule"] for n in fired] == ["health:database"]
    assert "connection refused" in fired[0].message


def test_offline_by_will_fires_at_once_and_a_stale_will_is_ignored() -> None:
    engine = Engine(make_config())
    host = Host(engine)
    host.status(0.0, session=1)
    host.status(10.0, session=2)  # reconnected
    host.status(11.0, online=False, session=1)  # the old session's Will, late
    assert not host.fired("alert.fired")
    host.session = 2
    host.status(20.0, online=False)
    fired = host.fired("alert.fired")
    assert [n.evidence["rule"] for n in fired] == ["offline"]
    assert fired[0].time == 20.0
    host.status(30.0, session=3)
    assert [n.evidence["rule"] for n in host.fired("alert.resolved")] == ["offline"]


def test_a_silent_host_is_noticed_on_a_tick() -> None:
    engine = Engine(make_config())
    host = Host(engine)
    host.status(0.0)
    host.send(10.0, Sample(check="application", time=10.0, ok=True, values={"requests": 5.0}))
    host.out += engine.handle(Tick(), 40.0)  # exactly 3 intervals: not yet
    assert not host.fired("alert.fired")
    host.out += engine.handle(Tick(), 45.0)
    fired = host.fired("alert.fired")
    assert [n.evidence["rule"] for n in fired] == ["silent"]
    assert fired[0].evidence["checks"] == ["application"]
    host.send(50.0, Sample(check="application", time=50.0, ok=True, values={"requests": 5.0}))
    host.out += engine.handle(Tick(), 51.0)
    assert [n.evidence["rule"] for n in host.fired("alert.resolved")] == ["silent"]


def test_alerts_can_be_disabled() -> None:
    host = Host(Engine(make_config("[alerts]\nenabled = false\n")))
    host.status(0.0)
    for t in (60, 120, 180, 240):
        host.cpu(t, 99)
    assert not host.fired("alert.fired")
