"""Figures 2 and 3: breach-to-rollback latency, and a whole fleet's rollback acknowledged.

1,000 hosts report at the guide's intervals. ``breach_to_rollback_ms``: a canary
deployment (10 %: 100 hosts) is started through ``POST /api/v1/deployments``; once it
bakes (its ``deployment.acked`` event), one canary host's agent publishes a burst of 3
breaching batches (each alone over the error-rate threshold). The probe timestamps
arrivals. ``raw`` = first breaching batch's publish -> first rollback ``cmd`` at the
probe; ``broker_hop`` = that batch's publish -> its arrival at the probe (one broker
hop, measured per run); ``corrected`` = raw - 2 x broker_hop: from the batch's arrival
at the coordinator to the command's publish. Repeated ``--deployments`` times (40).

``rollback_all_acked_s``: a direct deployment to all 1,000 hosts, a breach, a rollback
command to every host; from the breaching publish to the last of the 1,000
``succeeded`` results arriving at the probe (``from_breach``; also from the first
rollback command's arrival), and to the coordinator's ``deployment.rollback_done``
event (every host confirmed and stored). ``--fleet-rollbacks`` runs (6).

All times are ``time.monotonic``, which is system-wide on Linux, so the children's
timestamps compare with each other.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from coordinator_ingest_bench.children import Child
from coordinator_ingest_bench.coordinator_process import CoordinatorProcess
from coordinator_ingest_bench.figures import (
    ALERT_WINDOW,
    TARGET_ACK_P99_S,
    TARGET_ROLLBACK_P99_MS,
    quantile,
    rnd,
)
from coordinator_ingest_bench.harness import Harness
from coordinator_ingest_bench.progress import say

# The rollback phase's coordinator: long bakes and windows, so nothing but the breach
# ends a deployment, and a short alert window (see ``ALERT_WINDOW``).
COORDINATOR_CONFIG: dict[str, Any] = {
    "alerts": {"rate_window": ALERT_WINDOW},
    "environments": {
        "production": {
            "ack_timeout": 30.0,
            "missing_data_grace": 60.0,
            "canary": {"first_bake": 30.0, "step_bake": 30.0, "post_watch": 30.0},
            "direct": {"verify_window": 60.0},
        }
    },
}


@dataclass(frozen=True)
class RollbackRun:
    """One deployment rolled back; times from the first breaching batch's publish."""

    targets: int  # hosts in the first step, each sent a rollback command
    raw_ms: float  # to the first rollback command at the probe
    hop_ms: float  # to the breaching batch at the probe: one broker hop
    all_cmds_ms: float  # to the last rollback command at the probe
    acks: int  # ``succeeded`` results seen for the rollback commands
    all_acked_s: float | None  # to the last of them
    acked_from_cmd_s: float | None  # from the first command to the last of them
    rollback_done_s: float  # to the ``deployment.rollback_done`` event


async def measure_rollbacks(harness: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``breach_to_rollback_ms``, ``rollback_all_acked_s``)."""
    await harness.fresh_broker()
    n = harness.rollback_hosts
    canary_count = 4 if harness.quick else harness.options.deployments
    fleet_count = 2 if harness.quick else harness.options.fleet_rollbacks
    coordinator = await harness.coordinator("coordinator-rollback", COORDINATOR_CONFIG)
    probe = await harness.child("probe", "probe")
    await probe.call("start")
    procs = 2 if harness.quick else 4
    agents = [await harness.child(f"agents{i}", "agents", seed=100 + i) for i in range(procs)]
    hosts = harness.universe[:n]
    owner: dict[str, Child] = {}
    for i, child in enumerate(agents):
        part = hosts[i::procs]
        owner.update((h, child) for h in part)
        await child.call("connect", hosts=part)
    await coordinator.wait_online(n, 60)
    await asyncio.gather(*(c.call("start_periodic", app=10.0, system=60.0) for c in agents))
    await asyncio.sleep(1.0)
    say(f"rollback: {n} agents online")

    canary_runs = []
    for i in range(canary_count):
        canary_runs.append(await roll_back_once(coordinator, probe, owner, i, "canary"))
        if i % 10 == 9:
            say(f"rollback: {i + 1} canary deployments")
    fleet_runs: list[RollbackRun] = []
    for i in range(fleet_count):
        run = await roll_back_once(coordinator, probe, owner, canary_count + i, "direct")
        fleet_runs.append(run)
        say(f"rollback: fleet run {i + 1}: {run.all_acked_s or 0:.3f} s")
    _, counts = await coordinator.ingested()
    await harness.stop_children()
    await coordinator.stop()
    return breach_figures(canary_runs, n), acked_figures(fleet_runs, n, counts["rejected"])


async def roll_back_once(
    coordinator: CoordinatorProcess,
    probe: Child,
    owner: dict[str, Child],
    index: int,
    strategy: str,
) -> RollbackRun:
    """Deploy version ``2.<index>.0``; once its first step is acknowledged, breach on one
    of its hosts and time the rollback at the probe."""
    reply = await coordinator.api(
        "POST",
        "/api/v1/deployments",
        {
            "version": f"2.{index}.0",
            "environment": "production",
            "strategy": strategy,
            "actor": "bench",
        },
    )
    dep = reply["deployment"]
    first = dep["steps"][0]["orders"]
    await probe.call("wait_event", key=dep["id"], kinds=["deployment.acked"])
    canary = first[index % len(first)]["host"]
    breach = await owner[canary].call("breach", host=canary, count=3)
    done = await probe.call(
        "wait_event",
        key=dep["id"],
        kinds=["deployment.rollback_done", "deployment.rollback_failed"],
        within=60,
    )
    report = await probe.call(
        "report", deployment=dep["id"], host=canary, seqs=breach["seqs"], acks=len(first)
    )
    if done["kind"] != "deployment.rollback_done":
        raise RuntimeError(f"{dep['id']}: {done['kind']}")
    t_pub: float = breach["times"][0]
    # The breach also fired the host's error-rate alert, which closes the gate
    # for the next deployment: report healthy again once the breach is older
    # than the alert's rate window, until the alert resolves.
    await asyncio.sleep(max(0.0, t_pub + ALERT_WINDOW + 0.05 - time.monotonic()))
    await owner[canary].call("breach", host=canary, count=3, healthy=True)
    await probe.call("wait_event", key=canary, kinds=["alert.resolved"], after=t_pub)
    seen = report["seen"][0]
    if report["first_cmd"] is None or seen is None:
        raise RuntimeError(f"{dep['id']}: incomplete timings {report}")
    last_ack = report["last_ack"]
    return RollbackRun(
        targets=len(first),
        raw_ms=(report["first_cmd"] - t_pub) * 1000,
        hop_ms=(seen - t_pub) * 1000,
        all_cmds_ms=(report["last_cmd"] - t_pub) * 1000,
        acks=report["acks"],
        all_acked_s=(last_ack - t_pub) if last_ack else None,
        acked_from_cmd_s=(last_ack - report["first_cmd"]) if last_ack else None,
        rollback_done_s=done["t"] - t_pub,
    )


def breach_figures(runs: list[RollbackRun], hosts: int) -> dict[str, Any]:
    """``breach_to_rollback_ms``; ``corrected`` takes off the breaching batch's hop to
    the coordinator and the command's hop back, each as long as the measured one."""
    raw = [r.raw_ms for r in runs]
    hop = [r.hop_ms for r in runs]
    corrected = [r.raw_ms - 2 * r.hop_ms for r in runs]
    return {
        "deployments": len(runs),
        "hosts": hosts,
        "canary_hosts": runs[0].targets,
        "raw_p50": rnd(quantile(raw, 0.5)),
        "raw_p99": rnd(quantile(raw, 0.99)),
        "broker_hop_p50": rnd(quantile(hop, 0.5)),
        "broker_hop_p99": rnd(quantile(hop, 0.99)),
        "corrected_p50": rnd(quantile(corrected, 0.5)),
        "corrected_p99": rnd(quantile(corrected, 0.99)),
        "all_canary_cmds_p99": rnd(quantile([r.all_cmds_ms for r in runs], 0.99)),
        "target_p99": TARGET_ROLLBACK_P99_MS,
    }


def acked_figures(runs: list[RollbackRun], hosts: int, rejected: float) -> dict[str, Any]:
    """``rollback_all_acked_s``; a run missing every acknowledgement shows in
    ``acks_per_run_min`` and is left out of the times."""
    if not runs:
        return {"hosts": hosts, "runs": 0}
    acked = [r.all_acked_s for r in runs if r.all_acked_s is not None]
    from_cmd = [r.acked_from_cmd_s for r in runs if r.acked_from_cmd_s is not None]
    done = [r.rollback_done_s for r in runs]
    return {
        "hosts": hosts,
        "runs": len(runs),
        "acks_per_run_min": min(r.acks for r in runs),
        "from_breach_p50": rnd(quantile(acked, 0.5), 3),
        "from_breach_p99": rnd(quantile(acked, 0.99), 3),
        "from_first_command_p50": rnd(quantile(from_cmd, 0.5), 3),
        "rollback_done_event_p50": rnd(quantile(done, 0.5), 3),
        "rollback_done_event_p99": rnd(quantile(done, 0.99), 3),
        "target_p99": TARGET_ACK_P99_S,
        "rejected": rejected,
    }
