#!/usr/bin/env python3
"""The dashboard's fleet answer for 10,000 hosts, one JSON line: how long the
coordinator takes to build ``GET /api/v1/fleet`` (summary by environment and zone and
one page of 50) from its host views, and how many bytes the browser receives, against
the whole host list the page never fetches.

Hosts as an agent reports them (application, cpu, memory, disk checks with their
values); 1 % offline, a few failing a check, four zones, two environments. Figures are
medians of ``--rounds`` builds, on this machine."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from coordinator.daemon.dashboard.fleet import fleet_view
from shared.views import CheckView, HostList, HostView


def host(i: int) -> HostView:
    values = {"requests": 40.0, "errors": 0.0, "p95_ms": 35.0, "latency_ms": 20.0}
    return HostView(
        host=f"web-{i:05d}",
        online=i % 100 != 0,
        session=1,
        environment="production" if i % 10 else "staging",
        version="2.0.0" if i < 1000 else "1.0.0",
        slot=None,
        labels={"zone": "abcd"[i % 4]},
        agent_version="0.1.0",
        last_seen=time.time(),
        checks={
            "application": CheckView(ok=i % 250 != 1, time=time.time(), values=values),
            "cpu": CheckView(ok=True, time=time.time(), values={"percent": 20.0, "cores": 4.0}),
            "memory": CheckView(ok=True, time=time.time(), values={"percent": 41.0}),
            "disk": CheckView(ok=True, time=time.time(), values={"percent": 55.0}),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    hosts = [host(i) for i in range(args.hosts)]
    build: list[float] = []
    answer = b""
    for _ in range(args.rounds):
        started = time.perf_counter()
        answer = msgspec.json.encode(fleet_view(hosts, query="", page=1, size=50))
        build.append(time.perf_counter() - started)
    filtered: list[float] = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        msgspec.json.encode(fleet_view(hosts, query="production b unhealthy"))
        filtered.append(time.perf_counter() - started)
    everything = msgspec.json.encode(HostList(hosts=hosts))
    print(
        json.dumps(
            {
                "bench": "dashboard_fleet",
                "hosts": args.hosts,
                "build_ms_median": round(statistics.median(build) * 1000, 2),
                "filtered_build_ms_median": round(statistics.median(filtered) * 1000, 2),
                "answer_bytes": len(answer),
                "all_hosts_bytes": len(everything),
            }
        )
    )


if __name__ == "__main__":
    main()
