"""bench/decisions --quick runs the whole corpus through the real engine and prints its
one JSON line; bad options exit 2 before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "decisions"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH), *args],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_quick_run_prints_one_json_line_with_every_class() -> None:
    done = _run("--quick", "--workers", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["bench"] == "decisions"
    assert set(line["false_rollback_rate"]) == {"probes", "traffic"}
    assert isinstance(line["fleet_incidents_blamed"], int)
    for mode in ("probes", "traffic"):
        classes = line["modes"][mode]
        assert {"good", "errors_8pct", "errors_doubled", "latency_plus_20pct"} <= set(classes)
        assert {c["group"] for c in classes.values()} == {
            "good",
            "breach",
            "subtle",
            "incident",
            "host_loss",
        }
        assert classes["good"]["runs"] == 2
        # A gross breach is rolled back in every run, with a time to the decision.
        assert classes["errors_8pct"]["rolled_back"] == 1
        assert classes["errors_8pct"]["median_decision_s"] is not None
    assert set(line["targets"]) >= {"fleet_incidents_blamed_0", "errors_8pct_within_2_intervals"}


def test_bad_options_exit_2_naming_them() -> None:
    done = _run("--good", "0")
    assert done.returncode == 2
    assert "--good, --runs and --workers must be at least 1" in done.stderr
    assert done.stdout == ""
