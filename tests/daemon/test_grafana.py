"""The Grafana dashboard in deploy/grafana/ is built on metrics the coordinator really
exports: every ``rollguard_*`` name in its queries is on a real coordinator's /metrics,
and the dashboard is well formed (unique panel ids, a query per panel, the datasource
and the variables it uses defined)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import FleetFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "rollguard.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def queries(data: dict[str, Any]) -> list[str]:
    found = [str(target["expr"]) for panel in data["panels"] for target in panel.get("targets", [])]
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            found.append(str(variable["definition"]))
    return found


def exported(text: str) -> set[str]:
    """The metric names a /metrics page declares (TYPE lines) or has samples of."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_dashboard_is_well_formed() -> None:
    data = dashboard()
    panels = data["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in data["templating"]["list"]}
    assert {"datasource", "deployment", "host"} <= variables
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= variables, (panel["title"], used - variables)


def test_every_metric_the_dashboard_queries_is_exported(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(["web-1", "web-2"])
    text: str = fleet.api.get("/metrics")
    names = exported(text)
    used = {name for query in queries(dashboard()) for name in re.findall(r"rollguard_\w+", query)}
    assert len(used) >= 15
    missing = sorted(used - names)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"
    # And the per-host gauges have real series for the fleet's hosts.
    assert 'rollguard_host_online{environment="production",host="web-1"} 1.0' in text
