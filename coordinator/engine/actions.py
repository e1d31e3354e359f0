"""What the engine asks the shell to do: one tagged union, returned by ``handle()``.

Actions are returned in the order they must happen: a deployment's snapshot
(DeploymentChanged) comes before the commands it records, so a shell that persists
before publishing never sends a command its store does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

from coordinator.engine.deployment import Deployment, decode_body
from shared.config.coordinator import PreflightCommand, Strategy
from shared.kinds import EventKind
from shared.messages import Action, Slot
from shared.phases import Phase


class _Action(Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of engine actions."""


class SendCommand(_Action, frozen=True, kw_only=True, tag="send_command"):
    """Sign and publish a command on ``hosts/{host}/cmd``; re-publish the same id until
    the agent answers, and stop at its expiry or at a CancelCommand for the id."""

    command_id: str
    deployment_id: str
    host: str
    action: Action
    version: str | None = None
    slot: Slot | None = None
    issued: float


class CancelCommand(_Action, frozen=True, kw_only=True, tag="cancel_command"):
    """Stop re-publishing a command: it was superseded (a rollback) or timed out."""

    command_id: str
    deployment_id: str
    host: str
    reason: str


class RunPreflight(_Action, frozen=True, kw_only=True, tag="run_preflight"):
    """Run these commands and report each with PreflightReported."""

    deployment_id: str
    commands: list[PreflightCommand]


class RunVerification(_Action, frozen=True, kw_only=True, tag="run_verification"):
    """Run these post-deployment verification commands (in order, stopping at the first
    failure) and report each with VerificationReported."""

    deployment_id: str
    commands: list[PreflightCommand]


class Record(_Action, frozen=True, kw_only=True, tag="record"):
    """Append to the event log: every decision, with the evidence behind it."""

    time: float
    kind: EventKind
    message: str
    deployment: str | None = None
    host: str | None = None
    actor: str | None = None
    evidence: dict[str, Any] = {}


Severity = Literal["info", "warning", "critical"]


class Notify(_Action, frozen=True, kw_only=True, tag="notify"):
    """Tell people (the environment's webhooks): one per state change, never repeated."""

    time: float
    # One of shared.kinds.NOTICES; shared.kinds.notify_kind names its webhook kind.
    kind: EventKind
    severity: Severity
    message: str
    environment: str | None = None
    deployment: str | None = None
    host: str | None = None
    evidence: dict[str, Any] = {}


class DeploymentChanged(_Action, frozen=True, kw_only=True, tag="deployment_changed"):
    """Persist this deployment's state: its checkpoint, the bake clock folded to the
    event's time (Deployment.checkpoint), as the store keeps it (``body``, JSON), with
    the fields a store lists deployments by. Also sent on every tick while a bake runs,
    so a restore keeps the remaining bake time to within one tick."""

    deployment_id: str
    environment: str
    strategy: Strategy
    version: str
    phase: Phase
    created: float
    updated: float
    body: bytes

    @classmethod
    def of(cls, deployment: Deployment, now: float) -> DeploymentChanged:
        return cls(
            deployment_id=deployment.id,
            environment=deployment.environment,
            strategy=deployment.strategy,
            version=deployment.version,
            phase=deployment.phase,
            created=deployment.created,
            updated=deployment.updated,
            body=deployment.checkpoint_body(now),
        )

    @property
    def deployment(self) -> Deployment:
        """The checkpoint, decoded (for tests and tools; the store takes ``body``)."""
        return decode_body(self.body)


class OperatorReply(_Action, frozen=True, kw_only=True, tag="operator_reply"):
    """The answer to an OperatorRequest, for the API to return: accepted (possibly as a
    no-op, ``changed`` False) or refused with the reasons, and nothing changed."""

    deployment_id: str
    action: str
    accepted: bool
    changed: bool
    message: str
    reasons: list[str] = []


EngineAction = (
    SendCommand
    | CancelCommand
    | RunPreflight
    | RunVerification
    | Record
    | Notify
    | DeploymentChanged
    | OperatorReply
)
