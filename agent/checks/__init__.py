"""The checks, one module each, built from the config.

Modules are imported only for the checks the config enables, so an agent without a
database or cache check never loads psycopg or redis (resident memory is a target).
"""

from __future__ import annotations

from collections.abc import Callable

from agent.checks.base import Check, Sink
from shared.config.agent import Checks
from shared.messages import Slot

__all__ = ["Check", "Sink", "build_checks"]


def build_checks(
    config: Checks, *, active_slot: Callable[[], Slot | None] | None = None
) -> list[Check]:
    """The enabled checks; ``active_slot`` is the blue-green slot serving traffic now
    (the deploy state), which decides the slot the application check also probes."""
    checks: list[Check] = []
    if config.cpu.enabled:
        from agent.checks.cpu import CpuCheck

        checks.append(CpuCheck(interval=config.cpu.interval, timeout=config.cpu.timeout))
    if config.memory.enabled:
        from agent.checks.memory import MemoryCheck

        checks.append(MemoryCheck(interval=config.memory.interval, timeout=config.memory.timeout))
    if config.disk.enabled:
        from agent.checks.disk import DiskCheck

        checks.append(
            DiskCheck(
                interval=config.disk.interval,
                timeout=config.disk.timeout,
                mounts=config.disk.mounts,
            )
        )
    if config.system.enabled:
        from agent.checks.system import SystemCheck

        checks.append(SystemCheck(interval=config.system.interval, timeout=config.system.timeout))
    if config.database is not None:
        from agent.checks.database import DatabaseCheck

        db = config.database
        checks.append(DatabaseCheck(interval=db.interval, timeout=db.timeout, url=db.url))
    if config.cache is not None:
        from agent.checks.cache import CacheCheck

        cache = config.cache
        checks.append(CacheCheck(interval=cache.interval, timeout=cache.timeout, url=cache.url))
    if config.network is not None:
        from agent.checks.network import NetworkCheck

        net = config.network
        checks.append(
            NetworkCheck(interval=net.interval, timeout=net.timeout, endpoints=net.endpoints)
        )
    if config.application is not None:
        from agent.checks.application import ApplicationCheck

        application = config.application
        checks.append(ApplicationCheck(application))
        # Blue-green: one check per slot, each measuring while its slot is inactive.
        checks.extend(
            ApplicationCheck(application, slot=slot, active_slot=active_slot)
            for slot in sorted(application.slot_urls)
        )
    return checks
