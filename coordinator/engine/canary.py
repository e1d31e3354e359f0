"""Canary: a few hosts first, spread across a label such as the zone, then step up.

The hosts are put in one deterministic order and every step takes the next ones, so a
step's hosts are always a superset of the previous step's. The order spreads across
the label's values round-robin (the largest group first), and within a value it is
shuffled by a hash of the deployment id and host id: each deployment canaries
different hosts, and the same deployment always the same ones (no random state).
"""

from __future__ import annotations

import hashlib
import math

from coordinator.engine.deployment import Order, Step, TargetHost
from shared.config.coordinator import EnvironmentPolicy


def _rank(salt: str, host: str) -> str:
    return hashlib.sha256(f"{salt}\x00{host}".encode()).hexdigest()


def spread_order(targets: list[TargetHost], label: str, salt: str) -> list[str]:
    """Every target host, in canary order."""
    groups: dict[str, list[str]] = {}
    for target in targets:
        groups.setdefault(target.labels.get(label, ""), []).append(target.host)
    queues = [
        sorted(hosts, key=lambda h: (_rank(salt, h), h))
        for _, hosts in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    ]
    order: list[str] = []
    depth = 0
    while len(order) < len(targets):
        order.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return order


def host_count(percent: float, total: int) -> int:
    """Hosts in a step of ``percent``: at least one, rounded up, at most all."""
    if percent >= 100:
        return total
    return min(total, max(1, math.ceil(percent * total / 100 - 1e-9)))


def plan(
    policy: EnvironmentPolicy, deployment_id: str, version: str, targets: list[TargetHost]
) -> list[Step]:
    canary = policy.canary
    order = spread_order(targets, canary.spread_label, deployment_id)
    steps: list[Step] = []
    done = 0
    for percent in [canary.initial_percent, *canary.steps]:
        count = host_count(percent, len(order))
        if count <= done:
            # A small fleet: this step adds no host, so it is merged into the previous.
            continue
        bake = canary.first_bake if not steps else canary.step_bake
        if count == len(order):
            # Every host has the new version: what follows is the post-promotion watch.
            bake = max(bake, canary.post_watch)
        steps.append(
            Step(
                index=len(steps),
                name=f"{percent:g}%",
                percent=percent,
                orders=[
                    Order(host=h, action="deploy", version=version, expect_version=version)
                    for h in order[done:count]
                ],
                bake=bake,
                approval=count == len(order) and canary.approval_before_full and bool(steps),
            )
        )
        done = count
    return steps


def rollback_orders(hosts: list[str], stable: str | None) -> list[Order]:
    """Every host that got (or may have got) the new version goes back to ``stable``."""
    return [
        Order(host=h, action="rollback", version=stable, expect_version=stable)
        for h in sorted(hosts)
    ]
