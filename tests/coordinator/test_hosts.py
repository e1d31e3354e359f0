"""The shell's one host registry judges statuses by the engine's rule, and a new engine
fed its replay knows exactly the fleet the registry knows."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.daemon.hosts import HostRegistry
from coordinator.engine import Engine, HostStatusReceived
from coordinator.engine.fleet import HostRecord, StatusChange
from shared.config.coordinator import CoordinatorConfig
from shared.messages import HostStatus, MetricBatch, Sample


def status(
    host: str = "web-1", session: int = 1, online: bool = True, time: float = 10.0, **kw: str
) -> HostStatus:
    return HostStatus(
        host=host,
        online=online,
        session=session,
        environment="production",
        version=kw.get("version", "1.0.0"),
        labels={"zone": "a"},
        time=time,
    )


def comparable(records: list[HostRecord]) -> list[tuple[object, ...]]:
    return [(r.host, r.online, r.session, r.version, r.slot, r.labels) for r in records]


def test_a_stale_status_changes_nothing_and_is_said_so() -> None:
    registry = HostRegistry()
    assert registry.apply_status(status(session=2), 1.0) is StatusChange.NEW
    assert registry.apply_status(status(session=1, online=False), 2.0) is StatusChange.STALE
    entry = registry.get("web-1")
    assert entry is not None and entry.record.online and entry.record.session == 2
    assert registry.online_count() == 1


def test_the_will_ends_the_session_and_keeps_the_version_the_host_reported() -> None:
    registry = HostRegistry()
    registry.apply_status(status(time=10.0), 10.0)
    registry.apply_status(status(time=50.0, version="2.0.0"), 50.0)
    # The Will was prepared at connect time and names the version from before the deploy.
    assert registry.apply_status(status(online=False, time=10.0), 60.0) is (
        StatusChange.WENT_OFFLINE
    )
    # A late online status of the ended session is not believed.
    assert registry.apply_status(status(time=55.0, version="2.0.0"), 61.0) is StatusChange.STALE
    entry = registry.get("web-1")
    assert entry is not None and not entry.record.online and entry.record.version == "2.0.0"
    assert registry.online_count() == 0
    assert [s.online for s in registry.replay()] == [True, False]


def test_samples_are_kept_for_known_hosts_only() -> None:
    registry = HostRegistry()
    batch = MetricBatch(
        host="web-1",
        session=1,
        seq=1,
        samples=[Sample(check="cpu", time=11.0, ok=True, values={"percent": 12.0})],
    )
    assert registry.apply_batch(batch, 11.0) is False
    registry.apply_status(status(), 10.0)
    assert registry.apply_batch(batch, 11.0) is True
    [entry] = registry.entries()
    assert entry.activity.checks["cpu"].values == {"percent": 12.0}
    assert entry.activity.batches == 1 and entry.activity.last_seq == 1
    assert entry.activity.last_seen == 11.0


statuses = st.builds(
    status,
    host=st.sampled_from(["web-1", "web-2", "web-3"]),
    session=st.integers(1, 4),
    online=st.booleans(),
    time=st.floats(0, 100),
    version=st.sampled_from(["1.0.0", "2.0.0"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(statuses, max_size=30))
def test_a_new_engine_fed_the_replay_knows_the_registrys_fleet(
    sequence: list[HostStatus],
) -> None:
    registry = HostRegistry()
    live = Engine(CoordinatorConfig())
    for now, message in enumerate(sequence):
        if registry.apply_status(message, float(now)) is not StatusChange.STALE:
            live.handle(HostStatusReceived(status=message), float(now))
    fresh = Engine(CoordinatorConfig())
    for message in registry.replay():
        fresh.handle(HostStatusReceived(status=message), 100.0)
    expected = comparable([entry.record for entry in registry.entries()])
    assert comparable(live.hosts()) == expected
    assert comparable(fresh.hosts()) == expected
    assert registry.online_count() == sum(1 for e in registry.entries() if e.record.online)
