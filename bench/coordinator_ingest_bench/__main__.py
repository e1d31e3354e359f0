"""The bench's entry point: the parent runs the phases and prints one JSON line; with
``--role`` this is a child (simulated agents, the bare client or the probe).

Between phases the broker restarts and each phase runs its own coordinator. The parent
raises its own ``RLIMIT_NOFILE`` to the hard limit, which the broker and the children
inherit (10,000 connections need ~10,000 file descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from coordinator_ingest_bench import __doc__ as overview
from coordinator_ingest_bench.bare_client import run_bare
from coordinator_ingest_bench.figures import (
    TARGET_ACK_P99_S,
    TARGET_FLEET,
    TARGET_RATIO,
    TARGET_ROLLBACK_P99_MS,
)
from coordinator_ingest_bench.harness import Harness
from coordinator_ingest_bench.measure_fleet import measure_fleet
from coordinator_ingest_bench.measure_ingest import measure_ingest
from coordinator_ingest_bench.measure_rollbacks import measure_rollbacks
from coordinator_ingest_bench.options import Options, parse
from coordinator_ingest_bench.probe import run_probe
from coordinator_ingest_bench.progress import say, set_verbose
from coordinator_ingest_bench.sim_agents import run_agents

ROLES: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, None]]] = {
    "agents": run_agents,
    "bare": run_bare,
    "probe": run_probe,
}
PR_SET_PDEATHSIG = 1


async def run_parent(options: Options) -> dict[str, Any]:
    started = time.monotonic()
    # SIGTERM cancels the run like Ctrl-C does, so the cleanup below still stops
    # everything this bench started.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    tmp = Path(tempfile.mkdtemp(prefix="rollguard-ingest-"))
    (tmp / "logs").mkdir()
    harness = Harness(options, tmp)
    if nofile < max(harness.fleet_levels) + 512:
        harness.fleet_levels = [lv for lv in harness.fleet_levels if lv + 512 <= nofile]
    result: dict[str, Any] = {"bench": "coordinator_ingest"}
    try:
        await harness.start_broker()
        say(f"broker on {harness.broker.port} with {len(harness.universe)} host users; {tmp}")
        if "ingest" in options.phases:
            result["ingest"] = await measure_ingest(harness)
            say("ingest:", result["ingest"])
        if "rollback" in options.phases:
            (
                result["breach_to_rollback_ms"],
                result["rollback_all_acked_s"],
            ) = await measure_rollbacks(harness)
            say("breach:", result["breach_to_rollback_ms"])
            say("acked:", result["rollback_all_acked_s"])
        if "fleet" in options.phases:
            result["fleet"] = await measure_fleet(harness)
    finally:
        await harness.cleanup()
        if options.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["met"] = met(result)
    result["machine"] = {"cores": os.cpu_count(), "nofile": nofile}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def met(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each target met, missed, or None when its phase did not run."""
    ingest = result.get("ingest", {})
    breach = result.get("breach_to_rollback_ms", {})
    acked = result.get("rollback_all_acked_s", {})
    fleet = result.get("fleet", {})
    return {
        "ingest_ratio": (ingest.get("ratio") or 0) >= TARGET_RATIO if ingest else None,
        "breach_to_rollback_p99": (breach.get("corrected_p99") or 1e9) <= TARGET_ROLLBACK_P99_MS
        if breach
        else None,
        "rollback_acked_p99": (acked.get("from_breach_p99") or 1e9) <= TARGET_ACK_P99_S
        if acked
        else None,
        "fleet": fleet.get("largest_held", 0) >= TARGET_FLEET if fleet else None,
    }


def run_child(role: str, spec: dict[str, Any]) -> None:
    # A child must not outlive the bench if the parent is killed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    uvloop.run(ROLES[role](spec))


def main(argv: list[str] | None = None) -> int:
    options = parse(argv, (overview or "").split("\n", 1)[0])
    set_verbose(options.verbose)
    if options.role:
        run_child(options.role, json.loads(options.spec or "{}"))
        return 0
    result = uvloop.run(run_parent(options))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
