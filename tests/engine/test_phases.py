"""The transition table: legal transitions as a table of cases, every illegal pair
refused with a clear error and no change, and structural properties of the table."""

from __future__ import annotations

import pytest

from coordinator.engine import IllegalTransition, Phase, Trigger
from coordinator.engine.driver import Driver
from coordinator.engine.phases import ACTIVE, PREVIOUS, TERMINAL, TRANSITIONS, allowed, transition
from coordinator.engine.state import Effects, EngineState
from shared.errors import RollguardError

from .sim import Sim

P, T = Phase, Trigger

# (phase, trigger, paused_from, expected phase): the rollout's life, read as a story.
LEGAL = [
    (P.PREFLIGHT, T.PREFLIGHT_PASSED, None, P.DEPLOYING),
    (P.PREFLIGHT, T.PREFLIGHT_FAILED, None, P.REFUSED),
    (P.DEPLOYING, T.ACKED, None, P.BAKING),
    (P.BAKING, T.BAKE_PASSED, None, P.PROMOTING),
    (P.BAKING, T.PROMOTE, None, P.PROMOTING),
    (P.BAKING, T.EXTEND, None, P.BAKING),
    (P.BAKING, T.HOLD, None, P.HELD),
    (P.HELD, T.CLEARED, None, P.BAKING),
    (P.HELD, T.RESUME, None, P.BAKING),
    (P.PROMOTING, T.NEXT_STEP, None, P.DEPLOYING),
    (P.PROMOTING, T.APPROVAL_REQUIRED, None, P.AWAITING_APPROVAL),
    (P.PROMOTING, T.STEPS_DONE, None, P.VERIFYING),
    (P.AWAITING_APPROVAL, T.APPROVE, None, P.DEPLOYING),
    (P.VERIFYING, T.VERIFIED, None, P.COMPLETED),
    (P.BAKING, T.PAUSE, None, P.PAUSED),
    (P.PAUSED, T.RESUME, P.BAKING, P.BAKING),
    (P.PAUSED, T.RESUME, P.DEPLOYING, P.DEPLOYING),
    (P.PAUSED, T.RESUME, P.HELD, P.HELD),
    (P.PAUSED, T.RESUME, P.AWAITING_APPROVAL, P.AWAITING_APPROVAL),
    (P.PAUSED, T.FAIL, P.BAKING, P.ROLLING_BACK),
    (P.BAKING, T.FAIL, None, P.ROLLING_BACK),
    (P.DEPLOYING, T.FAIL, None, P.ROLLING_BACK),
    (P.ROLLING_BACK, T.ROLLBACK_DONE, None, P.ROLLED_BACK),
    (P.ROLLING_BACK, T.ROLLBACK_FAILED, None, P.FAILED),
    (P.COMPLETED, T.ROLLBACK, None, P.ROLLING_BACK),
    (P.FAILED, T.ROLLBACK, None, P.ROLLING_BACK),
]


@pytest.mark.parametrize(("phase", "trigger", "paused_from", "expected"), LEGAL)
def test_legal_transitions(
    phase: Phase, trigger: Trigger, paused_from: Phase | None, expected: Phase
) -> None:
    assert transition("d1", phase, trigger, paused_from) is expected


ILLEGAL = [
    (phase, trigger)
    for phase in Phase
    for trigger in Trigger
    if (phase, trigger) not in TRANSITIONS
]


@pytest.mark.parametrize(("phase", "trigger"), ILLEGAL, ids=lambda v: v.value)
def test_every_other_pair_is_refused(phase: Phase, trigger: Trigger) -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition("d1", phase, trigger, None)
    assert caught.value.phase is phase
    assert caught.value.trigger is trigger
    assert f"from {phase.value} on {trigger.value}" in str(caught.value)
    assert isinstance(caught.value, RollguardError)
    assert not allowed(phase, trigger)


def test_resume_of_a_pause_needs_the_phase_it_came_from() -> None:
    with pytest.raises(IllegalTransition):
        transition("d1", P.PAUSED, T.RESUME, None)


def test_terminal_phases_only_accept_a_manual_rollback() -> None:
    for phase in TERMINAL:
        accepted = {t for t in Trigger if (phase, t) in TRANSITIONS}
        if phase in (P.COMPLETED, P.FAILED):
            assert accepted == {T.ROLLBACK}
        else:
            assert accepted == set()


def test_every_phase_where_hosts_may_run_the_new_version_can_roll_back() -> None:
    for phase in ACTIVE - {P.PROMOTING, P.ROLLING_BACK}:
        assert TRANSITIONS[(phase, T.ROLLBACK)] is P.ROLLING_BACK, phase
    # Automatic rollback is armed in every phase where the new version is judged.
    for phase in (P.DEPLOYING, P.BAKING, P.HELD, P.PAUSED, P.AWAITING_APPROVAL, P.VERIFYING):
        assert TRANSITIONS[(phase, T.FAIL)] is P.ROLLING_BACK, phase


def test_every_phase_is_reachable_from_preflight() -> None:
    reached, frontier = {P.PREFLIGHT}, [P.PREFLIGHT]
    while frontier:
        phase = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is phase:
                targets = [P.BAKING, P.DEPLOYING, P.HELD] if target == PREVIOUS else [target]
                for t in targets:
                    if isinstance(t, Phase) and t not in reached:
                        reached.add(t)
                        frontier.append(t)
    assert reached == set(Phase)


def test_an_illegal_trigger_on_a_live_deployment_changes_nothing() -> None:
    sim = Sim(hosts=4)
    sim.run_until(60)
    assert sim.start("d1", "2.0.0").accepted
    sim.run_until(200)
    assert sim.phase("d1") == "baking"
    engine_state: EngineState = sim.engine._state
    dep = engine_state.deployments["d1"]
    before = dep.copy()
    out = Effects()
    with pytest.raises(IllegalTransition):
        Driver(engine_state).fire(dep, T.VERIFIED, sim.now, out, "not now")
    assert dep == before
    assert out.actions == []
    assert out.changed == {}
