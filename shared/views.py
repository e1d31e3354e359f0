"""What the coordinator's HTTP API returns, as typed Structs: the one contract between
the daemon that encodes them and the CLI, the live follower, the demo and the report
that decode them.

The engine keeps its own internal records; the daemon converts them to these views at
the API's edge (``coordinator/daemon/views.py``), so renaming an engine field cannot
silently change what operators' tools read. Every view refuses unknown fields: a field
added on one side only fails loudly in the tests instead of being ignored.

The JSON shapes are the API's since its first version: envelopes such as
``{"deployment": {...}}`` and ``{"events": [...]}``, a deployment's phase under the
key ``state``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.config.coordinator import Strategy
from shared.evidence import AlertChange, Evidence, HoldReason, decode_evidence
from shared.kinds import EventKind
from shared.messages import Action, Environment, Slot
from shared.phases import Phase

# Why a command was sent: to roll the new version out, to take it back, or to bring a
# host that came back to the version it should run now.
Purpose = Literal["rollout", "rollback", "converge"]
# Where a command stands (shared.evidence.CommandState is a decision's record of one).
CommandStatus = Literal[
    "pending", "accepted", "succeeded", "failed", "rejected", "timed_out", "cancelled"
]


class View(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every API view: keyword-only, immutable, strict on decode."""


# -- hosts ----------------------------------------------------------------------------


class CheckView(View, kw_only=True, frozen=True):
    """A host's latest sample of one check."""

    ok: bool
    time: float
    values: dict[str, float]
    error: str | None = None


class HostView(View, kw_only=True, frozen=True):
    """One host as the coordinator sees it (``GET /api/v1/hosts``)."""

    host: str
    online: bool
    session: int
    environment: str
    version: str | None
    slot: str | None
    labels: dict[str, str]
    agent_version: str
    last_seen: float
    checks: dict[str, CheckView] = {}
    batches: int = 0
    last_seq: int | None = None

    def value(self, check: str, name: str) -> float | None:
        """The latest value ``name`` of ``check``, if the host reported it."""
        sample = self.checks.get(check)
        return None if sample is None else sample.values.get(name)


class HostList(View, kw_only=True, frozen=True):
    hosts: list[HostView]


# -- deployments ----------------------------------------------------------------------


class OrderView(View, kw_only=True, frozen=True):
    """One command a step sends to one host."""

    host: str
    action: Action
    version: str | None = None
    slot: Slot | None = None


class StepView(View, kw_only=True, frozen=True):
    """One step of a deployment's plan."""

    index: int
    name: str
    percent: float
    orders: list[OrderView]
    # Seconds of analysis after every order is confirmed; the last step's is the watch.
    bake: float
    # Waits for an operator's approve before its orders are sent.
    approval: bool = False


class TargetView(View, kw_only=True, frozen=True):
    """A host the deployment covers, as it was when the deployment started."""

    host: str
    from_version: str | None = None
    from_slot: Slot | None = None
    labels: dict[str, str] = {}


class CommandView(View, kw_only=True, frozen=True):
    """A command the deployment sent, and the host's answer so far."""

    id: str
    host: str
    purpose: Purpose
    step: int
    action: Action
    version: str | None = None
    slot: Slot | None = None
    issued: float
    state: CommandStatus = "pending"
    detail: str = ""
    answered: float | None = None


class PreflightView(View, kw_only=True, frozen=True):
    name: str
    ok: bool | None = None
    output_tail: str = ""


class DeploymentView(View, kw_only=True, frozen=True):
    """One deployment (``GET /api/v1/deployments/{id}``): its plan, where it stands, and
    the numbers derived at the moment of the request (bake remaining, current step)."""

    id: str
    environment: Environment
    strategy: Strategy
    version: str
    # The version every target host ran at the start: the rollback target.
    from_version: str | None
    actor: str
    reason: str = ""
    created: float
    updated: float
    finished: float | None = None
    phase: Phase = msgspec.field(name="state")
    # The phase a pause interrupted; why the deployment holds for an operator.
    paused_from: Phase | None = None
    hold_reason: HoldReason | None = None
    steps: list[StepView] = []
    # The index of the current step, its name and share of the fleet.
    step: int = 0
    step_name: str | None = None
    percent: float | None = None
    steps_total: int = 0
    targets: dict[str, TargetView] = {}
    commands: dict[str, CommandView] = {}
    preflight: list[PreflightView] = []
    # Post-deployment verification commands (from VERIFYING on), each with its outcome.
    verification: list[PreflightView] = []
    # The current step's bake, in seconds, at the time of the request.
    bake_elapsed: float = 0.0
    bake_length: float = 0.0
    bake_remaining: float = 0.0
    rollback_version: str | None = None
    rollback_reason: str | None = None
    rollback_started: float | None = None
    # Target hosts it could not reach (offline or silent past the grace): not commanded
    # or waited for; each is converged to the version it should run when it returns.
    unreachable: list[str] = []
    # The last decision in words.
    summary: str = ""

    @property
    def current(self) -> StepView | None:
        """The step the deployment is at, if it has one."""
        return self.steps[self.step] if 0 <= self.step < len(self.steps) else None

    @property
    def stable_version(self) -> str | None:
        """The version a rollback returns to."""
        return self.rollback_version or self.from_version


class DeploymentReply(View, kw_only=True, frozen=True):
    deployment: DeploymentView


class DeploymentList(View, kw_only=True, frozen=True):
    deployments: list[DeploymentView]


class OperatorReplyView(View, kw_only=True, frozen=True):
    """The answer to an accepted operator request (deploy, promote, rollback, pause,
    resume, approve); a refused one is an :class:`ErrorView` with status 409."""

    accepted: bool
    changed: bool
    message: str
    reasons: list[str] = []
    deployment: DeploymentView | None = None


class ErrorView(View, kw_only=True, frozen=True, omit_defaults=True):
    """Any error: the message, and the engine's reasons for a refusal (left out when
    there are none)."""

    error: str
    reasons: list[str] = []


# -- events and alerts ----------------------------------------------------------------


class EventView(View, kw_only=True, frozen=True):
    """One stored event (``GET /api/v1/deployments/{id}/events``, and each server-sent
    event of ``GET /api/v1/events``): a decision, a command, a request or an alert,
    with the evidence behind it."""

    seq: int
    time: float
    kind: EventKind
    message: str
    deployment: str | None = None
    host: str | None = None
    actor: str | None = None
    # As stored: a JSON object whose type follows from ``kind`` (see facts()).
    evidence: dict[str, Any] = {}

    def facts(self) -> Evidence:
        """The evidence as its kind's type (shared.evidence.EVIDENCE_TYPES);
        msgspec.ValidationError if it is not of that type."""
        return decode_evidence(self.kind, self.evidence)


class EventList(View, kw_only=True, frozen=True):
    events: list[EventView]


class DeliveryView(View, kw_only=True, frozen=True):
    """One notifier delivery of an alert's notification to one webhook (its URL shown
    only up to the host: the path carries the receiver's secret)."""

    target: str
    # The notification's kind: alert_fired or alert_resolved.
    kind: str
    outcome: Literal["sent", "failed", "dropped"]
    time: float


class AlertView(View, kw_only=True, frozen=True):
    """A threshold alert, open or resolved, with the evidence it fired on (its
    ``alert.fired`` event's)."""

    key: str
    host: str | None = None
    rule: str
    environment: str | None = None
    # When it fired, and when it resolved (None while it is open).
    started: float
    resolved: float | None = None
    message: str = ""
    evidence: AlertChange
    # Who was told: the webhook deliveries of this firing since the coordinator
    # started (every alert is also logged at warning, so the journal has it).
    told: list[DeliveryView] = []


class AlertList(View, kw_only=True, frozen=True):
    """``GET /api/v1/alerts``: the firing alerts, then the recent resolved ones, newest
    first in each."""

    alerts: list[AlertView]


# -- the dashboard's fleet --------------------------------------------------------------


class FleetGroupView(View, kw_only=True, frozen=True):
    """The hosts of one environment and zone, summarised."""

    environment: str
    zone: str
    hosts: int
    online: int
    # Online, with every check passing in its last sample.
    healthy: int
    # Version -> how many hosts of the group run it ("-" for none yet).
    versions: dict[str, int]


class FleetView(View, kw_only=True, frozen=True):
    """``GET /api/v1/fleet``: the whole fleet summarised by environment and zone, and
    one page of the hosts that match the filter (never all of 10,000)."""

    total: int
    online: int
    healthy: int
    groups: list[FleetGroupView]
    # The hosts matching the filter, and the page of them shown.
    matched: int
    page: int
    pages: int
    hosts: list[HostView]


class StreamError(View, kw_only=True, frozen=True):
    """The ``error`` event the stream sends before it ends (the client resumes with
    ``?after=SEQ``)."""

    error: str
