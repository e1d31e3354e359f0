"""Post-deployment verification: the environment's ``verify`` commands (a smoke test, a
synthetic transaction; CodeDeploy's ValidateService) that must all pass before a
deployment completes.

They start once, in VERIFYING, when every step has passed and every reachable host
reports the new version, healthy: the engine asks the shell to run them
(RunVerification) and is told each outcome (VerificationReported). A failure, or a
command not reported by the deadline (the commands' timeouts plus the ack timeout),
rolls the deployment back like any failed rule, with the command's output tail in the
evidence. Each command counts once: a second report for it (a re-run after a restart, a
report after the deployment moved on) is recorded as ignored and changes nothing. After
a restart the engine's ``outstanding()`` asks for the unreported ones again.
"""

from __future__ import annotations

from enum import Enum

import msgspec

from coordinator.engine.actions import RunVerification
from coordinator.engine.deployment import Deployment, PreflightState
from coordinator.engine.events import VerificationReported
from coordinator.engine.phases import Phase, Trigger
from coordinator.engine.rollback import Rollback
from coordinator.engine.state import Effects, EngineState
from shared.evidence import PreflightReport, VerificationFailure, VerificationStarted
from shared.kinds import EventKind

# What a report keeps of a command's output (the shell sends its last 2 kB).
TAIL_CHARS = 4096


class Gate(Enum):
    PASSED = "passed"  # nothing to run, or every command passed
    WAITING = "waiting"  # commands running
    CHANGED = "changed"  # started the commands or rolled back


class Verification:
    def __init__(self, state: EngineState, rollback: Rollback) -> None:
        self.state = state
        self.rollback = rollback

    def gate(self, dep: Deployment, now: float, out: Effects) -> Gate:
        """In VERIFYING, with every host ready: start the commands, wait for them, fail
        on the deadline, or let the deployment complete."""
        commands = self.state.policy(dep.environment).verify
        if dep.verify_deadline is None:
            if not commands:
                return Gate.PASSED
            dep.verification = [PreflightState(name=c.name) for c in commands]
            dep.verify_deadline = (
                now
                + sum(c.timeout for c in commands)
                + self.state.policy(dep.environment).ack_timeout
            )
            out.touch(dep)
            out.record(
                now,
                EventKind.VERIFICATION_STARTED,
                f"{dep.id}: every host reports {dep.version}; running "
                f"{len(commands)} verification command(s): {', '.join(c.name for c in commands)}",
                deployment=dep.id,
                evidence=VerificationStarted(
                    commands=[c.name for c in commands], deadline=dep.verify_deadline
                ),
            )
            out.add(RunVerification(deployment_id=dep.id, commands=list(commands)))
            return Gate.CHANGED
        pending = self.pending(dep)
        if not pending:
            return Gate.PASSED
        if now >= dep.verify_deadline:
            self.rollback.start(
                dep,
                Trigger.FAIL,
                now,
                out,
                reason=f"verification not reported in time: {', '.join(pending)}",
                evidence={"rule": "verification", "verification": {"pending": pending}},
            )
            return Gate.CHANGED
        return Gate.WAITING

    @staticmethod
    def pending(dep: Deployment) -> list[str]:
        return [v.name for v in dep.verification if v.ok is None]

    @staticmethod
    def running(dep: Deployment) -> bool:
        """Its commands were started and some are unreported (VERIFYING, or paused
        from it): what a restarted shell must run again."""
        verifying = dep.phase is Phase.VERIFYING or (
            dep.phase is Phase.PAUSED and dep.paused_from is Phase.VERIFYING
        )
        return verifying and dep.verify_deadline is not None and bool(Verification.pending(dep))

    def reported(self, event: VerificationReported, now: float, out: Effects) -> Deployment | None:
        """Take one command's outcome; return the deployment to drive on if it may now
        complete (the last command passed in VERIFYING)."""
        dep = self.state.deployments.get(event.deployment_id)
        entry = (
            None
            if dep is None
            else next((v for v in dep.verification if v.name == event.name), None)
        )
        if dep is None or entry is None or entry.ok is not None or not self.running(dep):
            out.record(
                now,
                EventKind.VERIFICATION_IGNORED,
                f"verification {event.name} of {event.deployment_id} reported outside its "
                "verification",
                deployment=event.deployment_id,
                evidence=PreflightReport(name=event.name, ok=event.ok),
            )
            return None
        take_report(
            dep,
            entry,
            now,
            out,
            ok=event.ok,
            output_tail=event.output_tail,
            kind=EventKind.VERIFICATION_REPORTED,
            message=f"verification {event.name}: {'passed' if event.ok else 'failed'}",
        )
        if not event.ok:
            self.rollback.start(
                dep,
                Trigger.FAIL,
                now,
                out,
                reason=f"verification command {event.name} failed",
                evidence={
                    "rule": "verification",
                    "verification": msgspec.to_builtins(
                        VerificationFailure(name=event.name, output_tail=entry.output_tail)
                    ),
                },
            )
            return None
        if dep.phase is Phase.VERIFYING and not self.pending(dep):
            return dep
        return None


def take_report(
    dep: Deployment,
    entry: PreflightState,
    now: float,
    out: Effects,
    *,
    ok: bool,
    output_tail: str,
    kind: EventKind,
    message: str,
) -> None:
    """A hook command's outcome (a preflight's or a verification's) into its entry, the
    output's last TAIL_CHARS kept, and recorded as ``kind`` with that evidence."""
    entry.ok = ok
    entry.output_tail = output_tail[-TAIL_CHARS:]
    out.touch(dep)
    out.record(
        now,
        kind,
        message,
        deployment=dep.id,
        evidence=PreflightReport(name=entry.name, ok=ok, output_tail=entry.output_tail),
    )
