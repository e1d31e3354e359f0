"""What every measurement stands on: the private broker, the coordinators under test
and the child processes, all started here and all stopped by ``cleanup``.

The broker runs the project's ``mosquitto.conf`` unchanged (``LocalBroker``), with a
broker user for every simulated host (``credentials.generate``); the receivers log in
as ``_operator`` (read-only). No bench-only ACL user. Each measurement runs its own
coordinator with a fresh state directory, and a fresh broker (no retained statuses
carry over from the previous fleet).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from coordinator.devfleet.broker import LocalBroker
from coordinator_ingest_bench.children import Child
from coordinator_ingest_bench.coordinator_process import CoordinatorProcess
from coordinator_ingest_bench.options import Options


class Harness:
    def __init__(self, options: Options, tmp: Path) -> None:
        self.options = options
        self.tmp = tmp
        self.quick = options.quick
        # Up to the target, then one step past it for headroom.
        self.fleet_levels = [40, 80] if self.quick else [5_000, 10_000, 15_000]
        self.rollback_hosts = 40 if self.quick else 1_000
        self.universe = [
            f"h{i:05d}" for i in range(max(*self.fleet_levels, self.rollback_hosts, 200))
        ]
        self.broker = LocalBroker(tmp / "broker", list(self.universe))
        self.children: list[Child] = []
        self.coordinators: list[CoordinatorProcess] = []

    @property
    def spec(self) -> dict[str, Any]:
        """What every child is told: where the broker is and its credentials."""
        return {"port": self.broker.port, "secrets": str(self.broker.directory)}

    @property
    def broker_pid(self) -> int:
        process = self.broker._process
        assert process is not None
        return process.pid

    async def start_broker(self) -> None:
        await asyncio.to_thread(self.broker.start)

    async def fresh_broker(self) -> None:
        # A clean slate between phases: no retained statuses from the previous fleet.
        await asyncio.to_thread(self.broker.restart)

    async def child(self, name: str, role: str, **extra: Any) -> Child:
        child = await Child.start(
            name, role, {**self.spec, **extra}, self.tmp / "logs" / f"{name}.log"
        )
        self.children.append(child)
        return child

    async def stop_children(self) -> None:
        children, self.children = self.children, []
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)

    async def coordinator(self, name: str, extra: dict[str, Any]) -> CoordinatorProcess:
        coordinator = CoordinatorProcess(
            self.tmp / name, self.broker.port, self.broker.directory, extra
        )
        self.coordinators.append(coordinator)
        await coordinator.start()
        return coordinator

    async def cleanup(self) -> None:
        await self.stop_children()
        for coordinator in self.coordinators:
            await coordinator.stop()
        self.broker.stop()
