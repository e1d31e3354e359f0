"""Direct (development): every host at once, verify for a window, roll back on failure."""

from __future__ import annotations

from coordinator.engine.deployment import Order, Step, TargetHost
from shared.config.coordinator import EnvironmentPolicy


def plan(
    policy: EnvironmentPolicy, deployment_id: str, version: str, targets: list[TargetHost]
) -> list[Step]:
    del deployment_id
    return [
        Step(
            index=0,
            name="all hosts",
            percent=100.0,
            orders=[
                Order(host=t.host, action="deploy", version=version, expect_version=version)
                for t in sorted(targets, key=lambda t: t.host)
            ],
            bake=policy.direct.verify_window,
        )
    ]
