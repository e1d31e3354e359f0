"""The kinds of what the coordinator records and whom it tells: one vocabulary each.

``EventKind`` names every entry of the event log (what the engine records, and the
shell's ``analysis.window``) and every notification the engine asks for. The values are
the strings stored in the log and published on the MQTT events topic, so they never
change; a new kind is a new member. ``NotifyKind`` is the smaller vocabulary webhooks
speak. ``notify_kind`` maps one to the other and is total: mypy refuses it if a member
of ``EventKind`` is left out, so a new kind cannot silently miss its webhook.
"""

from __future__ import annotations

import enum
from typing import Final, assert_never


class EventKind(enum.StrEnum):
    # A transition of the table, one per trigger: "deployment.<trigger>".
    DEPLOYMENT_PREFLIGHT_PASSED = "deployment.preflight_passed"
    DEPLOYMENT_PREFLIGHT_FAILED = "deployment.preflight_failed"
    DEPLOYMENT_ACKED = "deployment.acked"
    DEPLOYMENT_BAKE_PASSED = "deployment.bake_passed"
    DEPLOYMENT_EXTEND = "deployment.extend"
    DEPLOYMENT_HOLD = "deployment.hold"
    DEPLOYMENT_CLEARED = "deployment.cleared"
    DEPLOYMENT_PROMOTE = "deployment.promote"
    DEPLOYMENT_APPROVE = "deployment.approve"
    DEPLOYMENT_NEXT_STEP = "deployment.next_step"
    DEPLOYMENT_APPROVAL_REQUIRED = "deployment.approval_required"
    DEPLOYMENT_STEPS_DONE = "deployment.steps_done"
    DEPLOYMENT_VERIFIED = "deployment.verified"
    DEPLOYMENT_PAUSE = "deployment.pause"
    DEPLOYMENT_RESUME = "deployment.resume"
    DEPLOYMENT_FAIL = "deployment.fail"
    DEPLOYMENT_ROLLBACK = "deployment.rollback"
    DEPLOYMENT_ROLLBACK_DONE = "deployment.rollback_done"
    DEPLOYMENT_ROLLBACK_FAILED = "deployment.rollback_failed"
    # Other facts of a deployment.
    DEPLOYMENT_CREATED = "deployment.created"
    DEPLOYMENT_REFUSED = "deployment.refused"
    DEPLOYMENT_MISSING = "deployment.missing"
    DEPLOYMENT_FLEET = "deployment.fleet"
    DEPLOYMENT_RESUMED_AFTER_RESTART = "deployment.resumed_after_restart"
    # Notifications only: how a state change is announced (past tense, for people).
    DEPLOYMENT_STARTED = "deployment.started"
    DEPLOYMENT_PROMOTED = "deployment.promoted"
    DEPLOYMENT_PAUSED = "deployment.paused"
    DEPLOYMENT_HELD = "deployment.held"
    DEPLOYMENT_RESUMED = "deployment.resumed"
    DEPLOYMENT_APPROVAL_NEEDED = "deployment.approval_needed"
    DEPLOYMENT_ROLLING_BACK = "deployment.rolling_back"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_COMPLETED = "deployment.completed"
    # A host that came back is commanded to the version it should run now.
    HOST_CONVERGING = "host.converging"
    # An agent's answer to a command ("command.<state>"), or one that fits no command.
    COMMAND_SUCCEEDED = "command.succeeded"
    COMMAND_FAILED = "command.failed"
    COMMAND_REJECTED = "command.rejected"
    COMMAND_UNKNOWN = "command.unknown"
    COMMAND_HOST_MISMATCH = "command.host_mismatch"
    COMMAND_LATE = "command.late"
    # A person's request ("operator.<action>"), accepted or refused.
    OPERATOR_START = "operator.start"
    OPERATOR_PROMOTE = "operator.promote"
    OPERATOR_ROLLBACK = "operator.rollback"
    OPERATOR_PAUSE = "operator.pause"
    OPERATOR_RESUME = "operator.resume"
    OPERATOR_APPROVE = "operator.approve"
    # One configured preflight command's outcome.
    PREFLIGHT_REPORTED = "preflight.reported"
    PREFLIGHT_IGNORED = "preflight.ignored"
    # Post-deployment verification: started (every host on the new version), one
    # configured command's outcome, or an outcome that came too late to count.
    VERIFICATION_STARTED = "verification.started"
    VERIFICATION_REPORTED = "verification.reported"
    VERIFICATION_IGNORED = "verification.ignored"
    # The fleet monitor.
    ALERT_FIRED = "alert.fired"
    ALERT_RESOLVED = "alert.resolved"
    # Recorded by the shell, not the engine: each cohort's pooled numbers over a span.
    ANALYSIS_WINDOW = "analysis.window"


class NotifyKind(enum.StrEnum):
    """What a webhook is told, in the words people read (coordinator/daemon/notify.py)."""

    DEPLOYMENT_STARTED = "deployment_started"
    STEP_PROMOTED = "step_promoted"
    PAUSED = "paused"
    HELD = "held"
    RESUMED = "resumed"
    APPROVAL_NEEDED = "approval_needed"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUSED = "refused"
    ALERT_FIRED = "alert_fired"
    ALERT_RESOLVED = "alert_resolved"


def notify_kind(kind: EventKind) -> NotifyKind | None:
    """The webhook kind a notification of ``kind`` is sent as; None: not sent.

    One state change, one message: a rollback is announced when it is decided, with the
    reason and evidence people need then (its verified end is in the event log; a
    rollback that cannot be verified is a failure), and an automatic hold waits for an
    operator like a pause does but is not called one.
    """
    K, N = EventKind, NotifyKind
    match kind:
        case K.DEPLOYMENT_STARTED:
            return N.DEPLOYMENT_STARTED
        case K.DEPLOYMENT_PROMOTED:
            return N.STEP_PROMOTED
        case K.DEPLOYMENT_PAUSED:
            return N.PAUSED
        case K.DEPLOYMENT_HELD:
            return N.HELD
        case K.DEPLOYMENT_RESUMED:
            return N.RESUMED
        case K.DEPLOYMENT_APPROVAL_NEEDED:
            return N.APPROVAL_NEEDED
        case K.DEPLOYMENT_ROLLING_BACK:
            return N.ROLLED_BACK
        case K.DEPLOYMENT_ROLLBACK_FAILED:
            return N.FAILED
        case K.DEPLOYMENT_REFUSED:
            return N.REFUSED
        case K.DEPLOYMENT_COMPLETED:
            return N.COMPLETED
        # Missing data or a fleet-wide breach outside a bake: nothing to decide, but an
        # alert.
        case K.DEPLOYMENT_MISSING | K.DEPLOYMENT_FLEET | K.ALERT_FIRED:
            return N.ALERT_FIRED
        case K.ALERT_RESOLVED:
            return N.ALERT_RESOLVED
        # Told when it was decided (rolling_back); the event log has its end.
        case K.DEPLOYMENT_ROLLED_BACK:
            return None
        # Kinds of the event log only: never sent to webhooks.
        case (
            K.DEPLOYMENT_PREFLIGHT_PASSED
            | K.DEPLOYMENT_PREFLIGHT_FAILED
            | K.DEPLOYMENT_ACKED
            | K.DEPLOYMENT_BAKE_PASSED
            | K.DEPLOYMENT_EXTEND
            | K.DEPLOYMENT_HOLD
            | K.DEPLOYMENT_CLEARED
            | K.DEPLOYMENT_PROMOTE
            | K.DEPLOYMENT_APPROVE
            | K.DEPLOYMENT_NEXT_STEP
            | K.DEPLOYMENT_APPROVAL_REQUIRED
            | K.DEPLOYMENT_STEPS_DONE
            | K.DEPLOYMENT_VERIFIED
            | K.DEPLOYMENT_PAUSE
            | K.DEPLOYMENT_RESUME
            | K.DEPLOYMENT_FAIL
            | K.DEPLOYMENT_ROLLBACK
            | K.DEPLOYMENT_ROLLBACK_DONE
            | K.DEPLOYMENT_CREATED
            | K.DEPLOYMENT_RESUMED_AFTER_RESTART
            | K.HOST_CONVERGING
            | K.COMMAND_SUCCEEDED
            | K.COMMAND_FAILED
            | K.COMMAND_REJECTED
            | K.COMMAND_UNKNOWN
            | K.COMMAND_HOST_MISMATCH
            | K.COMMAND_LATE
            | K.OPERATOR_START
            | K.OPERATOR_PROMOTE
            | K.OPERATOR_ROLLBACK
            | K.OPERATOR_PAUSE
            | K.OPERATOR_RESUME
            | K.OPERATOR_APPROVE
            | K.PREFLIGHT_REPORTED
            | K.PREFLIGHT_IGNORED
            | K.VERIFICATION_STARTED
            | K.VERIFICATION_REPORTED
            | K.VERIFICATION_IGNORED
            | K.ANALYSIS_WINDOW
        ):
            return None
        case _:
            assert_never(kind)


# The kinds the engine sends as notifications (Notify); all but one reach webhooks.
NOTICES: Final[frozenset[EventKind]] = frozenset(
    {
        EventKind.DEPLOYMENT_STARTED,
        EventKind.DEPLOYMENT_PROMOTED,
        EventKind.DEPLOYMENT_PAUSED,
        EventKind.DEPLOYMENT_HELD,
        EventKind.DEPLOYMENT_RESUMED,
        EventKind.DEPLOYMENT_APPROVAL_NEEDED,
        EventKind.DEPLOYMENT_ROLLING_BACK,
        EventKind.DEPLOYMENT_ROLLED_BACK,
        EventKind.DEPLOYMENT_ROLLBACK_FAILED,
        EventKind.DEPLOYMENT_REFUSED,
        EventKind.DEPLOYMENT_COMPLETED,
        EventKind.DEPLOYMENT_MISSING,
        EventKind.DEPLOYMENT_FLEET,
        EventKind.ALERT_FIRED,
        EventKind.ALERT_RESOLVED,
    }
)
