"""Redis hit rate with the counts behind it, against a real Redis."""

from __future__ import annotations

import pytest

from agent.checks.cache import CacheCheck
from tests.agent.conftest import RecordingSink

pytestmark = pytest.mark.integration


async def test_hit_rate_is_computed_from_this_intervals_hits_and_misses(
    sink: RecordingSink, redis_prefix: tuple[str, str]
) -> None:
    import redis

    url, prefix = redis_prefix
    check = CacheCheck(interval=60, timeout=5, url=url)
    await check.collect(sink)
    first = sink.samples[-1]
    assert first.ok and first.error is None
    assert first.values["latency_ms"] > 0
    assert "hits" not in first.values  # no interval yet, only lifetime totals
    assert {"keyspace_hits", "keyspace_misses"} <= set(first.values)

    client = redis.Redis.from_url(url)
    try:
        client.set(f"{prefix}:k", "v")
        for _ in range(3):
            client.get(f"{prefix}:k")  # hits
        client.get(f"{prefix}:missing")  # a miss
    finally:
        client.close()
    await check.collect(sink)
    second = sink.samples[-1]
    # Other tests may use the same Redis at the same time: at least our own traffic.
    assert second.values["hits"] >= 3 and second.values["misses"] >= 1
    assert second.values["hit_rate"] == pytest.approx(
        second.values["hits"] / (second.values["hits"] + second.values["misses"])
    )
    assert second.values["keyspace_hits"] - first.values["keyspace_hits"] == second.values["hits"]


async def test_refused_connection(sink: RecordingSink, closed_port: int) -> None:
    await CacheCheck(interval=60, timeout=5, url=f"redis://127.0.0.1:{closed_port}/0").collect(sink)
    sample = sink.only("cache")
    assert sample.ok is False
    assert sample.error is not None and "refused" in sample.error.lower()


async def test_server_that_never_answers_times_out(sink: RecordingSink, silent_port: int) -> None:
    await CacheCheck(interval=2, timeout=1, url=f"redis://127.0.0.1:{silent_port}/0").collect(sink)
    sample = sink.only("cache")
    assert sample.ok is False
    assert sample.error is not None and "time" in sample.error.lower()
