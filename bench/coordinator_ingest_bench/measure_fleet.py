"""Figure 4, ``fleet``: the largest fleet the coordinator holds at the guide's intervals.

N agents (4 processes, one connection each) publish at the guide's intervals
(application every 10 s, cpu and memory every 60 s, random phases); N is stepped
5,000, 10,000, 15,000, new agents connecting at ``--connect-rate`` (1,000 a second). A
level holds when every agent is online at the coordinator, the ingest lag (acknowledged
publishes minus ingested, sampled every second, in seconds of traffic) stays under
``LAG_LIMIT_S``, no connection dropped, the coordinator process stays under
``CPU_LIMIT_PCT`` of one core over the window, and nothing is lost (after publishing
stops, every acknowledged publish is counted as ingested).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from coordinator_ingest_bench.children import Child
from coordinator_ingest_bench.coordinator_process import CoordinatorProcess, ingested_total
from coordinator_ingest_bench.cpu import cpu_seconds, machine_busy
from coordinator_ingest_bench.figures import CPU_LIMIT_PCT, LAG_LIMIT_S, TARGET_FLEET
from coordinator_ingest_bench.harness import Harness
from coordinator_ingest_bench.progress import say


async def measure_fleet(harness: Harness) -> dict[str, Any]:
    await harness.fresh_broker()
    window = 4.0 if harness.quick else harness.options.fleet_window
    coordinator = await harness.coordinator("coordinator-fleet", {})
    procs = 2 if harness.quick else 4
    agents = [await harness.child(f"fleet{i}", "agents", seed=200 + i) for i in range(procs)]
    await asyncio.gather(*(c.call("start_periodic", app=10.0, system=60.0) for c in agents))
    levels: list[dict[str, Any]] = []
    have = 0
    largest = 0
    for level in harness.fleet_levels:
        new = harness.universe[have:level]
        started = time.monotonic()
        # A fleet coming up (or back after a broker restart, with the agents' jittered
        # backoff) at a bounded rate, not 2,500 connections in the same instant.
        await asyncio.gather(
            *(
                c.call(
                    "connect",
                    hosts=new[i::procs],
                    rate=harness.options.connect_rate / procs,
                    wait=600,
                )
                for i, c in enumerate(agents)
            )
        )
        have = level
        try:
            await coordinator.wait_online(level, 120)
        except RuntimeError as exc:
            levels.append({"agents": level, "held": False, "why": str(exc)})
            break
        ramp = time.monotonic() - started
        say(f"fleet: {level} online after {ramp:.1f} s")
        await asyncio.sleep(2.0)
        result = await _hold(coordinator, agents, window)
        result = {"agents": level, "ramp_s": round(ramp, 1), **result}
        levels.append(result)
        say(f"fleet: {result}")
        if not result["held"]:
            break
        largest = level
    # Nothing dropped: stop publishing, then every acknowledged publish is ingested.
    stats = await asyncio.gather(*(c.call("stop_periodic") for c in agents))
    acked = sum(s["acked"] for s in stats)
    deadline = time.monotonic() + 15
    while True:
        _, counts = await coordinator.ingested()
        ingested = ingested_total(counts)
        if ingested >= acked or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    dropped = max(0, int(acked - ingested))
    if dropped and levels:
        levels[-1]["held"] = False
        levels[-1]["why"] = f"{dropped} messages never ingested"
        largest = max([lv["agents"] for lv in levels[:-1] if lv["held"]] or [0])
    await harness.stop_children()
    await coordinator.stop()
    return {
        "largest_held": largest,
        "target": TARGET_FLEET,
        "intervals_s": {"application": 10, "cpu": 60, "memory": 60},
        "agent_processes": procs,
        "published": acked,
        "dropped": dropped,
        "rejected": counts["rejected"],
        "levels": levels,
    }


async def _hold(
    coordinator: CoordinatorProcess, agents: list[Child], window: float
) -> dict[str, Any]:
    cpu0 = cpu_seconds(coordinator.pid)
    busy0 = machine_busy()
    first: tuple[float, float, float] | None = None
    last: tuple[float, float, float] | None = None
    max_lag = 0.0
    end = time.monotonic() + window
    while True:
        stats = await asyncio.gather(*(c.call("stats") for c in agents))
        t, counts = await coordinator.ingested()
        acked = sum(s["acked"] for s in stats)
        ingested = ingested_total(counts)
        sample = (t, float(acked), ingested)
        if first is None:
            first = sample
        else:
            rate = (acked - first[1]) / max(1e-6, t - first[0])
            lag = max(0.0, acked - ingested) / rate if rate > 0 else 0.0
            max_lag = max(max_lag, lag)
        last = sample
        if t >= end:
            break
        await asyncio.sleep(1.0)
    cpu1 = cpu_seconds(coordinator.pid)
    busy1 = machine_busy()
    assert first is not None and last is not None
    span = last[0] - first[0]
    cpu_pct = (cpu1 - cpu0) / span * 100
    machine_pct = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100
    online = counts["online"]
    lost = sum(s["lost"] for s in stats)
    held = max_lag <= LAG_LIMIT_S and cpu_pct < CPU_LIMIT_PCT and lost == 0
    return {
        "held": held,
        "msgs_per_s": round((last[2] - first[2]) / span),
        "published_per_s": round((last[1] - first[1]) / span),
        "max_lag_s": round(max_lag, 3),
        "coordinator_cpu_pct": round(cpu_pct, 1),
        "machine_cpu_pct": round(machine_pct, 1),
        "online": int(online),
        "disconnected": lost,
    }
