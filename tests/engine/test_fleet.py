"""The fleet model respects the agent's session counter."""

from __future__ import annotations

from coordinator.engine.fleet import Fleet, StatusChange
from shared.messages import HostStatus


def status(session: int, online: bool, time: float, version: str = "1.0.0") -> HostStatus:
    return HostStatus(
        host="web-1",
        online=online,
        session=session,
        environment="production",
        version=version,
        labels={"zone": "a"},
        time=time,
    )


def test_a_will_from_an_older_session_never_marks_a_reborn_agent_offline() -> None:
    fleet = Fleet()
    assert fleet.apply(status(1, True, 10.0), now=10.0) is StatusChange.NEW
    assert fleet.apply(status(2, True, 20.0), now=20.0) is StatusChange.UPDATED
    # The Will of session 1, delivered late.
    assert fleet.apply(status(1, False, 5.0), now=21.0) is StatusChange.STALE
    record = fleet.get("web-1")
    assert record is not None and record.online and record.session == 2


def test_the_will_of_the_current_session_ends_it() -> None:
    fleet = Fleet()
    fleet.apply(status(3, True, 10.0), now=10.0)
    fleet.apply(status(3, True, 50.0, version="2.0.0"), now=50.0)
    # The Will was prepared at connect time: older than the last status, and it still
    # names the version from before the deploy. It ends the session, nothing more.
    assert fleet.apply(status(3, False, 10.0), now=60.0) is StatusChange.WENT_OFFLINE
    record = fleet.get("web-1")
    assert record is not None and not record.online and record.changed_at == 60.0
    assert record.version == "2.0.0"
    # Nothing more from the ended session counts, even an online status.
    assert fleet.apply(status(3, True, 70.0), now=70.0) is StatusChange.STALE
    assert fleet.apply(status(4, True, 80.0), now=80.0) is StatusChange.CAME_ONLINE
    record = fleet.get("web-1")
    assert record is not None and record.online and record.changed_at == 80.0


def test_reordered_statuses_within_a_session_keep_the_newest() -> None:
    fleet = Fleet()
    fleet.apply(status(1, True, 30.0, version="2.0.0"), now=30.0)
    assert fleet.apply(status(1, True, 20.0, version="1.0.0"), now=31.0) is StatusChange.STALE
    record = fleet.get("web-1")
    assert record is not None and record.version == "2.0.0"


def test_records_are_copies() -> None:
    fleet = Fleet()
    fleet.apply(status(1, True, 1.0), now=1.0)
    copy = fleet.records()[0]
    copy.labels["zone"] = "b"
    record = fleet.get("web-1")
    assert record is not None and record.labels == {"zone": "a"}
