"""Round trips of every record type, on both backends."""

from __future__ import annotations

import pytest

from coordinator.store import TERMINAL_STATES, AlertRow, Store, StoreError
from shared.messages import Event
from tests.store.conftest import command, deployment, event, result


async def test_deployment_round_trip_and_upsert(store: Store) -> None:
    assert await store.get_deployment("d-1") is None
    first = deployment("d-1", "baking", b'{"snap":1}', at=10.0)
    await store.write(lambda tx: tx.save_deployment(first))
    assert await store.get_deployment("d-1") == first
    assert not first.terminal

    done = deployment("d-1", "completed", b'{"done":1}', at=20.0)
    await store.write(lambda tx: tx.save_deployment(done))
    again = await store.get_deployment("d-1")
    assert again is not None
    # Created keeps the first save's time; everything else is replaced.
    assert (again.state, again.body, again.created, again.updated) == (
        "completed",
        b'{"done":1}',
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
        record = deployment(deployment_id, state, environment=environment)
        await store.write(lambda tx, r=record: tx.save_deployment(r))  # type: ignore[misc]
    # Updating an old deployment does not make it newer: order is by creation.
    updated = deployment("d-1", "completed", b"x", environment="staging", at=99.0)
    await store.write(lambda tx: tx.save_deployment(updated))

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


def test_terminal_states_are_the_terminal_phases() -> None:
    assert sorted(TERMINAL_STATES) == ["completed", "failed", "refused", "rolled_back"]


async def test_command_insert_if_absent(store: Store) -> None:
    await store.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying", fencing=3)))
    saved = command("cmd-00000001", payload=b'{"signed":1}', created=50.0, fencing=3)
    assert await store.write(lambda tx: tx.save_command(saved))
    # The same id again (a crash between store and publish, then a replay) is a no-op.
    other = command("cmd-00000001", host="web-2", payload=b"other", created=60.0, fencing=3)
    assert not await store.write(lambda tx: tx.save_command(other))
    assert await store.get_command("cmd-00000001") == saved
    assert saved.results == ()
    assert saved.state is None
    assert await store.get_command("missing") is None


async def test_command_results_are_a_history(store: Store) -> None:
    await store.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying")))
    for index, host in enumerate(["web-1", "web-2", "web-3"]):
        record = command(f"cmd-{index}", host=host, created=10.0 + index)
        await store.write(lambda tx, r=record: tx.save_command(r))  # type: ignore[misc]

    async def answer(command_id: str, state: str, detail: str, time: float) -> bool:
        return await store.write(
            lambda tx: tx.record_command_result(command_id, result(state, detail, time))  # type: ignore[arg-type]
        )

    assert await answer("cmd-0", "accepted", "", 11.0)
    assert await answer("cmd-1", "failed", "disk full", 12.0)
    assert await answer("cmd-2", "rejected", "expired", 13.0)
    assert await answer("cmd-0", "succeeded", "now 2.0", 14.0)

    commands = await store.commands("d-1")
    assert [(c.id, c.state, c.final) for c in commands] == [
        ("cmd-0", "succeeded", True),
        ("cmd-1", "failed", True),
        ("cmd-2", "rejected", True),
    ]
    assert [(r.state, r.detail, r.time) for r in commands[0].results] == [
        ("accepted", "", 11.0),
        ("succeeded", "now 2.0", 14.0),
    ]
    # A duplicate answer (MQTT delivers at least once) keeps the first one.
    assert not await answer("cmd-0", "succeeded", "again", 15.0)
    again = await store.get_command("cmd-0")
    assert again is not None
    assert [r.detail for r in again.results] == ["", "now 2.0"]
    # A result for a command this store never sent is ignored, not an error.
    assert not await answer("cmd-unknown", "succeeded", "", 16.0)
    assert await store.commands("nope") == []


async def test_many_commands_and_results_in_one_call(store: Store) -> None:
    """The batch forms insert what is absent, count only that, and keep the order."""
    await store.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying", fencing=2)))
    first = [
        command(f"cmd-{i:03d}", host=f"web-{i}", created=float(i), fencing=2) for i in range(50)
    ]
    assert await store.write(lambda tx: tx.save_commands(first)) == 50
    # Half of them again (a replayed step) with new ones: only the new are inserted.
    again = first[25:] + [
        command(f"cmd-{i:03d}", created=float(i), fencing=2) for i in range(50, 60)
    ]
    assert await store.write(lambda tx: tx.save_commands(again)) == 10
    assert await store.write(lambda tx: tx.save_commands([])) == 0
    assert [c.id for c in await store.commands("d-1")] == [f"cmd-{i:03d}" for i in range(60)]
    assert (await store.get_command("cmd-007")) == first[7]

    answers = [(f"cmd-{i:03d}", result("succeeded", f"now {i}", 100.0 + i)) for i in range(60)]
    unknown = [("cmd-unknown", result("succeeded", "", 1.0))]
    assert await store.write(lambda tx: tx.record_command_results(answers[:30] + unknown)) == 30
    # Duplicates (at-least-once delivery) keep the first answer and are not counted.
    assert await store.write(lambda tx: tx.record_command_results(answers)) == 30
    done = await store.commands("d-1")
    assert all(c.state == "succeeded" for c in done)
    assert [r.detail for r in done[59].results] == ["now 59"]


async def test_a_bad_state_refuses_the_whole_batch(store: Store) -> None:
    await store.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying")))
    await store.write(lambda tx: tx.save_commands([command("cmd-0"), command("cmd-1")]))
    batch = [("cmd-0", result("succeeded")), ("cmd-1", result("done"))]  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="'done' is not one of"):
        await store.write(lambda tx: tx.record_command_results(batch))
    assert [c.state for c in await store.commands("d-1")] == [None, None]


async def test_a_stale_token_stores_none_of_a_batch(store: Store) -> None:
    await store.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying", fencing=5)))
    stale = [command("cmd-0", fencing=5), command("cmd-1", fencing=4)]
    with pytest.raises(StoreError):
        await store.write(lambda tx: tx.save_commands(stale))
    assert await store.commands("d-1") == []


async def test_unknown_result_state_is_refused(store: Store) -> None:
    await store.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying")))
    await store.write(lambda tx: tx.save_command(command("cmd-0")))
    with pytest.raises(StoreError, match="not one of"):
        await store.write(lambda tx: tx.record_command_result("cmd-0", result("done")))  # type: ignore[arg-type]


async def test_command_for_unknown_deployment_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.write(lambda tx: tx.save_command(command("cmd-0", "no-such")))
    assert await store.get_command("cmd-0") is None


async def test_alerts_deduplicate_resolve_and_list(store: Store) -> None:
    evidence = {"rule": "cpu", "window": [100.0, 130.0], "values": [91.0, 93.5, 97.0]}
    cpu = AlertRow(
        key="cpu:web-1", host="web-1", rule="cpu", message="cpu 97 %", started=130.0,
        evidence=evidence,
    )  # fmt: skip
    assert await store.write(lambda tx: tx.open_alert(cpu))
    # Firing again while active is the same alert.
    repeat = AlertRow(key="cpu:web-1", host="web-1", rule="cpu", started=140.0)
    assert not await store.write(lambda tx: tx.open_alert(repeat))
    fleet = AlertRow(key="fleet:errors", host=None, rule="error_rate", started=135.0)
    assert await store.write(lambda tx: tx.open_alert(fleet))

    assert await store.alerts(active_only=True) == [fleet, cpu]

    assert await store.write(lambda tx: tx.resolve_alert("cpu:web-1", 200.0))
    assert not await store.write(lambda tx: tx.resolve_alert("cpu:web-1", 201.0))
    assert not await store.write(lambda tx: tx.resolve_alert("never-fired", 201.0))
    assert [a.key for a in await store.alerts(active_only=True)] == ["fleet:errors"]
    # Once resolved, the same key can fire again as a new alert.
    again = AlertRow(key="cpu:web-1", host="web-1", rule="cpu", started=300.0)
    assert await store.write(lambda tx: tx.open_alert(again))
    listed = await store.alerts()
    assert [(a.key, a.started, a.resolved) for a in listed] == [
        ("cpu:web-1", 300.0, None),
        ("fleet:errors", 135.0, None),
        ("cpu:web-1", 130.0, 200.0),
    ]
    assert listed[2].evidence == evidence
    assert listed[2].message == "cpu 97 %"
    assert [a.started for a in await store.alerts(limit=1)] == [300.0]


async def test_events_round_trip_with_evidence(store: Store) -> None:
    evidence = {
        "rule": "error_rate",
        "window": {"start": 100.0, "end": 160.0},
        "numbers": {"requests": 500, "errors": 17, "lower_bound": 0.0183},
        "hosts": ["web-1", "web-2"],
        "threshold": None,
    }
    decision = event(
        160.0,
        "rollback",
        "error rate over threshold",
        deployment="d-1",
        host="web-1",
        actor="engine",
        evidence=evidence,
    )
    seq = await store.write(lambda tx: tx.append_event(decision))
    bare = await store.write(lambda tx: tx.append_event(event(161.0, "note", "no evidence")))
    assert bare > seq >= 1

    assert await store.events() == [
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
        appended = event(float(index), "step", f"e{index}", deployment=f"d-{index % 2}")
        seqs.append(await store.write(lambda tx, e=appended: tx.append_event(e)))  # type: ignore[misc]
    assert [e.message for e in await store.events(after_seq=seqs[3])] == ["e4", "e5"]
    assert [e.message for e in await store.events(deployment="d-1")] == ["e1", "e3", "e5"]
    assert [e.message for e in await store.events(after_seq=seqs[1], deployment="d-0")] == [
        "e2",
        "e4",
    ]
    assert [e.message for e in await store.events(limit=2)] == ["e0", "e1"]
    assert await store.events(after_seq=seqs[-1]) == []


async def test_evidence_that_is_not_json_is_refused(store: Store) -> None:
    bad = event(1.0, "note", "bad", evidence={"x": object()})
    with pytest.raises(StoreError, match="not JSON-encodable"):
        await store.write(lambda tx: tx.append_event(bad))
    assert await store.events() == []
