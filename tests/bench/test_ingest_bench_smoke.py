"""bench/coordinator_ingest --quick runs end to end and prints its one JSON line.

It runs the executable wrapper, as `make bench` does, with this interpreter.

Tiny sizes only; no timing is asserted (the figures are the benchmark's business)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.devfleet.broker import mosquitto_binary
from tests.conftest import service_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "coordinator_ingest"


def test_quick_run_prints_every_figure() -> None:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    done = subprocess.run(
        [str(BENCH), "--quick"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["bench"] == "coordinator_ingest"
    ingest = result["ingest"]
    for key in ("coordinator_msgs_per_s", "bare_client_msgs_per_s", "ratio", "steps"):
        assert key in ingest
    assert ingest["rejected"] == 0
    breach = result["breach_to_rollback_ms"]
    for key in ("raw_p50", "raw_p99", "broker_hop_p50", "corrected_p50", "corrected_p99"):
        assert breach[key] is not None
    acked = result["rollback_all_acked_s"]
    assert acked["acks_per_run_min"] == acked["hosts"]
    assert acked["from_breach_p99"] is not None
    fleet = result["fleet"]
    for key in ("largest_held", "dropped", "levels"):
        assert key in fleet
    assert set(result["met"]) == {
        "ingest_ratio",
        "breach_to_rollback_p99",
        "rollback_acked_p99",
        "fleet",
    }
