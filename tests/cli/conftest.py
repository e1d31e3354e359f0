"""One fleet for all the CLI tests: a private broker, the demo app, the
coordinator and four agents as real processes, with bakes long enough that a good
canary waits for the operator's commands."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from coordinator.devfleet.broker import mosquitto_binary
from coordinator.devfleet.fleet import DevFleet
from shared import phases
from tests.cli.run import rollguard
from tests.conftest import service_missing

HOSTS = ["web-1", "web-2", "web-3", "web-4"]
# The phases a deployment ends in, as the API names them.
TERMINAL = {phase.value for phase in phases.TERMINAL}

# A canary waits ten minutes per step (the operator promotes it) and asks for an
# approve before 100 %; a direct deployment verifies for 4 s and completes.
COORDINATOR: dict[str, Any] = {
    "environments": {
        "production": {
            "canary": {
                "first_bake": 600.0,
                "step_bake": 600.0,
                "post_watch": 600.0,
                "approval_before_full": True,
            },
            "direct": {"verify_window": 4.0},
        }
    }
}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevFleet]:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    with DevFleet(
        tmp_path_factory.mktemp("cli-fleet"), list(HOSTS), coordinator_extra=COORDINATOR
    ) as f:
        f.wait_ready(45)
        yield f


def settle(fleet: DevFleet, timeout: float = 60.0) -> None:
    """Roll back whatever still runs in production, so the next test starts clean."""
    for deployment in fleet.api.get("/api/v1/deployments?limit=20")["deployments"]:
        if deployment["state"] not in TERMINAL:
            fleet.api.post(
                f"/api/v1/deployments/{deployment['id']}/rollback", {"reason": "test cleanup"}
            )
            fleet.wait_state(deployment["id"], TERMINAL, timeout)


@pytest.fixture(scope="session")
def rolled_back(fleet: DevFleet) -> dict[str, Any]:
    """``deploy 2.1.0 --wait``: the bad version, rolled back by the coordinator."""
    settle(fleet)
    started = time.monotonic()
    result = rollguard(
        "deploy", "2.1.0", "--wait", "--reason", "bad on purpose", fleet=fleet, timeout=120
    )
    ident = result.stdout.split()[1].rstrip(":")
    return {"result": result, "id": ident, "took": time.monotonic() - started}
