"""Blue-green: deploy to the inactive slot everywhere, judge that slot's health for a
window, switch every host, watch. Until the switch no user traffic touches the new
version, so a failure before it needs no command at all; after it, rollback is
switching back to the slot that still holds the stable version.
"""

from __future__ import annotations

from coordinator.engine.deployment import Order, Step, TargetHost
from shared.config.coordinator import EnvironmentPolicy
from shared.messages import Slot


def other(slot: Slot) -> Slot:
    return "green" if slot == "blue" else "blue"


def plan(
    policy: EnvironmentPolicy, deployment_id: str, version: str, targets: list[TargetHost]
) -> list[Step]:
    del deployment_id
    deploys: list[Order] = []
    switches: list[Order] = []
    for target in sorted(targets, key=lambda t: t.host):
        if target.from_slot is None:
            raise ValueError(f"{target.host} reports no active slot")
        inactive = other(target.from_slot)
        deploys.append(
            Order(
                host=target.host,
                action="deploy",
                version=version,
                slot=inactive,
                confirm_status=False,
            )
        )
        switches.append(
            Order(
                host=target.host,
                action="switch",
                slot=inactive,
                expect_version=version,
                expect_slot=inactive,
            )
        )
    return [
        Step(
            index=0,
            name="inactive slot",
            percent=0.0,
            orders=deploys,
            bake=policy.blue_green.health_window,
            judge_slot=True,
        ),
        Step(index=1, name="switch", percent=100.0, orders=switches, bake=policy.blue_green.watch),
    ]


def rollback_orders(targets: dict[str, TargetHost], switched: list[str]) -> list[Order]:
    """Switch back every host that was (or may have been) switched."""
    orders = []
    for host in sorted(switched):
        target = targets[host]
        if target.from_slot is None:
            continue
        orders.append(
            Order(
                host=host,
                action="switch",
                slot=target.from_slot,
                expect_version=target.from_version,
                expect_slot=target.from_slot,
            )
        )
    return orders
