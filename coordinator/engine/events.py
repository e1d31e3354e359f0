"""What the shell feeds the engine: one tagged union, each event with ``handle(event, now)``.

The wire messages arrive already validated (shared.messages.decode); the engine trusts
their shape but not their meaning (a result for an unknown command, a stale status).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.config.coordinator import Strategy
from shared.messages import CommandResult, Environment, HostId, HostStatus, MetricBatch, Version

# Deployment ids become part of command ids ("<deployment>-c0001": the wire wants
# ``^[A-Za-z0-9_-]{8,64}$``), so they are kept to that alphabet and 2 to 48 characters.
DEPLOYMENT_ID_PATTERN = r"^[A-Za-z0-9_-]{2,48}$"
DeploymentId = Annotated[str, Meta(pattern=DEPLOYMENT_ID_PATTERN)]

OperatorAction = Literal["start", "promote", "rollback", "pause", "resume", "approve"]


class _Event(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of engine events."""


class HostStatusReceived(_Event, frozen=True, kw_only=True, tag="host_status"):
    status: HostStatus


class MetricsReceived(_Event, frozen=True, kw_only=True, tag="metrics"):
    batch: MetricBatch


class CommandResultReceived(_Event, frozen=True, kw_only=True, tag="command_result"):
    result: CommandResult


class OperatorRequest(_Event, frozen=True, kw_only=True, tag="operator"):
    """A person's request, from the CLI or the API.

    ``start`` needs ``version``; ``environment`` defaults to production and ``strategy``
    to the environment's; ``hosts`` narrows the targets to those hosts of the
    environment. ``step`` makes promote and approve idempotent: a retried request for a
    step already past is acknowledged without skipping the next step's bake.
    """

    deployment_id: DeploymentId
    action: OperatorAction
    actor: Annotated[str, Meta(min_length=1, max_length=128)]
    reason: Annotated[str, Meta(max_length=1024)] = ""
    version: Version | None = None
    environment: Environment | None = None
    strategy: Strategy | None = None
    hosts: list[HostId] | None = None
    step: Annotated[int, Meta(ge=0)] | None = None


class PreflightReported(_Event, frozen=True, kw_only=True, tag="preflight"):
    """The outcome of one configured preflight command, run by the shell."""

    deployment_id: DeploymentId
    name: str
    ok: bool
    output_tail: str = ""


class VerificationReported(_Event, frozen=True, kw_only=True, tag="verification"):
    """The outcome of one post-deployment verification command, run by the shell."""

    deployment_id: DeploymentId
    name: str
    ok: bool
    output_tail: str = ""


class Tick(_Event, frozen=True, kw_only=True, tag="tick"):
    """Time passed: the shell sends one at ``next_wakeup()`` (or sooner)."""


class BrokerConnectivity(_Event, frozen=True, kw_only=True, tag="broker"):
    """The shell's own session with the broker went down (``connected`` False) or is
    up again, subscribed (True). While it is down no host's silence is the host's
    fault: no missing-data clock runs and no silence alert fires. When it is back every
    host gets a fresh grace, counted from then. The engine starts connected; a shell
    that activates it while disconnected says so first."""

    connected: bool


EngineEvent = (
    HostStatusReceived
    | MetricsReceived
    | CommandResultReceived
    | OperatorRequest
    | PreflightReported
    | VerificationReported
    | Tick
    | BrokerConnectivity
)
