"""The engine's records as the API shows them: the one place where an engine field
becomes a field of :mod:`shared.views`. Renaming a field on either side fails here
(mypy, and the view tests), never silently on the wire.
"""

from __future__ import annotations

import msgspec

from coordinator.daemon.hosts import HostEntry
from coordinator.engine import Deployment
from coordinator.engine.deployment import CommandRecord, PreflightState, Step, TargetHost
from coordinator.store import AlertRow
from shared.evidence import AlertChange
from shared.kinds import EventKind
from shared.messages import Event
from shared.views import (
    AlertView,
    CommandView,
    DeliveryView,
    DeploymentView,
    EventView,
    HostView,
    OrderView,
    PreflightView,
    StepView,
    TargetView,
)


def _step(step: Step) -> StepView:
    return StepView(
        index=step.index,
        name=step.name,
        percent=step.percent,
        orders=[
            OrderView(host=o.host, action=o.action, version=o.version, slot=o.slot)
            for o in step.orders
        ],
        bake=step.bake,
        approval=step.approval,
    )


def _target(target: TargetHost) -> TargetView:
    return TargetView(
        host=target.host,
        from_version=target.from_version,
        from_slot=target.from_slot,
        labels=dict(target.labels),
    )


def _command(command: CommandRecord) -> CommandView:
    return CommandView(
        id=command.id,
        host=command.host,
        purpose=command.purpose,
        step=command.step,
        action=command.action,
        version=command.version,
        slot=command.slot,
        issued=command.issued,
        state=command.state,
        detail=command.detail,
        answered=command.answered,
    )


def _preflight(check: PreflightState) -> PreflightView:
    return PreflightView(name=check.name, ok=check.ok, output_tail=check.output_tail)


def deployment_view(dep: Deployment, now: float) -> DeploymentView:
    """A deployment as the API shows it at ``now``: the engine's record plus the
    current step and the bake clock read at ``now``."""
    step = dep.current_step()
    elapsed = dep.bake.at(now)
    rollback = dep.rollback
    return DeploymentView(
        id=dep.id,
        environment=dep.environment,
        strategy=dep.strategy,
        version=dep.version,
        from_version=dep.from_version,
        actor=dep.actor,
        reason=dep.reason,
        created=dep.created,
        updated=dep.updated,
        finished=dep.finished,
        phase=dep.phase,
        paused_from=dep.paused_from,
        hold_reason=dep.hold_reason,
        steps=[_step(s) for s in dep.steps],
        step=dep.step,
        step_name=step.name if step else None,
        percent=step.percent if step else None,
        steps_total=len(dep.steps),
        targets={name: _target(t) for name, t in dep.targets.items()},
        commands={ident: _command(c) for ident, c in dep.commands.items()},
        preflight=[_preflight(p) for p in dep.preflight],
        verification=[_preflight(v) for v in dep.verification],
        bake_elapsed=round(elapsed, 3),
        bake_length=dep.bake.length,
        bake_remaining=round(max(0.0, dep.bake.length - elapsed), 3),
        rollback_version=rollback.version if rollback else None,
        rollback_reason=rollback.reason if rollback else None,
        rollback_started=rollback.started if rollback else None,
        unreachable=list(dep.unreachable),
        summary=dep.summary,
    )


def event_view(event: Event) -> EventView:
    return EventView(
        seq=event.seq,
        time=event.time,
        kind=EventKind(event.kind),
        message=event.message,
        deployment=event.deployment,
        host=event.host,
        actor=event.actor,
        evidence=event.evidence,
    )


def host_view(entry: HostEntry) -> HostView:
    """A host as ``GET /api/v1/hosts`` lists it: the engine's record of it and what
    its agent last sent."""
    record, activity = entry.record, entry.activity
    return HostView(
        host=record.host,
        online=record.online,
        session=record.session,
        environment=record.environment,
        version=record.version,
        slot=record.slot,
        labels=dict(record.labels),
        agent_version=activity.agent_version,
        last_seen=activity.last_seen,
        checks=dict(activity.checks),
        batches=activity.batches,
        last_seq=activity.last_seq,
    )


def alert_view(
    row: AlertRow, told: list[DeliveryView], environment: str | None = None
) -> AlertView:
    """A stored alert, with the evidence it fired on and who was told."""
    return AlertView(
        key=row.key,
        host=row.host,
        rule=row.rule,
        environment=environment,
        started=row.started,
        resolved=row.resolved,
        message=row.message,
        evidence=msgspec.convert(row.evidence, AlertChange),
        told=told,
    )
