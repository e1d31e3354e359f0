"""The command line and the JSON line.

Figures, per mode (``probes`` only, and with ``traffic``):

- ``good``: runs, rolled back (the false-rollback rate), promoted after the first bake;
- per scenario: runs, the rate of the right decision (rolled back within the first bake
  for a bad release; not rolled back for a good one, an incident or a baseline host
  lost) and the median seconds from the bake's start to the rollback;
- ``fleet_incidents_blamed``: incidents rolled back as if the release were at fault;
- ``targets``: each of the issue's targets and whether this run met it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from decisions_bench.runs import Run, run_all
from decisions_bench.scenarios import SCENARIOS

APP_INTERVAL = 10.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/decisions", description=__doc__)
    parser.add_argument("--good", type=int, default=500, help="A/A runs per mode (500)")
    parser.add_argument("--runs", type=int, default=60, help="runs per other scenario (60)")
    parser.add_argument("--seed", type=int, default=1, help="first seed (1)")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (2)"
    )
    parser.add_argument("--quick", action="store_true", help="a few runs per class")
    args = parser.parse_args(argv)
    if args.good < 1 or args.runs < 1 or args.workers < 1:
        parser.error("--good, --runs and --workers must be at least 1")
    if args.quick:
        args.good, args.runs = 2, 1
    return args


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _summary(runs: list[Run]) -> dict[str, Any]:
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r.scenario, []).append(r)
    out: dict[str, Any] = {}
    for scenario in SCENARIOS:
        mine = by.get(scenario.name, [])
        if not mine:
            continue
        rolled = [r for r in mine if r.rolled_back]
        right = len(rolled) if scenario.expect == "rollback" else len(mine) - len(rolled)
        entry: dict[str, Any] = {
            "group": scenario.group,
            "expect": scenario.expect,
            "runs": len(mine),
            "rolled_back": len(rolled),
            "right_rate": round(right / len(mine), 4),
            "median_decision_s": _median([r.decided_after for r in rolled if r.decided_after]),
        }
        if scenario.expect == "keep":
            entry["promoted"] = sum(r.promoted for r in mine)
            entry["held"] = sum(r.held for r in mine)
        out[scenario.name] = entry
    return out


def _targets(modes: dict[str, dict[str, Any]]) -> dict[str, bool]:
    probes, traffic = modes["probes"], modes["traffic"]
    gross = traffic["errors_8pct"]["median_decision_s"]
    return {
        "good_rolled_back_at_most_1pct_probes": probes["good"]["right_rate"] >= 0.99,
        "good_rolled_back_at_most_1pct_traffic": traffic["good"]["right_rate"] >= 0.99,
        "errors_doubled_caught_95pct_traffic": traffic["errors_doubled"]["right_rate"] >= 0.95,
        "latency_plus_20pct_caught_95pct_traffic": traffic["latency_plus_20pct"]["right_rate"]
        >= 0.95,
        "errors_8pct_within_2_intervals": gross is not None and gross <= 2 * APP_INTERVAL,
        "fleet_incidents_blamed_0": all(
            m[s.name]["rolled_back"] == 0
            for m in modes.values()
            for s in SCENARIOS
            if s.group == "incident"
        ),
    }


def main(argv: list[str]) -> int:
    args = _parse(argv)
    started = time.monotonic()
    jobs = [
        (s.name, args.seed + i, traffic)
        for traffic in (False, True)
        for s in SCENARIOS
        for i in range(args.good if s.group == "good" else args.runs)
    ]
    runs = run_all(jobs, args.workers)
    modes = {
        "probes": _summary([r for r in runs if not r.traffic]),
        "traffic": _summary([r for r in runs if r.traffic]),
    }
    blamed = sum(
        r.rolled_back
        for r in runs
        if any(s.name == r.scenario and s.group == "incident" for s in SCENARIOS)
    )
    good = {m: modes[m]["good"] for m in modes}
    line = {
        "bench": "decisions",
        "hosts": 10,
        "traffic_rps_per_host": 20,
        "first_bake_s": 3600,
        "false_rollback_rate": {m: round(g["rolled_back"] / g["runs"], 4) for m, g in good.items()},
        "fleet_incidents_blamed": blamed,
        "modes": modes,
        "targets": _targets(modes),
        "runs": len(runs),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(line, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
