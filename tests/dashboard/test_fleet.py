"""The dashboard's fleet view of 10,000 hosts: every host counted by environment and
zone, one bounded page of the ones a filter matches (trouble first), bad paging
refused with the reason."""

from __future__ import annotations

import pytest

from coordinator.daemon.dashboard.fleet import fleet_view, matches
from shared.views import CheckView, HostView

ZONES = ["a", "b", "c", "d"]


def host(i: int) -> HostView:
    online = i % 100 != 0  # 1 % offline
    failing = i % 250 == 1  # 0.4 % with a failing check
    return HostView(
        host=f"web-{i:05d}",
        online=online,
        session=1,
        environment="production" if i % 10 else "staging",
        version="2.0.0" if i < 1000 else "1.0.0",
        slot=None,
        labels={"zone": ZONES[i % len(ZONES)]},
        agent_version="1",
        last_seen=1000.0,
        checks={
            "application": CheckView(ok=not failing, time=1000.0, values={"requests": 10.0}),
            "cpu": CheckView(ok=True, time=1000.0, values={"percent": 20.0}),
        },
    )


FLEET = [host(i) for i in range(10_000)]


def test_ten_thousand_hosts_are_summarised_and_one_page_is_sent() -> None:
    view = fleet_view(FLEET)
    assert view.total == 10_000
    assert view.online == 9_900
    assert view.healthy == 9_900 - 40
    assert len(view.hosts) == 50
    assert view.pages == 200
    assert sum(g.hosts for g in view.groups) == 10_000
    assert {(g.environment, g.zone) for g in view.groups} == {
        (h.environment, h.labels["zone"]) for h in FLEET
    }
    assert [g.hosts for g in view.groups if g.environment == "staging"] == [500, 500]
    assert sum(g.versions.get("2.0.0", 0) for g in view.groups) == 1_000
    # Trouble first: the offline hosts head the first page.
    assert not view.hosts[0].online


def test_a_filter_narrows_the_page_and_words_all_match() -> None:
    offline = fleet_view(FLEET, query="offline")
    assert offline.matched == 100
    assert all(not h.online for h in offline.hosts)
    zone_b_new = fleet_view(FLEET, query="b 2.0.0", size=500)
    assert zone_b_new.matched == 250
    assert all(h.labels["zone"] == "b" and h.version == "2.0.0" for h in zone_b_new.hosts)
    assert matches(FLEET[1], "unhealthy")
    assert not matches(FLEET[2], "unhealthy")
    # A page past the end shows the last one.
    assert fleet_view(FLEET, query="offline", page=99).page == 2


@pytest.mark.parametrize(
    ("page", "size", "why"), [(0, 50, "page"), (1, 0, "size"), (1, 501, "size")]
)
def test_bad_paging_is_refused_with_the_reason(page: int, size: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        fleet_view(FLEET, page=page, size=size)
