"""Operator gates: start, promote, rollback, pause, resume, approve.

Every request is answered (OperatorReply) and recorded with who asked and why. Requests
are idempotent: asking for what already holds (pausing a paused deployment, rolling
back one that is rolling back, promoting a step already promoted when ``step`` says
which) is accepted without change. A request the deployment cannot take is refused
with the reasons and changes nothing; in particular no operator can promote or approve
past a failing rule or a host without data, since skipping a bake is a judgement on
time, not on evidence.
"""

from __future__ import annotations

import re
from typing import Any, Final

from coordinator.engine.actions import OperatorReply, RunPreflight
from coordinator.engine.deployment import Deployment, PreflightState
from coordinator.engine.driver import Driver, plan, targets_of
from coordinator.engine.events import (
    DEPLOYMENT_ID_PATTERN,
    OperatorAction,
    OperatorRequest,
    PreflightReported,
)
from coordinator.engine.fleet import HostRecord
from coordinator.engine.gate import host_gate
from coordinator.engine.phases import ACTIVE, Phase, Trigger, allowed
from coordinator.engine.state import Effects, EngineState
from coordinator.engine.verification import take_report
from shared.evidence import (
    Created,
    GateRefusal,
    OperatorAnswer,
    PlannedStep,
    PreflightReport,
    Verdict,
)
from shared.kinds import EventKind
from shared.messages import VERSION_PATTERN

# How each request is recorded in the event log, accepted or refused.
RECORDED_AS: Final[dict[OperatorAction, EventKind]] = {
    "start": EventKind.OPERATOR_START,
    "promote": EventKind.OPERATOR_PROMOTE,
    "rollback": EventKind.OPERATOR_ROLLBACK,
    "pause": EventKind.OPERATOR_PAUSE,
    "resume": EventKind.OPERATOR_RESUME,
    "approve": EventKind.OPERATOR_APPROVE,
}


class _Refused(Exception):
    def __init__(self, *reasons: str) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(reasons))


class Operator:
    def __init__(self, state: EngineState, driver: Driver) -> None:
        self.state = state
        self.driver = driver

    def handle(self, request: OperatorRequest, now: float, out: Effects) -> None:
        handler = {
            "start": self._start,
            "promote": self._promote,
            "rollback": self._rollback,
            "pause": self._pause,
            "resume": self._resume,
            "approve": self._approve,
        }[request.action]
        try:
            changed, message = handler(request, now, out)
        except _Refused as refused:
            self._reply(
                request,
                now,
                out,
                accepted=False,
                changed=False,
                message=f"refused: {'; '.join(refused.reasons)}",
                reasons=refused.reasons,
            )
            return
        self._reply(request, now, out, accepted=True, changed=changed, message=message)

    def _reply(
        self,
        request: OperatorRequest,
        now: float,
        out: Effects,
        *,
        accepted: bool,
        changed: bool,
        message: str,
        reasons: list[str] | None = None,
    ) -> None:
        out.record(
            now,
            RECORDED_AS[request.action],
            f"{request.actor}: {request.action} {request.deployment_id}: {message}",
            deployment=request.deployment_id,
            actor=request.actor,
            evidence=OperatorAnswer(
                accepted=accepted,
                changed=changed,
                reason=request.reason,
                reasons=reasons or [],
                step=request.step,
            ),
        )
        out.add(
            OperatorReply(
                deployment_id=request.deployment_id,
                action=request.action,
                accepted=accepted,
                changed=changed,
                message=message,
                reasons=reasons or [],
            )
        )

    def _find(self, request: OperatorRequest) -> Deployment:
        dep = self.state.deployments.get(request.deployment_id)
        if dep is not None:
            return dep
        for entry in reversed(self.state.history):
            if entry.deployment == request.deployment_id:
                raise _Refused(
                    f"deployment {entry.deployment} finished ({entry.outcome}) and a later one "
                    f"replaced it in {entry.environment}"
                )
        raise _Refused(f"no deployment {request.deployment_id}")

    # start -----------------------------------------------------------------------------

    def _start(self, request: OperatorRequest, now: float, out: Effects) -> tuple[bool, str]:
        # Requests built in Python skip msgspec's decode-time checks; ids and versions end
        # up in command ids and directory names, so they are checked here too.
        if not re.fullmatch(DEPLOYMENT_ID_PATTERN, request.deployment_id):
            raise _Refused(
                f"deployment id {request.deployment_id!r} must match {DEPLOYMENT_ID_PATTERN}"
            )
        if request.version is None:
            raise _Refused("start needs a version")
        if not re.fullmatch(VERSION_PATTERN, request.version):
            raise _Refused(f"version {request.version!r} must match {VERSION_PATTERN}")
        if self.state.known_id(request.deployment_id):
            raise _Refused(f"deployment id {request.deployment_id} is already used")
        environment = request.environment or "production"
        active = self.state.active_in(environment)
        if active is not None:
            raise _Refused(f"deployment {active.id} is {active.phase.value} in {environment}")
        policy = self.state.policy(environment)
        strategy = request.strategy or policy.strategy
        records = self._targets(request, environment)
        reasons = self._gate(environment, strategy, request.version, records, now)
        if reasons:
            out.record(
                now,
                EventKind.DEPLOYMENT_REFUSED,
                f"{request.deployment_id} refused by the preflight gate",
                deployment=request.deployment_id,
                actor=request.actor,
                evidence=GateRefusal(
                    reasons=reasons, version=request.version, environment=environment
                ),
            )
            raise _Refused(*reasons)
        dep = Deployment(
            id=request.deployment_id,
            environment=environment,
            strategy=strategy,
            version=request.version,
            from_version=records[0].version,
            actor=request.actor,
            reason=request.reason,
            created=now,
            updated=now,
            targets=targets_of(records),
            preflight=[PreflightState(name=c.name) for c in policy.preflight],
        )
        dep.steps = plan(policy, dep)
        self.state.deployments[dep.id] = dep
        out.touch(dep)
        out.record(
            now,
            EventKind.DEPLOYMENT_CREATED,
            f"{dep.id}: {dep.version} to {len(records)} {environment} hosts by {strategy}, "
            f"from {dep.from_version}",
            deployment=dep.id,
            actor=request.actor,
            evidence=Created(
                version=dep.version,
                from_version=dep.from_version,
                strategy=strategy,
                steps=[
                    PlannedStep(
                        name=s.name,
                        hosts=[o.host for o in s.orders],
                        bake=s.bake,
                        approval=s.approval,
                    )
                    for s in dep.steps
                ],
                reason=request.reason,
            ),
        )
        out.notify(
            now,
            EventKind.DEPLOYMENT_STARTED,
            "info",
            f"{dep.id}: {request.actor} started {dep.version} in {environment} ({strategy})",
            environment=environment,
            deployment=dep.id,
        )
        if policy.preflight:
            dep.preflight_deadline = (
                now + sum(c.timeout for c in policy.preflight) + policy.ack_timeout
            )
            out.add(RunPreflight(deployment_id=dep.id, commands=list(policy.preflight)))
            return True, f"started; running {len(policy.preflight)} preflight commands"
        self._preflight_passed(dep, now, out)
        return True, f"started; {dep.steps[0].name} deploying"

    def _targets(self, request: OperatorRequest, environment: str) -> list[HostRecord]:
        if request.hosts is None:
            return self.state.fleet.in_environment(environment)
        reasons, records = [], []
        for host in sorted(set(request.hosts)):
            record = self.state.fleet.get(host)
            if record is None:
                reasons.append(f"{host}: unknown host")
            elif record.environment != environment:
                reasons.append(f"{host}: in {record.environment}, not {environment}")
            else:
                records.append(record)
        if reasons:
            raise _Refused(*reasons)
        return records

    def _gate(
        self, environment: str, strategy: str, version: str, records: list[HostRecord], now: float
    ) -> list[str]:
        policy = self.state.policy(environment)
        return host_gate(
            policy,
            strategy=strategy,  # type: ignore[arg-type]
            version=version,
            targets=records,
            checks=self.state.plain_checks,
            alerts=self.state.alerts.firing_on,
            silence=self.state.silence(policy),
            now=now,
        )

    def preflight_reported(self, event: PreflightReported, now: float, out: Effects) -> None:
        dep = self.state.deployments.get(event.deployment_id)
        entry = (
            None if dep is None else next((p for p in dep.preflight if p.name == event.name), None)
        )
        if dep is None or dep.phase is not Phase.PREFLIGHT or entry is None or entry.ok is not None:
            out.record(
                now,
                EventKind.PREFLIGHT_IGNORED,
                f"preflight {event.name} of {event.deployment_id} reported outside its preflight",
                deployment=event.deployment_id,
                evidence=PreflightReport(name=event.name, ok=event.ok),
            )
            return
        take_report(
            dep,
            entry,
            now,
            out,
            ok=event.ok,
            output_tail=event.output_tail,
            kind=EventKind.PREFLIGHT_REPORTED,
            message=f"preflight {event.name}: {'ok' if event.ok else 'failed'}",
        )
        if not event.ok:
            self.driver.fire(
                dep,
                Trigger.PREFLIGHT_FAILED,
                now,
                out,
                f"refused: preflight command {event.name} failed",
                evidence={"name": event.name, "output_tail": entry.output_tail},
                notify=(EventKind.DEPLOYMENT_REFUSED, "warning"),
            )
            return
        if all(p.ok for p in dep.preflight):
            self._preflight_passed(dep, now, out)

    def _preflight_passed(self, dep: Deployment, now: float, out: Effects) -> None:
        records = [self.state.fleet.get(h) for h in sorted(dep.targets)]
        present = [r for r in records if r is not None]
        reasons = self._gate(dep.environment, dep.strategy, dep.version, present, now)
        if len(present) < len(records):
            reasons.append("a target host is no longer known")
        if any(r.version != dep.from_version for r in present):
            reasons.append("a target host changed version during the preflight")
        if reasons:
            self.driver.fire(
                dep,
                Trigger.PREFLIGHT_FAILED,
                now,
                out,
                "refused by the preflight gate: " + "; ".join(reasons),
                evidence={"reasons": reasons},
                notify=(EventKind.DEPLOYMENT_REFUSED, "warning"),
            )
            return
        step = dep.steps[0]
        self.driver.fire(
            dep,
            Trigger.PREFLIGHT_PASSED,
            now,
            out,
            f"preflight passed; deploying {step.name} to {len(step.orders)} hosts",
            evidence={"preflight": [{"name": p.name, "ok": p.ok} for p in dep.preflight]},
        )
        self.driver.send_first_step(dep, now, out)

    # gates on a running deployment -----------------------------------------------------

    def _safe_to_advance(self, dep: Deployment, now: float) -> dict[str, Any]:
        """Refuse (raise) if a rule fails or a judged host has no data: silent, offline,
        or without a sample of a required check in this window (after a restart, say).
        An inconclusive rate is the operator's call; missing evidence is not."""
        result = self.driver.cohorts.judgement(dep, now)
        if result is None:
            raise _Refused("nothing is being judged yet")
        reasons = [r.message for r in result.failed]
        reasons += [f"{h}: no data ({why})" for h, (_, why) in sorted(result.missing.items())]
        reasons += [
            r.message
            for r in result.results
            if r.rule == "coverage" and r.verdict is Verdict.NO_DATA
        ]
        if reasons:
            raise _Refused(*reasons)
        return result.fields()

    def _promote(self, request: OperatorRequest, now: float, out: Effects) -> tuple[bool, str]:
        dep = self._find(request)
        if request.step is not None:
            if request.step > dep.step:
                raise _Refused(f"step {request.step} has not started (current step {dep.step})")
            if request.step < dep.step or dep.phase in (
                Phase.AWAITING_APPROVAL,
                Phase.VERIFYING,
                Phase.COMPLETED,
            ):
                return False, f"step {request.step} was already promoted"
        if dep.phase is Phase.AWAITING_APPROVAL:
            raise _Refused("the deployment awaits approval: approve it instead")
        if not allowed(dep.phase, Trigger.PROMOTE):
            raise _Refused(f"cannot promote while {dep.phase.value}")
        evidence = self._safe_to_advance(dep, now)
        step = dep.steps[dep.step]
        self.driver.fire(
            dep,
            Trigger.PROMOTE,
            now,
            out,
            f"{request.actor} promoted step {step.name} after {dep.bake.at(now):.0f} of "
            f"{dep.bake.length:.0f} s: {request.reason or 'no reason given'}",
            actor=request.actor,
            evidence={"reason": request.reason, **evidence},
        )
        self.driver.drive(dep, now, out)
        return True, f"promoted past {step.name}; now {dep.phase.value}"

    def _approve(self, request: OperatorRequest, now: float, out: Effects) -> tuple[bool, str]:
        dep = self._find(request)
        gated = dep.step + 1
        if request.step is not None and request.step in dep.approved:
            return False, f"step {request.step} was already approved"
        if dep.phase is not Phase.AWAITING_APPROVAL:
            if dep.approved and dep.phase is not Phase.REFUSED:
                return False, f"already approved (steps {dep.approved})"
            raise _Refused(f"nothing awaits approval (the deployment is {dep.phase.value})")
        if request.step is not None and request.step != gated:
            raise _Refused(f"step {gated} awaits approval, not step {request.step}")
        evidence = self._safe_to_advance(dep, now)
        dep.approved.append(gated)
        self.driver.advance_step(
            dep,
            Trigger.APPROVE,
            now,
            out,
            actor=request.actor,
            reason=f"approved by {request.actor}: {request.reason or 'no reason given'}",
            evidence=evidence,
        )
        self.driver.drive(dep, now, out)
        return True, f"approved; {dep.steps[gated].name} deploying"

    def _pause(self, request: OperatorRequest, now: float, out: Effects) -> tuple[bool, str]:
        dep = self._find(request)
        if dep.phase is Phase.PAUSED:
            return False, "already paused"
        if not allowed(dep.phase, Trigger.PAUSE):
            raise _Refused(f"cannot pause while {dep.phase.value}")
        self.driver.fire(
            dep,
            Trigger.PAUSE,
            now,
            out,
            f"paused by {request.actor}: {request.reason or 'no reason given'} "
            "(no promotion; a breach still rolls back)",
            actor=request.actor,
            evidence={"reason": request.reason},
            notify=(EventKind.DEPLOYMENT_PAUSED, "info"),
        )
        return True, "paused"

    def _resume(self, request: OperatorRequest, now: float, out: Effects) -> tuple[bool, str]:
        dep = self._find(request)
        if dep.phase not in ACTIVE:
            raise _Refused(f"the deployment is {dep.phase.value}")
        if dep.phase not in (Phase.PAUSED, Phase.HELD):
            return False, f"not paused or held (the deployment is {dep.phase.value})"
        # Resuming a pause returns to the paused phase (which may be a hold); resuming
        # a hold ends it.
        hold = dep.hold_reason if dep.phase is Phase.HELD else None
        if hold == "unreachable":
            # Go on without the hosts away now: they no longer count against the share.
            away, _ = self.driver.reach.share(dep, now)
            dep.accepted_unreachable = sorted(set(dep.accepted_unreachable) | set(away))
        self.driver.fire(
            dep,
            Trigger.RESUME,
            now,
            out,
            f"resumed by {request.actor}: {request.reason or 'no reason given'}",
            actor=request.actor,
            evidence={"reason": request.reason, "hold_reason": hold},
            notify=(EventKind.DEPLOYMENT_RESUMED, "info"),
        )
        if hold == "fleet_incident":
            self.driver.cohorts.open_window(dep, now)
        elif hold == "inconclusive":
            step = dep.steps[dep.step]
            extension = step.bake * (
                self.state.policy(dep.environment).inconclusive_extension or 1.0
            )
            dep.bake.length = dep.bake.at(now) + extension
        self.driver.drive(dep, now, out)
        return True, f"resumed; now {dep.phase.value}"

    def _rollback(self, request: OperatorRequest, now: float, out: Effects) -> tuple[bool, str]:
        dep = self.state.deployments.get(request.deployment_id)
        if dep is None:
            for entry in reversed(self.state.history):
                if entry.deployment == request.deployment_id and entry.outcome in (
                    "rolled_back",
                    "refused",
                ):
                    return False, f"already {entry.outcome.replace('_', ' ')}"
            dep = self._find(request)
        if dep.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            return False, f"already {dep.phase.value.replace('_', ' ')}"
        if dep.phase is Phase.REFUSED:
            return False, "refused before any host changed; nothing to roll back"
        if dep.phase in (Phase.COMPLETED, Phase.FAILED):
            active = self.state.active_in(dep.environment)
            if active is not None:
                raise _Refused(
                    f"deployment {active.id} is {active.phase.value} in {dep.environment}"
                )
        reason = request.reason or "operator rollback"
        self.driver.start_rollback(
            dep,
            Trigger.ROLLBACK,
            now,
            out,
            reason=f"{request.actor}: {reason}",
            evidence={"rule": "operator", "actor": request.actor},
            actor=request.actor,
        )
        self.driver.drive(dep, now, out)
        return True, f"rolling back to {dep.rollback.version if dep.rollback else None}"
