"""Round trips of every record type, on both backends."""

from __future__ import annotations

import pytest

from coordinator.store import TERMINAL_STATES, Store, StoreError
from shared.messages import Event


async def test_deployment_round_trip_and_upsert(store: Store) -> None:
    assert await store.get_deployment("d-1") is None
    await store.save_deployment(
        "d-1", "production", "1.2.3", "canary", "baking", b"\x00snap\xff", fencing=0, updated=10.0
    )
    saved = await store.get_deployment("d-1")
    assert saved is not None
    assert (saved.id, saved.environment, saved.version, saved.strategy, saved.state) == (
        "d-1",
        "production",
        "1.2.3",
        "canary",
        "baking",
    )
    assert saved.snapshot == b"\x00snap\xff"
    assert (saved.created, saved.updated, saved.fencing) == (10.0, 10.0, 0)
    assert not saved.terminal

    await store.save_deployment(
        "d-1", "production", "1.2.3", "canary", "completed", b"done", fencing=0, updated=20.0
    )
    again = await store.get_deployment("d-1")
    assert again is not None
    assert (again.state, again.snapshot, again.created, again.updated) == (
        "completed",
        b"done",
        10.0,
        20.0,
    )
    assert again.terminal


async def test_list_deployments_newest_first_with_filters(store: Store) -> None:
    rows = [
        ("d-1", "staging", "completed"),
        ("d-2", "production", "baking"),
        ("d-3", "production", "rolled_back"),
        ("d-4", "staging", "paused"),
    ]
    for deployment_id, environment, state in rows:
        await store.save_deployment(
            deployment_id, environment, "1.0", "canary", state, b"", fencing=0, updated=1.0
        )
    # Updating an old deployment does not make it newer: order is by creation.
    await store.save_deployment(
        "d-1", "staging", "1.0", "canary", "completed", b"x", fencing=0, updated=99.0
    )

    assert [d.id for d in await store.list_deployments()] == ["d-4", "d-3", "d-2", "d-1"]
    assert [d.id for d in await store.list_deployments(limit=2)] == ["d-4", "d-3"]
    assert [d.id for d in await store.list_deployments(environment="production")] == [
        "d-3",
        "d-2",
    ]
    assert [d.id for d in await store.list_deployments(states={"baking", "paused"})] == [
        "d-4",
        "d-2",
    ]
    assert [
        d.id for d in await store.list_deployments(environment="staging", states=["completed"])
    ] == ["d-1"]
    assert await store.list_deployments(states=[]) == []
    # Active: everything not terminal, oldest first (the order to resume them in).
    assert [d.id for d in await store.active_deployments()] == ["d-2", "d-4"]


async def test_every_terminal_state_leaves_active_deployments(store: Store) -> None:
    for index, state in enumerate(sorted(TERMINAL_STATES)):
        await store.save_deployment(f"t-{index}", "staging", "1", "direct", state, b"", fencing=0)
    await store.save_deployment("live", "staging", "1", "direct", "some-new-state", b"", fencing=0)
    assert [d.id for d in await store.active_deployments()] == ["live"]


async def test_steps_keep_their_start_and_end(store: Store) -> None:
    await store.save_deployment("d-1", "production", "2.0", "canary", "baking", b"", fencing=0)
    await store.record_step("d-1", 0, 10.0, started=100.0)
    await store.record_step("d-1", 1, 25.0, started=200.0)
    await store.record_step("d-1", 0, 10.0, started=100.0, ended=150.0, outcome="promoted")
    # A replay of step 0's start (say after a restart) neither moves nor erases anything.
    await store.record_step("d-1", 0, 10.0, started=170.0)

    steps = await store.steps("d-1")
    assert [(s.step_index, s.percent, s.started, s.ended, s.outcome) for s in steps] == [
        (0, 10.0, 100.0, 150.0, "promoted"),
        (1, 25.0, 200.0, None, None),
    ]
    assert await store.steps("nope") == []


async def test_command_insert_if_absent(store: Store) -> None:
    await store.save_deployment("d-1", "production", "2.0", "canary", "deploying", b"", fencing=3)
    assert await store.save_command(
        "cmd-00000001", "d-1", "web-1", "deploy", b'{"signed":1}', 50.0, fencing=3
    )
    # The same id again (a crash between store and publish, then a replay) is a no-op.
    assert not await store.save_command(
        "cmd-00000001", "d-1", "web-2", "rollback", b"other", 60.0, fencing=3
    )
    command = await store.get_command("cmd-00000001")
    assert command is not None
    assert (command.deployment_id, command.host, command.action) == ("d-1", "web-1", "deploy")
    assert (command.payload, command.created, command.fencing) == (b'{"signed":1}', 50.0, 3)
    assert command.results == ()
    assert command.state is None
    assert await store.get_command("missing") is None


async def test_pending_commands_follow_results(store: Store) -> None:
    await store.save_deployment("d-1", "production", "2.0", "canary", "deploying", b"", fencing=0)
    for index, host in enumerate(["web-1", "web-2", "web-3"]):
        await store.save_command(
            f"cmd-{index}", "d-1", host, "deploy", b"p", 10.0 + index, fencing=0
        )

    assert [c.id for c in await store.pending_commands()] == ["cmd-0", "cmd-1", "cmd-2"]

    # Accepted is not final: the command stays pending until it succeeds or fails.
    assert await store.record_command_result("cmd-0", "accepted", "", 11.0)
    assert await store.record_command_result("cmd-1", "failed", "disk full", 12.0)
    assert await store.record_command_result("cmd-2", "rejected", "expired", 13.0)
    pending = await store.pending_commands()
    assert [(c.id, c.state) for c in pending] == [("cmd-0", "accepted")]

    assert await store.record_command_result("cmd-0", "succeeded", "now 2.0", 14.0)
    assert await store.pending_commands() == []

    command = await store.get_command("cmd-0")
    assert command is not None
    assert [(r.state, r.detail, r.time) for r in command.results] == [
        ("accepted", "", 11.0),
        ("succeeded", "now 2.0", 14.0),
    ]
    assert command.state == "succeeded"
    assert command.final

    # A duplicate answer (MQTT delivers at least once) keeps the first one.
    assert not await store.record_command_result("cmd-0", "succeeded", "again", 15.0)
    command = await store.get_command("cmd-0")
    assert command is not None
    assert [r.detail for r in command.results] == ["", "now 2.0"]
    # A result for a command this store never sent is ignored, not an error.
    assert not await store.record_command_result("cmd-unknown", "succeeded", "", 16.0)

    assert [c.id for c in await store.commands("d-1")] == ["cmd-0", "cmd-1", "cmd-2"]


async def test_unknown_result_state_is_refused(store: Store) -> None:
    await store.save_deployment("d-1", "production", "2.0", "canary", "deploying", b"", fencing=0)
    await store.save_command("cmd-0", "d-1", "web-1", "deploy", b"p", 1.0, fencing=0)
    with pytest.raises(StoreError, match="not one of"):
        await store.record_command_result("cmd-0", "done", "", 2.0)  # type: ignore[arg-type]


async def test_command_for_unknown_deployment_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.save_command("cmd-0", "no-such", "web-1", "deploy", b"p", 1.0, fencing=0)
    assert await store.get_command("cmd-0") is None


async def test_hosts_upsert(store: Store) -> None:
    await store.upsert_host(
        "web-2", True, 1, "production", "1.0", "blue", {"zone": "a", "rack": "r1"}, 10.0
    )
    await store.upsert_host("web-1", True, 4, "staging", None, None, {}, 11.0)
    await store.upsert_host("web-2", False, 2, "production", "1.1", "green", {"zone": "b"}, 12.0)

    hosts = await store.list_hosts()
    assert [h.host for h in hosts] == ["web-1", "web-2"]
    web1, web2 = hosts
    assert (web1.online, web1.session, web1.environment, web1.version, web1.slot) == (
        True,
        4,
        "staging",
        None,
        None,
    )
    assert web1.labels == {}
    assert (web2.online, web2.session, web2.version, web2.slot, web2.last_seen) == (
        False,
        2,
        "1.1",
        "green",
        12.0,
    )
    assert web2.labels == {"zone": "b"}


async def test_alerts_deduplicate_and_resolve(store: Store) -> None:
    evidence = {"rule": "cpu", "window": [100.0, 130.0], "values": [91.0, 93.5, 97.0]}
    assert await store.open_alert("cpu:web-1", "web-1", "cpu", 130.0, evidence)
    # Firing again while active is the same alert.
    assert not await store.open_alert("cpu:web-1", "web-1", "cpu", 140.0, {"other": 1})
    assert await store.open_alert("fleet:errors", None, "error_rate", 135.0, {})

    active = await store.active_alerts()
    assert [(a.key, a.host, a.rule, a.started, a.resolved) for a in active] == [
        ("cpu:web-1", "web-1", "cpu", 130.0, None),
        ("fleet:errors", None, "error_rate", 135.0, None),
    ]
    assert active[0].evidence == evidence

    assert await store.resolve_alert("cpu:web-1", 200.0)
    assert not await store.resolve_alert("cpu:web-1", 201.0)
    assert not await store.resolve_alert("never-fired", 201.0)
    assert [a.key for a in await store.active_alerts()] == ["fleet:errors"]
    # Once resolved, the same key can fire again as a new alert.
    assert await store.open_alert("cpu:web-1", "web-1", "cpu", 300.0, {})
    assert [a.key for a in await store.active_alerts()] == ["fleet:errors", "cpu:web-1"]


async def test_events_round_trip_with_evidence(store: Store) -> None:
    evidence = {
        "rule": "error_rate",
        "window": {"start": 100.0, "end": 160.0},
        "numbers": {"requests": 500, "errors": 17, "lower_bound": 0.0183},
        "hosts": ["web-1", "web-2"],
        "threshold": None,
    }
    seq = await store.append_event(
        160.0,
        "rollback",
        "error rate over threshold",
        deployment="d-1",
        host="web-1",
        actor="engine",
        evidence=evidence,
    )
    bare = await store.append_event(161.0, "note", "no evidence")
    assert bare > seq >= 1

    events = await store.events()
    assert events == [
        Event(
            seq=seq,
            time=160.0,
            kind="rollback",
            message="error rate over threshold",
            deployment="d-1",
            host="web-1",
            actor="engine",
            evidence=evidence,
        ),
        Event(seq=bare, time=161.0, kind="note", message="no evidence"),
    ]


async def test_events_filters(store: Store) -> None:
    seqs = []
    for index in range(6):
        deployment = "d-even" if index % 2 == 0 else "d-odd"
        seqs.append(await store.append_event(float(index), "step", f"e{index}", deployment))
    assert [e.message for e in await store.events(after_seq=seqs[3])] == ["e4", "e5"]
    assert [e.message for e in await store.events(deployment="d-odd")] == ["e1", "e3", "e5"]
    assert [e.message for e in await store.events(after_seq=seqs[1], deployment="d-even")] == [
        "e2",
        "e4",
    ]
    assert [e.message for e in await store.events(limit=2)] == ["e0", "e1"]
    assert await store.events(after_seq=seqs[-1]) == []


async def test_evidence_that_is_not_json_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="not JSON-encodable"):
        await store.append_event(1.0, "note", "bad", evidence={"x": object()})
    assert await store.events() == []
