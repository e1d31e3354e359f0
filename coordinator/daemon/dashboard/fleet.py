"""The fleet as the dashboard shows it: counts by environment and zone for every host,
and one page of the hosts that match a filter. Pure: a list of host views in, one
bounded view out, so a 10,000-host fleet costs the browser one small answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from shared.views import FleetGroupView, FleetView, HostView

PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
# The labels a host's zone is read from, first found wins.
ZONE_LABELS: Final = ("zone", "availability_zone", "az")


def zone_of(host: HostView) -> str:
    for name in ZONE_LABELS:
        if host.labels.get(name):
            return host.labels[name]
    return "-"


def healthy(host: HostView) -> bool:
    """Online, with every check passing in its last sample."""
    return host.online and all(check.ok for check in host.checks.values())


def matches(host: HostView, query: str) -> bool:
    """Whether ``query`` fits the host: each of its words must be the host's
    environment, zone, version or slot, the start of its id, or ``offline`` or
    ``unhealthy``."""
    words = query.lower().split()
    if not words:
        return True
    fields = {host.environment, zone_of(host), host.version or "", host.slot or ""}
    fields = {field.lower() for field in fields}
    name = host.host.lower()
    for word in words:
        if word == "offline":
            if host.online:
                return False
        elif word == "unhealthy":
            if healthy(host):
                return False
        elif word not in fields and not name.startswith(word):
            return False
    return True


@dataclass
class _Group:
    hosts: int = 0
    online: int = 0
    healthy: int = 0
    versions: dict[str, int] = field(default_factory=dict)


def fleet_view(
    hosts: list[HostView], *, query: str = "", page: int = 1, size: int = PAGE_SIZE
) -> FleetView:
    """Every host counted by environment and zone; page ``page`` (1-based) of the ones
    matching ``query``, ``size`` to a page."""
    if size < 1 or size > MAX_PAGE_SIZE:
        raise ValueError(f"size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    if page < 1:
        raise ValueError(f"page must be 1 or more, got {page}")
    groups: dict[tuple[str, str], _Group] = {}
    online = good = 0
    chosen: list[HostView] = []
    for host in hosts:
        group = groups.setdefault((host.environment, zone_of(host)), _Group())
        fine = healthy(host)
        group.hosts += 1
        group.online += host.online
        group.healthy += fine
        version = host.version or "-"
        group.versions[version] = group.versions.get(version, 0) + 1
        online += host.online
        good += fine
        if matches(host, query):
            chosen.append(host)
    chosen.sort(key=lambda h: (h.online, healthy(h), h.host))  # trouble first
    pages = max(1, -(-len(chosen) // size))
    page = min(page, pages)
    return FleetView(
        total=len(hosts),
        online=online,
        healthy=good,
        groups=[
            FleetGroupView(
                environment=environment,
                zone=zone,
                hosts=g.hosts,
                online=g.online,
                healthy=g.healthy,
                versions=dict(sorted(g.versions.items())),
            )
            for (environment, zone), g in sorted(groups.items())
        ],
        matched=len(chosen),
        page=page,
        pages=pages,
        hosts=chosen[(page - 1) * size : page * size],
    )
