"""The cache hit rate judged by the fleet monitor: off by default, and where an
environment sets ``cache_hit_rate`` an alert that fires after ``fire_after`` samples
under it and resolves after ``resolve_after`` samples over it plus the hysteresis band."""

from __future__ import annotations

import pytest

from coordinator.engine import Engine, EngineSnapshot, Notify, Record
from shared.config import ConfigError
from shared.evidence import AlertChange, decode_evidence
from shared.messages import Sample

from .sim import make_config, roundtrip
from .test_alerts import Host

THRESHOLD = """
[environments.production]
cache_hit_rate = 0.8
"""


def cache(host: Host, now: float, hits: int, misses: int, ok: bool = True) -> list[object]:
    values: dict[str, float] = {"latency_ms": 0.4, "keyspace_hits": 10_000.0 + hits}
    if hits + misses:
        values |= {"hits": hits, "misses": misses, "hit_rate": hits / (hits + misses)}
    sample = Sample(check="cache", time=now, ok=ok, values=values)
    return list(host.send(now, sample))


def notices(actions: list[object]) -> list[Notify]:
    return [a for a in actions if isinstance(a, Notify)]


def test_the_hit_rate_is_not_judged_without_a_threshold() -> None:
    host = Host(Engine(make_config()))
    host.status(0.0)
    for t in range(60, 660, 60):
        cache(host, t, hits=1, misses=99)
    assert not host.fired("alert.fired")
    assert make_config().environments.production.cache_hit_rate is None


def test_a_low_hit_rate_fires_after_three_samples_and_resolves_over_the_band() -> None:
    host = Host(Engine(make_config(THRESHOLD)))
    host.status(0.0)
    assert not cache(host, 60, hits=70, misses=30)
    assert not cache(host, 120, hits=60, misses=40)
    fired = cache(host, 180, hits=50, misses=50)
    notify = notices(fired)
    assert [n.kind for n in notify] == ["alert.fired"]
    assert notify[0].environment == "production"
    assert "cache hit rate 50.0% (threshold 80.0%)" in notify[0].message
    evidence = decode_evidence(notify[0].kind, notify[0].evidence, notice=True)
    assert isinstance(evidence, AlertChange)
    assert (evidence.rule, evidence.value, evidence.threshold) == ("cache_hit_rate", 0.5, 0.8)
    assert (evidence.hits, evidence.misses, evidence.breach_streak) == (50, 50, 3)
    assert [a.rule for a in host.engine.alerts()] == ["cache_hit_rate"]

    for t in (240, 300):  # still low: one notification per state change
        cache(host, t, hits=10, misses=90)
    for t in (360, 420, 480, 540):  # 82 %: over the threshold, inside the 5-point band
        cache(host, t, hits=82, misses=18)
    cache(host, 570, hits=0, misses=0)  # no lookups: nothing judged
    cache(host, 580, hits=0, misses=0, ok=False)  # a failed check is the health alert's
    assert len(host.fired("alert.fired")) == 1 and not host.fired("alert.resolved")

    cache(host, 600, hits=90, misses=10)
    cache(host, 660, hits=95, misses=5)
    resolved = cache(host, 720, hits=85, misses=15)
    assert [n.kind for n in notices(resolved)] == ["alert.resolved"]
    record = next(a for a in resolved if isinstance(a, Record))
    assert record.evidence["fired_at"] == 180 and record.evidence["duration"] == 540
    assert host.engine.alerts() == []


def test_the_threshold_is_per_environment() -> None:
    host = Host(Engine(make_config("[environments.staging]\ncache_hit_rate = 0.9\n")))
    host.status(0.0)  # a production host: staging's threshold does not apply
    for t in range(60, 600, 60):
        cache(host, t, hits=1, misses=9)
    assert not host.fired("alert.fired")


def test_a_firing_cache_alert_survives_a_restart_and_resolves_when_unconfigured() -> None:
    config = make_config(THRESHOLD)
    engine = Engine(config)
    host = Host(engine)
    host.status(0.0)
    for t in (60, 120, 180):
        cache(host, t, hits=1, misses=9)
    assert len(host.fired("alert.fired")) == 1
    stored = roundtrip(engine.snapshot(), EngineSnapshot)

    restored = Host(Engine.restore(config, stored))
    restored.status(200.0)
    cache(restored, 240, hits=1, misses=9)  # no second notification after the restart
    assert not restored.fired("alert.fired")
    assert [a.rule for a in restored.engine.alerts()] == ["cache_hit_rate"]

    unjudged = Host(Engine.restore(make_config(), stored))
    unjudged.status(200.0)
    resolved = cache(unjudged, 240, hits=1, misses=9)
    assert [n.kind for n in notices(resolved)] == ["alert.resolved"]
    assert unjudged.engine.alerts() == []


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2"])
def test_a_threshold_outside_0_to_1_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="cache_hit_rate"):
        make_config(f"[environments.production]\ncache_hit_rate = {value}\n")
