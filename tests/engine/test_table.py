"""The engine as a table of plain calls, as h11 tests its state machine: each row is a
starting snapshot (taken by driving the engine with the simulated fleet into that
phase, then restored from its JSON as a restarted coordinator would), one event, the
phase after it and the kinds of the actions it returned, in order.

After a restore the first event restarts the clocks (``deployment.resumed_after_restart``)
and judging restarts on fresh data, so no row can promote or approve on data the restored
engine has not seen: those requests are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import msgspec
import pytest

from coordinator.engine import (
    CommandResultReceived,
    Engine,
    EngineAction,
    EngineEvent,
    EngineSnapshot,
    Notify,
    OperatorReply,
    OperatorRequest,
    Phase,
    PreflightReported,
    Record,
    Tick,
)
from shared.messages import CommandResult, ResultState

from .sim import Profile, Sim, make_config

T0 = 120.0
CONFIG = make_config(
    """
[environments.production.canary]
approval_before_full = true
[[environments.production.preflight]]
name = "backup"
argv = ["true"]
"""
)
GOOD = Profile(error_rate=0.002)


def _started() -> Sim:
    sim = Sim(hosts=20, config=CONFIG, profiles={"2.0.0": GOOD})
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0").accepted
    return sim


def _until(sim: Sim, phase: Phase, limit: float) -> Sim:
    sim.run_until(limit, stop=lambda: sim.engine.phase("d1") is phase)
    assert sim.engine.phase("d1") is phase
    return sim


def _incident(sim: Sim) -> None:
    for version in ("1.0.0", "2.0.0"):
        sim.profiles[version] = Profile(error_rate=0.2, database_fail=1.0)


def _drive(phase: Phase) -> Sim:
    """A simulation stopped with d1 in ``phase``."""
    sim = _started()
    if phase is Phase.PREFLIGHT:
        return sim
    if phase is Phase.ROLLING_BACK:
        sim.preflight_ok["backup"] = True
        sim.run_until(T0 + 1.5)
        first = sim.sent[0]
        rejected = CommandResult(
            id=first.command_id, host=first.host, state="rejected", detail="bad", time=sim.now
        )
        sim.feed(CommandResultReceived(result=rejected))
        return _until(sim, Phase.ROLLING_BACK, sim.now)
    if phase is Phase.DEPLOYING:
        return _until(sim, Phase.DEPLOYING, T0 + 1.5)
    if phase in (Phase.BAKING, Phase.PAUSED):
        sim.run_until(T0 + 600.0)
        if phase is Phase.PAUSED:
            assert sim.operator("pause", "d1", reason="freeze").accepted
        return _until(sim, phase, sim.now)
    if phase is Phase.HELD:
        sim.at(1800.0, lambda: _incident(sim))
        return _until(sim, Phase.HELD, 2400.0)
    _until(sim, Phase.AWAITING_APPROVAL, 8 * 3600.0)
    if phase is Phase.AWAITING_APPROVAL:
        return sim
    assert sim.operator("approve", "d1").accepted
    return _until(sim, Phase.COMPLETED, 16 * 3600.0)


@cache
def snapshot(phase: Phase) -> bytes:
    """The engine's snapshot with d1 in ``phase``, as JSON (as the store keeps it)."""
    return msgspec.json.encode(_drive(phase).engine.snapshot())


def restored(phase: Phase) -> tuple[Engine, EngineSnapshot]:
    stored = msgspec.json.decode(snapshot(phase), type=EngineSnapshot)
    return Engine.restore(CONFIG, stored), stored


def request(action: str, **fields: object) -> Callable[[EngineSnapshot], EngineEvent]:
    def build(_: EngineSnapshot) -> EngineEvent:
        return OperatorRequest(
            deployment_id="d1",
            action=action,  # type: ignore[arg-type]
            actor="alice",
            reason="table",
            **fields,  # type: ignore[arg-type]
        )

    return build


def tick(_: EngineSnapshot) -> EngineEvent:
    return Tick()


def preflight(ok: bool) -> Callable[[EngineSnapshot], EngineEvent]:
    def build(_: EngineSnapshot) -> EngineEvent:
        return PreflightReported(deployment_id="d1", name="backup", ok=ok, output_tail="x")

    return build


def first_answer(state: ResultState) -> Callable[[EngineSnapshot], EngineEvent]:
    """The answer to d1's first command still awaited."""

    def build(stored: EngineSnapshot) -> EngineEvent:
        dep = stored.deployments[0]
        command = next(c for c in dep.commands.values() if c.state in ("pending", "accepted"))
        return CommandResultReceived(
            result=CommandResult(
                id=command.id,
                host=command.host,
                state=state,
                detail="",
                time=stored.time,
            )
        )

    return build


def kinds(actions: list[EngineAction]) -> list[str]:
    """Each action's type (a record or notification with its kind), a run of the same
    one written once with ``*``."""
    names: list[str] = []
    for action in actions:
        tag = type(action).__struct_config__.tag
        name = f"{tag}:{action.kind}" if isinstance(action, Record | Notify) else str(tag)
        if names and names[-1].rstrip("*") == name:
            names[-1] = f"{name}*"
        else:
            names.append(name)
    return names


@dataclass(frozen=True)
class Row:
    start: Phase
    event: Callable[[EngineSnapshot], EngineEvent]
    phase: Phase
    actions: list[str]
    # Seconds after the snapshot's time at which the event arrives.
    after: float = 1.0


RESUMED = ["deployment_changed", "record:deployment.resumed_after_restart"]
REPLY = ["operator_reply"]
P = Phase
TABLE: dict[str, Row] = {
    # Preflight: the host gate runs again when the commands pass, and after a restore
    # no host has reported yet.
    "preflight passes, gate refuses unseen hosts": Row(
        P.PREFLIGHT,
        preflight(True),
        P.REFUSED,
        [
            *RESUMED,
            "record:preflight.reported",
            "record:deployment.preflight_failed",
            "notify:deployment.refused",
        ],
    ),
    "preflight command fails": Row(
        P.PREFLIGHT,
        preflight(False),
        P.REFUSED,
        [
            *RESUMED,
            "record:preflight.reported",
            "record:deployment.preflight_failed",
            "notify:deployment.refused",
        ],
    ),
    "preflight waits": Row(P.PREFLIGHT, tick, P.PREFLIGHT, RESUMED),
    "preflight rolled back: no host to revert": Row(
        P.PREFLIGHT,
        request("rollback"),
        P.ROLLED_BACK,
        [
            *RESUMED,
            "record:deployment.rollback",
            "notify:deployment.rolling_back",
            "record:deployment.rollback_done",
            "notify:deployment.rolled_back",
            "record:operator.rollback",
            *REPLY,
        ],
    ),
    # Deploying: one answer of many confirms nothing yet; a failure rolls back at once.
    "deploying, one command succeeds": Row(
        P.DEPLOYING, first_answer("succeeded"), P.DEPLOYING, [*RESUMED, "record:command.succeeded"]
    ),
    "deploying, a command fails": Row(
        P.DEPLOYING,
        first_answer("failed"),
        P.ROLLING_BACK,
        [
            *RESUMED,
            "record:command.failed",
            "record:deployment.fail",
            "notify:deployment.rolling_back",
            "cancel_command",
            "send_command*",
        ],
    ),
    "deploying, paused": Row(
        P.DEPLOYING,
        request("pause"),
        P.PAUSED,
        [
            *RESUMED,
            "record:deployment.pause",
            "notify:deployment.paused",
            "record:operator.pause",
            *REPLY,
        ],
    ),
    "deploying, promote refused": Row(
        P.DEPLOYING, request("promote"), P.DEPLOYING, [*RESUMED, "record:operator.promote", *REPLY]
    ),
    # Baking: nothing is judged on data from before the restore.
    "baking, tick": Row(P.BAKING, tick, P.BAKING, RESUMED),
    "baking, promote refused without fresh data": Row(
        P.BAKING, request("promote"), P.BAKING, [*RESUMED, "record:operator.promote", *REPLY]
    ),
    "baking, approve refused": Row(
        P.BAKING, request("approve"), P.BAKING, [*RESUMED, "record:operator.approve", *REPLY]
    ),
    "baking, paused": Row(
        P.BAKING,
        request("pause"),
        P.PAUSED,
        [
            *RESUMED,
            "record:deployment.pause",
            "notify:deployment.paused",
            "record:operator.pause",
            *REPLY,
        ],
    ),
    "baking, rolled back": Row(
        P.BAKING,
        request("rollback"),
        P.ROLLING_BACK,
        [
            *RESUMED,
            "record:deployment.rollback",
            "notify:deployment.rolling_back",
            "send_command*",
            "record:operator.rollback",
            *REPLY,
        ],
    ),
    # Paused and held: resume returns to the bake; a breach or an operator still rolls back.
    "paused, resumed": Row(
        P.PAUSED,
        request("resume"),
        P.BAKING,
        [
            *RESUMED,
            "record:deployment.resume",
            "notify:deployment.resumed",
            "record:operator.resume",
            *REPLY,
        ],
    ),
    "paused, paused again": Row(
        P.PAUSED, request("pause"), P.PAUSED, [*RESUMED, "record:operator.pause", *REPLY]
    ),
    "paused, rolled back": Row(
        P.PAUSED,
        request("rollback"),
        P.ROLLING_BACK,
        [
            *RESUMED,
            "record:deployment.rollback",
            "notify:deployment.rolling_back",
            "send_command*",
            "record:operator.rollback",
            *REPLY,
        ],
    ),
    "held, resumed": Row(
        P.HELD,
        request("resume"),
        P.BAKING,
        [
            *RESUMED,
            "record:deployment.resume",
            "notify:deployment.resumed",
            "record:operator.resume",
            *REPLY,
        ],
    ),
    "held, promote refused": Row(
        P.HELD, request("promote"), P.HELD, [*RESUMED, "record:operator.promote", *REPLY]
    ),
    "held, paused": Row(
        P.HELD,
        request("pause"),
        P.PAUSED,
        [
            *RESUMED,
            "record:deployment.pause",
            "notify:deployment.paused",
            "record:operator.pause",
            *REPLY,
        ],
    ),
    "held, rolled back": Row(
        P.HELD,
        request("rollback"),
        P.ROLLING_BACK,
        [
            *RESUMED,
            "record:deployment.rollback",
            "notify:deployment.rolling_back",
            "send_command*",
            "record:operator.rollback",
            *REPLY,
        ],
    ),
    # The approval gate: approving needs fresh evidence too.
    "awaiting approval, approve refused without fresh data": Row(
        P.AWAITING_APPROVAL,
        request("approve"),
        P.AWAITING_APPROVAL,
        [*RESUMED, "record:operator.approve", *REPLY],
    ),
    "awaiting approval, promote refused": Row(
        P.AWAITING_APPROVAL,
        request("promote"),
        P.AWAITING_APPROVAL,
        [*RESUMED, "record:operator.promote", *REPLY],
    ),
    "awaiting approval, paused": Row(
        P.AWAITING_APPROVAL,
        request("pause"),
        P.PAUSED,
        [
            *RESUMED,
            "record:deployment.pause",
            "notify:deployment.paused",
            "record:operator.pause",
            *REPLY,
        ],
    ),
    "awaiting approval, rolled back": Row(
        P.AWAITING_APPROVAL,
        request("rollback"),
        P.ROLLING_BACK,
        [
            *RESUMED,
            "record:deployment.rollback",
            "notify:deployment.rolling_back",
            "send_command*",
            "record:operator.rollback",
            *REPLY,
        ],
    ),
    # Rolling back: waits for every host; asking again changes nothing.
    "rolling back, tick": Row(P.ROLLING_BACK, tick, P.ROLLING_BACK, RESUMED),
    "rolling back, one host answers": Row(
        P.ROLLING_BACK,
        first_answer("succeeded"),
        P.ROLLING_BACK,
        [*RESUMED, "record:command.succeeded"],
    ),
    "rolling back, rollback again": Row(
        P.ROLLING_BACK,
        request("rollback"),
        P.ROLLING_BACK,
        [*RESUMED, "record:operator.rollback", *REPLY],
    ),
    "rolling back, pause refused": Row(
        P.ROLLING_BACK,
        request("pause"),
        P.ROLLING_BACK,
        [*RESUMED, "record:operator.pause", *REPLY],
    ),
    # Completed: only the guide's manual rollback moves it.
    "completed, tick": Row(P.COMPLETED, tick, P.COMPLETED, []),
    "completed, pause refused": Row(
        P.COMPLETED, request("pause"), P.COMPLETED, ["record:operator.pause", *REPLY]
    ),
    "completed, resume refused": Row(
        P.COMPLETED, request("resume"), P.COMPLETED, ["record:operator.resume", *REPLY]
    ),
    "completed, rolled back": Row(
        P.COMPLETED,
        request("rollback"),
        P.ROLLING_BACK,
        [
            "deployment_changed",
            "record:deployment.rollback",
            "notify:deployment.rolling_back",
            "send_command*",
            "record:operator.rollback",
            *REPLY,
        ],
    ),
}
del P


@pytest.mark.parametrize("name", sorted(TABLE))
def test_row(name: str) -> None:
    row = TABLE[name]
    engine, stored = restored(row.start)
    assert engine.phase("d1") is row.start
    actions = engine.handle(row.event(stored), stored.time + row.after)
    assert (engine.phase("d1"), kinds(actions)) == (row.phase, row.actions)


def test_the_table_starts_from_every_phase_a_deployment_rests_in() -> None:
    resting = {Phase.PROMOTING, Phase.VERIFYING, Phase.ROLLED_BACK, Phase.FAILED, Phase.REFUSED}
    assert {row.start for row in TABLE.values()} == set(Phase) - resting


def test_a_refused_request_answers_why_and_changes_nothing() -> None:
    engine, stored = restored(Phase.BAKING)
    before = engine.deployment("d1")
    actions = engine.handle(request("promote")(stored), stored.time + 1.0)
    replies = [a for a in actions if isinstance(a, OperatorReply)]
    assert len(replies) == 1 and not replies[0].accepted
    after = engine.deployment("d1")
    assert before is not None and after is not None
    assert (after.phase, after.step, after.bake.elapsed) == (
        before.phase,
        before.step,
        before.bake.elapsed,
    )
