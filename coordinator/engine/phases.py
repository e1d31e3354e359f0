"""Every phase a deployment goes through, and the one table of legal transitions.

Theory of operation
-------------------
A deployment is a plan of steps (canary: 10 %, 25 %, 50 %, 100 %; blue-green: deploy to
the inactive slot, then switch; direct: every host at once). Each step runs the same
cycle:

    DEPLOYING ──ACKED──▶ BAKING ──BAKE_PASSED──▶ PROMOTING ──NEXT_STEP──▶ DEPLOYING …
                            │                       ├─APPROVAL_REQUIRED─▶ AWAITING_APPROVAL
                            │                       └─STEPS_DONE─▶ VERIFYING ──▶ COMPLETED
                            └─HOLD─▶ HELD ──CLEARED / RESUME─▶ BAKING

DEPLOYING waits until every command of the step is acknowledged and the host reports
the new state. BAKING runs the analysis for the step's bake time (the last step's bake
is the post-promotion watch); its clock stops whenever the deployment leaves BAKING, so
a hold or a pause never counts as bake time. PROMOTING is transient: it only chooses
the next phase. HELD is an automatic hold (a fleet-wide incident, missing data, an
inconclusive verdict after the one extension); PAUSED is an operator's pause and
resumes into the phase it was paused from.

Safety never pauses: from every phase where hosts may run the new version, a failed
rule or a failed command (FAIL) or an operator (ROLLBACK) goes to ROLLING_BACK, which
returns every host that got the new version to the last stable one and verifies it.
A COMPLETED deployment can still be rolled back by an operator; a FAILED one (its
rollback could not be verified) can be rolled back again.

An event that a phase has no entry for is a bug or a bad request: ``transition`` raises
IllegalTransition and changes nothing. Operator requests are checked with
``allowed`` first and refused with a reason instead.

Every phase change goes through ``fire``: it takes the table's transition, keeps the
bake clock, and records the change with its evidence (and a notification if asked).
The driver adds what follows a change (a finished deployment's history, the cohorts
of the new phase); nothing else sets ``phase``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol

from coordinator.engine.actions import Severity
from coordinator.engine.deployment import Deployment, Pause
from coordinator.engine.errors import EngineError
from shared.kinds import EventKind
from shared.phases import TERMINAL, Phase

__all__ = [
    "ACTIVE",
    "PREVIOUS",
    "RECORDED_AS",
    "TERMINAL",
    "TRANSITIONS",
    "Fire",
    "IllegalTransition",
    "Phase",
    "Trigger",
    "allowed",
    "fire",
    "transition",
]


class Trigger(enum.Enum):
    PREFLIGHT_PASSED = "preflight_passed"
    PREFLIGHT_FAILED = "preflight_failed"
    ACKED = "acked"
    BAKE_PASSED = "bake_passed"
    EXTEND = "extend"
    HOLD = "hold"
    CLEARED = "cleared"
    PROMOTE = "promote"
    APPROVE = "approve"
    NEXT_STEP = "next_step"
    APPROVAL_REQUIRED = "approval_required"
    STEPS_DONE = "steps_done"
    VERIFIED = "verified"
    PAUSE = "pause"
    RESUME = "resume"
    FAIL = "fail"
    ROLLBACK = "rollback"
    ROLLBACK_DONE = "rollback_done"
    ROLLBACK_FAILED = "rollback_failed"


class IllegalTransition(EngineError):
    """A deployment in ``phase`` cannot take ``trigger``; nothing was changed."""

    def __init__(self, deployment: str, phase: Phase, trigger: Trigger) -> None:
        self.deployment = deployment
        self.phase = phase
        self.trigger = trigger
        super().__init__(
            f"deployment {deployment}: no transition from {phase.value} on {trigger.value}"
        )


# The target of (PAUSED, RESUME): the phase the deployment was paused from.
PREVIOUS: Final = "previous"
Target = Phase | Literal["previous"]

P, T = Phase, Trigger
TRANSITIONS: Final[dict[tuple[Phase, Trigger], Target]] = {
    # Before any host is touched: preflight commands and the host gate.
    (P.PREFLIGHT, T.PREFLIGHT_PASSED): P.DEPLOYING,
    (P.PREFLIGHT, T.PREFLIGHT_FAILED): P.REFUSED,
    (P.PREFLIGHT, T.ROLLBACK): P.ROLLING_BACK,
    # A step's commands are out; hosts already on the new version are still judged.
    (P.DEPLOYING, T.ACKED): P.BAKING,
    (P.DEPLOYING, T.PAUSE): P.PAUSED,
    (P.DEPLOYING, T.FAIL): P.ROLLING_BACK,
    (P.DEPLOYING, T.ROLLBACK): P.ROLLING_BACK,
    # The analysis window of a step.
    (P.BAKING, T.BAKE_PASSED): P.PROMOTING,
    (P.BAKING, T.PROMOTE): P.PROMOTING,
    (P.BAKING, T.EXTEND): P.BAKING,
    (P.BAKING, T.HOLD): P.HELD,
    (P.BAKING, T.PAUSE): P.PAUSED,
    (P.BAKING, T.FAIL): P.ROLLING_BACK,
    (P.BAKING, T.ROLLBACK): P.ROLLING_BACK,
    # Automatic holds: the bake clock is stopped, the analysis still runs.
    (P.HELD, T.CLEARED): P.BAKING,
    (P.HELD, T.RESUME): P.BAKING,
    (P.HELD, T.PROMOTE): P.PROMOTING,
    (P.HELD, T.PAUSE): P.PAUSED,
    (P.HELD, T.FAIL): P.ROLLING_BACK,
    (P.HELD, T.ROLLBACK): P.ROLLING_BACK,
    # Operator pause: no progress, but a breach still rolls back.
    (P.PAUSED, T.RESUME): PREVIOUS,
    (P.PAUSED, T.FAIL): P.ROLLING_BACK,
    (P.PAUSED, T.ROLLBACK): P.ROLLING_BACK,
    # Transient: where a passed step leads.
    (P.PROMOTING, T.NEXT_STEP): P.DEPLOYING,
    (P.PROMOTING, T.APPROVAL_REQUIRED): P.AWAITING_APPROVAL,
    (P.PROMOTING, T.STEPS_DONE): P.VERIFYING,
    # The manual gate before 100 %; the current cohort is still judged while waiting.
    (P.AWAITING_APPROVAL, T.APPROVE): P.DEPLOYING,
    (P.AWAITING_APPROVAL, T.PAUSE): P.PAUSED,
    (P.AWAITING_APPROVAL, T.FAIL): P.ROLLING_BACK,
    (P.AWAITING_APPROVAL, T.ROLLBACK): P.ROLLING_BACK,
    # Every host must report the new version and be healthy.
    (P.VERIFYING, T.VERIFIED): P.COMPLETED,
    (P.VERIFYING, T.PAUSE): P.PAUSED,
    (P.VERIFYING, T.FAIL): P.ROLLING_BACK,
    (P.VERIFYING, T.ROLLBACK): P.ROLLING_BACK,
    # Returning to the last stable version, then verifying it.
    (P.ROLLING_BACK, T.ROLLBACK_DONE): P.ROLLED_BACK,
    (P.ROLLING_BACK, T.ROLLBACK_FAILED): P.FAILED,
    # After the fact: the guide's manual rollback, and a retry of a failed rollback.
    (P.COMPLETED, T.ROLLBACK): P.ROLLING_BACK,
    (P.FAILED, T.ROLLBACK): P.ROLLING_BACK,
}
del P, T

# How each transition is recorded in the event log: "deployment.<trigger>".
RECORDED_AS: Final[dict[Trigger, EventKind]] = {
    Trigger.PREFLIGHT_PASSED: EventKind.DEPLOYMENT_PREFLIGHT_PASSED,
    Trigger.PREFLIGHT_FAILED: EventKind.DEPLOYMENT_PREFLIGHT_FAILED,
    Trigger.ACKED: EventKind.DEPLOYMENT_ACKED,
    Trigger.BAKE_PASSED: EventKind.DEPLOYMENT_BAKE_PASSED,
    Trigger.EXTEND: EventKind.DEPLOYMENT_EXTEND,
    Trigger.HOLD: EventKind.DEPLOYMENT_HOLD,
    Trigger.CLEARED: EventKind.DEPLOYMENT_CLEARED,
    Trigger.PROMOTE: EventKind.DEPLOYMENT_PROMOTE,
    Trigger.APPROVE: EventKind.DEPLOYMENT_APPROVE,
    Trigger.NEXT_STEP: EventKind.DEPLOYMENT_NEXT_STEP,
    Trigger.APPROVAL_REQUIRED: EventKind.DEPLOYMENT_APPROVAL_REQUIRED,
    Trigger.STEPS_DONE: EventKind.DEPLOYMENT_STEPS_DONE,
    Trigger.VERIFIED: EventKind.DEPLOYMENT_VERIFIED,
    Trigger.PAUSE: EventKind.DEPLOYMENT_PAUSE,
    Trigger.RESUME: EventKind.DEPLOYMENT_RESUME,
    Trigger.FAIL: EventKind.DEPLOYMENT_FAIL,
    Trigger.ROLLBACK: EventKind.DEPLOYMENT_ROLLBACK,
    Trigger.ROLLBACK_DONE: EventKind.DEPLOYMENT_ROLLBACK_DONE,
    Trigger.ROLLBACK_FAILED: EventKind.DEPLOYMENT_ROLLBACK_FAILED,
}

# Phases in which a deployment owns its environment: no second one may start there.
ACTIVE: Final = frozenset(set(Phase) - TERMINAL)


def allowed(phase: Phase, trigger: Trigger) -> bool:
    return (phase, trigger) in TRANSITIONS


def transition(deployment: str, phase: Phase, trigger: Trigger, paused_from: Phase | None) -> Phase:
    """The phase after ``trigger``; raise IllegalTransition (and change nothing) when the
    table has no entry. ``paused_from`` resolves PAUSED's RESUME."""
    target = TRANSITIONS.get((phase, trigger))
    if target is None:
        raise IllegalTransition(deployment, phase, trigger)
    if target == PREVIOUS:
        if paused_from is None:
            raise IllegalTransition(deployment, phase, trigger)
        return paused_from
    assert isinstance(target, Phase)
    return target


class Log(Protocol):
    """Where ``fire`` writes: the outbox of the event being handled (state.Effects)."""

    def touch(self, deployment: Deployment) -> None: ...

    def record(
        self,
        now: float,
        kind: EventKind,
        message: str,
        *,
        deployment: str | None = None,
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> None: ...

    def notify(
        self,
        now: float,
        kind: EventKind,
        severity: Severity,
        message: str,
        *,
        environment: str | None = None,
        deployment: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> None: ...


def fire(
    dep: Deployment,
    trigger: Trigger,
    now: float,
    out: Log,
    message: str,
    *,
    evidence: Mapping[str, Any] | None = None,
    actor: str | None = None,
    notify: tuple[EventKind, Severity] | None = None,
) -> Phase:
    """Take one transition of the table (raising, with nothing changed, if illegal),
    keep the bake clock, record it with its evidence and notify if asked; return the
    new phase.

    The record's evidence is the transition (trigger, from, to, step, bake clock)
    followed by ``evidence``: together, shared.evidence's type of its kind.
    """
    before = dep.phase
    after = transition(dep.id, before, trigger, dep.paused_from)
    if before is Phase.BAKING and after is not Phase.BAKING:
        dep.bake.stop(now)
    dep.pause = Pause(resume_to=before) if after is Phase.PAUSED else None
    dep.phase = after
    if after is Phase.BAKING and before is not Phase.BAKING:
        dep.bake.since = now
    if after not in (Phase.HELD, Phase.PAUSED):
        # A pause from a hold keeps its reason: resuming returns to that hold.
        dep.hold = None
    dep.updated = now
    dep.summary = message
    out.touch(dep)
    full = {
        "trigger": trigger.value,
        "from": before.value,
        "to": after.value,
        "step": dep.step,
        "bake_elapsed": dep.bake.at(now),
        "bake_length": dep.bake.length,
        **(evidence or {}),
    }
    out.record(now, RECORDED_AS[trigger], message, deployment=dep.id, actor=actor, evidence=full)
    if notify is not None:
        kind, severity = notify
        out.notify(
            now,
            kind,
            severity,
            f"{dep.id} ({dep.environment}, {dep.version}): {message}",
            environment=dep.environment,
            deployment=dep.id,
            evidence=full,
        )
    return after


class Fire(Protocol):
    """``fire`` and what follows a change, as the driver gives it to the rollback."""

    def __call__(
        self,
        dep: Deployment,
        trigger: Trigger,
        now: float,
        out: Log,
        message: str,
        *,
        evidence: Mapping[str, Any] | None = None,
        actor: str | None = None,
        notify: tuple[EventKind, Severity] | None = None,
    ) -> None: ...
