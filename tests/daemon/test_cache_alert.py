"""The cache hit rate judged end to end: agents run the real cache check against Redis,
the coordinator's environment sets ``cache_hit_rate``, and a burst of misses fires a
``cache_hit_rate`` alert on every host (stored, in ``GET /api/v1/alerts`` and
``rollguard alerts``) that resolves once lookups hit again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from coordinator.devfleet.fleet import wait_for
from tests.cli.run import rollguard
from tests.daemon.conftest import FleetFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["web-1", "web-2"]


@contextmanager
def lookups(url: str, key: str, *, hit: bool) -> Iterator[None]:
    """Keep Redis busy with GETs that miss (a key never set) or hit (one that is), so
    the server's keyspace counters, which every agent's cache check reads, move."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    if hit:
        client.set(key, "x")
    stop = threading.Event()

    def run() -> None:
        target = key if hit else f"{key}:never-set"
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            for _ in range(200):
                pipe.get(target)
            pipe.execute()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        client.close()


def test_a_low_cache_hit_rate_fires_an_alert_that_resolves_when_it_recovers(
    make_fleet: FleetFactory, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    fleet = make_fleet(
        HOSTS,
        coordinator_extra={
            "environments": {"production": {"cache_hit_rate": 0.5}},
            "engine": {"check_intervals": {"cache": 1.0}},
        },
        agent_extra={"checks": {"cache": {"url": url, "interval": 1.0, "timeout": 1.0}}},
    )

    def cache_alerts(resolved: bool) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = fleet.api.get("/api/v1/alerts")["alerts"]
        found = [
            a
            for a in alerts
            if a["rule"] == "cache_hit_rate" and (a["resolved"] is not None) == resolved
        ]
        return found if {a["host"] for a in found} == set(HOSTS) else []

    with lookups(url, f"{prefix}:key", hit=False):
        firing = wait_for(lambda: cache_alerts(False), 60, "a cache alert on every host")
    evidence = firing[0]["evidence"]
    assert evidence["rule"] == "cache_hit_rate"
    assert evidence["threshold"] == 0.5
    assert evidence["value"] < 0.5
    assert evidence["misses"] > evidence["hits"]
    assert "cache hit rate" in firing[0]["message"]
    table = rollguard("alerts", fleet=fleet)
    assert table.returncode == 0, table.stderr
    assert "cache_hit_rate" in table.stdout
    assert "FIRING" in table.stdout

    with lookups(url, f"{prefix}:key", hit=True):
        resolved = wait_for(lambda: cache_alerts(True), 60, "the cache alerts to resolve")
    assert all(a["evidence"]["rule"] == "cache_hit_rate" for a in resolved)
