"""Figure 1, ``ingest``: the coordinator's ingest rate against a bare aiomqtt client.

Load processes (4 x 50 hosts) publish valid ``MetricBatch`` payloads (an application
sample each) at fixed offered rates, stepped up (``--ingest-rates``, 5 s windows after a
2 s warm-up). In the same run the bare client (``bare_client``) subscribes to the
coordinator's three topics and only counts. Per step: the coordinator's rate from its
``/metrics`` counter ``rollguard_messages_ingested_total``, the bare client's from its
count, and each process's CPU per message. ``coordinator_msgs_per_s`` /
``bare_client_msgs_per_s`` are the highest rate each sustained over the steps, ``ratio``
their quotient; ``cpu_cost_ratio`` = bare CPU per message / coordinator CPU per message
at the highest step both kept up with (what the ratio would be if each had a core of its
own and nothing else limited it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator_ingest_bench.coordinator_process import ingested_total
from coordinator_ingest_bench.cpu import cpu_seconds, machine_busy
from coordinator_ingest_bench.figures import TARGET_RATIO
from coordinator_ingest_bench.harness import Harness
from coordinator_ingest_bench.progress import say


async def measure_ingest(harness: Harness) -> dict[str, Any]:
    procs, per = (2, 10) if harness.quick else (4, 50)
    rates = [1000.0, 2000.0] if harness.quick else harness.options.ingest_rates
    warmup, window = (1.0, 2.0) if harness.quick else (2.0, 5.0)
    coordinator = await harness.coordinator("coordinator-ingest", {})
    bare = await harness.child("bare", "bare")
    await bare.call("ready")
    loaders = [await harness.child(f"load{i}", "agents", seed=i) for i in range(procs)]
    hosts = harness.universe[: procs * per]
    await asyncio.gather(
        *(
            c.call("connect", hosts=hosts[i * per : (i + 1) * per], subscribe=False)
            for i, c in enumerate(loaders)
        )
    )
    await coordinator.wait_online(len(hosts), 30)
    pids = {
        "coordinator": [coordinator.pid],
        "bare": [bare.pid],
        "broker": [harness.broker_pid],
        "load": [c.pid for c in loaders],
    }
    steps = []
    for rate in rates:
        duration = warmup + window + 0.5
        runs = [
            asyncio.create_task(
                c.call("load", duration=duration, rate=rate / procs, wait=duration + 60)
            )
            for c in loaders
        ]
        await asyncio.sleep(warmup)
        b0 = await bare.call("count")
        t0, c0 = await coordinator.ingested()
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        busy0 = machine_busy()
        await asyncio.sleep(window)
        b1 = await bare.call("count")
        t1, c1 = await coordinator.ingested()
        cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        busy1 = machine_busy()
        loads = await asyncio.gather(*runs)
        coord = (ingested_total(c1) - ingested_total(c0)) / (t1 - t0)
        plain = (b1["count"] - b0["count"]) / (b1["t"] - b0["t"])
        offered = sum(r["acked"] for r in loads) / max(r["elapsed"] for r in loads)
        cpu = {k: (cpu1[k] - cpu0[k]) / (t1 - t0) * 100 for k in pids}
        step = {
            "offered": round(offered),
            "coordinator": round(coord),
            "bare_client": round(plain),
            "coordinator_cpu_us_per_msg": round(cpu["coordinator"] * 1e4 / coord, 1)
            if coord
            else None,
            "bare_cpu_us_per_msg": round(cpu["bare"] * 1e4 / plain, 1) if plain else None,
            "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
            "machine_cpu_pct_of_200": round(
                (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 200, 1
            ),
        }
        steps.append(step)
        say("ingest step:", step)
    _, counts = await coordinator.ingested()
    await harness.stop_children()
    await coordinator.stop()
    coord_peak = max(s["coordinator"] for s in steps)
    bare_peak = max(s["bare_client"] for s in steps)
    # CPU per message where both kept up with the offered load (within 3 %).
    kept = [s for s in steps if min(s["coordinator"], s["bare_client"]) >= 0.97 * s["offered"]]
    last = kept[-1] if kept else None
    return {
        "load_processes": procs,
        "load_hosts": len(hosts),
        "window_s": window,
        "coordinator_msgs_per_s": coord_peak,
        "bare_client_msgs_per_s": bare_peak,
        "ratio": round(coord_peak / bare_peak, 3) if bare_peak else None,
        "cpu_cost_ratio": round(last["bare_cpu_us_per_msg"] / last["coordinator_cpu_us_per_msg"], 3)
        if last
        else None,
        "cpu_cost_at_offered": last["offered"] if last else None,
        "steps": steps,
        "rejected": counts["rejected"],
        "target_ratio": TARGET_RATIO,
    }
