"""Fixtures for the daemon's end-to-end tests: a whole installation (private broker,
demo app, coordinator, agents) as real processes under the test's temporary directory.

Every agent's restart command appends ``<deployment> <version>`` to a file of its own,
so a test counts what each host really executed (deploy and rollback both restart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.devfleet.broker import mosquitto_binary
from coordinator.devfleet.fleet import DevFleet, deep_merge
from tests.conftest import service_missing

FleetFactory = Callable[..., DevFleet]


def restart_log(directory: Path, delay: float = 0.0) -> dict[str, Any]:
    """Agent config that records every executed deploy or rollback per host, after
    ``delay`` seconds (a restart that takes a while keeps commands in flight)."""
    record = f"echo {{deployment}} {{version}} >> {directory}/runs/{{host}}"
    if delay:
        record = f"sleep {delay:g}; {record}"
    return {"deploy": {"restart_command": ["/bin/sh", "-c", record]}}


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    """``make_fleet(hosts, coordinator_extra=..., agent_extra=..., start=True)``:
    a started fleet whose agents are online with samples; stopped after the test."""
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    fleets: list[DevFleet] = []

    def make(
        hosts: list[str],
        *,
        coordinator_extra: dict[str, Any] | None = None,
        agent_extra: dict[str, Any] | Callable[[str], dict[str, Any]] | None = None,
        start: bool = True,
        name: str = "fleet",
        restart_delay: float = 0.0,
        blue_green: bool = False,
    ) -> DevFleet:
        directory = tmp_path / name
        (directory / "runs").mkdir(parents=True, exist_ok=True)
        recorded = restart_log(directory, restart_delay)

        def per_host(host: str) -> dict[str, Any]:
            extra = agent_extra(host) if callable(agent_extra) else agent_extra
            return deep_merge(recorded, extra or {})

        fleet = DevFleet(
            directory,
            hosts,
            coordinator_extra=coordinator_extra or {},
            agent_extra=per_host,
            blue_green=blue_green,
        )
        fleets.append(fleet)
        if start:
            fleet.start()
            fleet.wait_ready(60)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()
