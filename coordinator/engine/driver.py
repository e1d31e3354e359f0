"""Driving deployments: every automatic decision, made by firing triggers through the
transition table (phases.py) and never by setting a phase directly.

``drive`` advances a deployment as far as the facts at ``now`` allow. It is called after
every event that can change those facts (a sample of a judged host, a status, a command
result, a tick), so a decision is taken at the first moment its evidence exists: a
breaching sample rolls back on arrival, a bake passes at its exact end (the engine asks
to be woken then), a host's Will starts the missing-data grace at once.
"""

from __future__ import annotations

from typing import Any

from coordinator.engine import bluegreen, canary, direct
from coordinator.engine.actions import CancelCommand, SendCommand, Severity
from coordinator.engine.deployment import (
    CommandRecord,
    Deployment,
    HistoryEntry,
    HoldReason,
    Order,
    Purpose,
    Step,
    TargetHost,
)
from coordinator.engine.errors import EngineError
from coordinator.engine.judge import Judgement, Outcome, judge, quick_failures
from coordinator.engine.phases import TERMINAL, Phase, Trigger, transition
from coordinator.engine.rules import Verdict
from coordinator.engine.state import EngineState, Outbox, Runtime
from coordinator.engine.windows import Tally
from shared.config.coordinator import EnvironmentPolicy

# A deployment settles within a handful of transitions per event; more is a bug.
MAX_TRANSITIONS_PER_EVENT = 32
# Floating-point slack when comparing the bake clock with its length.
EPSILON = 1e-6
_JUDGED_PHASES = frozenset({Phase.BAKING, Phase.HELD, Phase.AWAITING_APPROVAL, Phase.VERIFYING})
_FAILED_STATES = frozenset({"failed", "rejected", "timed_out"})

PLANNERS = {"canary": canary.plan, "blue-green": bluegreen.plan, "direct": direct.plan}


class Driver:
    def __init__(self, state: EngineState) -> None:
        self.state = state

    # Transitions --------------------------------------------------------------------

    def fire(
        self,
        dep: Deployment,
        trigger: Trigger,
        now: float,
        out: Outbox,
        message: str,
        *,
        evidence: dict[str, Any] | None = None,
        actor: str | None = None,
        notify: tuple[str, Severity] | None = None,
    ) -> None:
        """Take one transition of the table (raising, with nothing changed, if illegal),
        keep the bake clock, record it with its evidence and notify if asked."""
        before = dep.phase
        after = transition(dep.id, before, trigger, dep.paused_from)
        if before is Phase.BAKING and after is not Phase.BAKING:
            dep.stop_bake(now)
        dep.paused_from = before if after is Phase.PAUSED else None
        dep.phase = after
        if after is Phase.BAKING and before is not Phase.BAKING:
            dep.bake_since = now
        if after not in (Phase.HELD, Phase.PAUSED):
            # A pause from a hold keeps its reason: resuming returns to that hold.
            dep.hold_reason = None
        dep.updated = now
        dep.summary = message
        out.touch(dep)
        full = {
            "trigger": trigger.value,
            "from": before.value,
            "to": after.value,
            "step": dep.step,
            "bake_elapsed": dep.bake_at(now),
            "bake_length": dep.bake_length,
            **(evidence or {}),
        }
        out.record(
            now,
            f"deployment.{trigger.value}",
            message,
            deployment=dep.id,
            actor=actor,
            evidence=full,
        )
        if notify is not None:
            kind, severity = notify
            out.notify(
                now,
                f"deployment.{kind}",
                severity,
                f"{dep.id} ({dep.environment}, {dep.version}): {message}",
                environment=dep.environment,
                deployment=dep.id,
                evidence=full,
            )
        if after in TERMINAL:
            self._finish(dep, now)
        else:
            self.runtime(dep).waiting = None
            self.rebuild(dep)

    def drive(self, dep: Deployment, now: float, out: Outbox, *, full: bool = True) -> None:
        """Advance ``dep`` as far as the facts at ``now`` allow.

        A light drive (``full`` False) is for an acknowledgement or a status that only
        confirms a command: it checks the commands still awaited, in constant time, and
        judges nothing; it turns full as soon as it takes a transition. Everything that
        can fail a rule (samples, offline hosts, failed commands) and every tick drives
        fully, so no decision waits on a light drive.
        """
        for _ in range(MAX_TRANSITIONS_PER_EVENT):
            if not self._advance(dep, now, out, full=full):
                return
            full = True
        raise EngineError(f"deployment {dep.id} did not settle at {now}")

    # Commands awaited ------------------------------------------------------------------

    def _attempt(self, dep: Deployment) -> list[CommandRecord]:
        """The commands the current phase waits for: the step's orders while deploying,
        the rollback's while rolling back."""
        if dep.phase is Phase.DEPLOYING:
            return [
                c for c in dep.rollout_commands() if c.step == dep.step and c.state != "cancelled"
            ]
        if dep.phase is Phase.ROLLING_BACK:
            started = dep.rollback_started if dep.rollback_started is not None else 0.0
            return [
                c
                for c in dep.commands.values()
                if c.purpose == "rollback" and c.issued >= started and c.state != "cancelled"
            ]
        return []

    def waiting(self, dep: Deployment) -> dict[str, set[str]]:
        """Commands of the current attempt neither confirmed nor final, by host."""
        runtime = self.runtime(dep)
        if runtime.waiting is None:
            runtime.waiting = {}
            for command in self._attempt(dep):
                if self._awaited(command):
                    runtime.waiting.setdefault(command.host, set()).add(command.id)
        return runtime.waiting

    def _awaited(self, command: CommandRecord) -> bool:
        """Neither confirmed nor failed: an answer or a status is still to come."""
        return (
            command.state not in _FAILED_STATES
            and command.state != "cancelled"
            and not (self.confirmed(command))
        )

    def heard_from(self, dep: Deployment, host: str) -> None:
        """A result or status from ``host``: drop its commands that are now settled."""
        runtime = self.runtime(dep)
        if runtime.waiting is None:
            return
        ids = runtime.waiting.get(host)
        if not ids:
            return
        for command_id in list(ids):
            if not self._awaited(dep.commands[command_id]):
                ids.discard(command_id)
        if not ids:
            del runtime.waiting[host]

    # Cohorts and windows --------------------------------------------------------------

    def runtime(self, dep: Deployment) -> Runtime:
        runtime = self.state.runtimes.get(dep.id)
        if runtime is None:
            runtime = self.state.runtimes[dep.id] = Runtime()
            self.rebuild(dep)
        return runtime

    def judged_step(self, dep: Deployment) -> int | None:
        """The last step whose hosts are judged now, or None when nothing is judged."""
        phase = dep.paused_from if dep.phase is Phase.PAUSED else dep.phase
        if phase in _JUDGED_PHASES:
            return dep.step
        if phase is Phase.DEPLOYING and dep.step > 0:
            previous, current = dep.steps[dep.step - 1], dep.steps[dep.step]
            # Hosts already on the new version stay judged while the next ones deploy,
            # unless the step changes what is judged (blue-green's switch).
            if not previous.judge_slot and not current.judge_slot:
                return dep.step - 1
        return None

    def rebuild(self, dep: Deployment) -> None:
        """Recompute who is judged as what, and their pooled counts."""
        runtime = self.state.runtimes.setdefault(dep.id, Runtime())
        runtime.members.clear()
        runtime.slots.clear()
        runtime.pooled.clear()
        judged = self.judged_step(dep)
        if judged is None:
            runtime.wake = None
            return
        for step in dep.steps[: judged + 1]:
            for order in step.orders:
                runtime.members[order.host] = "canary"
        if dep.steps[judged].judge_slot:
            for order in dep.steps[judged].orders:
                if order.slot is not None:
                    runtime.slots[order.host] = order.slot
        ordered = dep.ordered_hosts()
        for host in dep.targets:
            if host not in ordered:
                runtime.members[host] = "baseline"
        for host, cohort in runtime.members.items():
            windows = self.state.windows.get(host)
            if windows is None:
                continue
            pooled = runtime.pooled.setdefault(cohort, {})
            for name, window in windows.checks.items():
                base = runtime.base_name(host, name)
                if base is not None:
                    pooled.setdefault(base, Tally()).merge(window.tally)

    def open_window(self, dep: Deployment, now: float) -> None:
        dep.window_start = now
        for host in dep.targets:
            self.state.host_windows(host).open(now)
        self.rebuild(dep)

    def ingest(self, dep: Deployment, host: str, reported: str, delta: Tally) -> None:
        runtime = self.runtime(dep)
        cohort = runtime.members.get(host)
        if cohort is None:
            return
        base = runtime.base_name(host, reported)
        if base is not None:
            runtime.pooled.setdefault(cohort, {}).setdefault(base, Tally()).merge(delta)

    def samples_arrived(self, dep: Deployment, host: str, now: float, out: Outbox) -> None:
        """The hot path: judge only what this host's samples can change, in constant
        time, and run the full judgement only when something failed or may clear."""
        runtime = self.runtime(dep)
        if runtime.members.get(host) != "canary":
            return
        policy = self.state.policy(dep.environment)
        view = self.state.cohort_view(dep, runtime, "canary")
        if quick_failures(policy, view, host, now) or (
            dep.phase is Phase.HELD and dep.hold_reason == "missing_data"
        ):
            self.drive(dep, now, out)

    def judgement(self, dep: Deployment, now: float) -> Judgement | None:
        runtime = self.runtime(dep)
        if not runtime.members:
            return None
        policy = self.state.policy(dep.environment)
        canary_view = self.state.cohort_view(dep, runtime, "canary")
        if not canary_view.hosts:
            return None
        baseline_view = self.state.cohort_view(dep, runtime, "baseline")
        silence = self.state.silence(policy)
        result = judge(
            policy, canary_view, baseline_view if baseline_view.hosts else None, silence, now
        )
        runtime.wake = self._next_change(policy, dep, runtime, result, now)
        return result

    def _next_change(
        self,
        policy: EnvironmentPolicy,
        dep: Deployment,
        runtime: Runtime,
        result: Judgement,
        now: float,
    ) -> float | None:
        """When a judged fact changes by time alone: a missing host's grace ends, or a
        reporting host's required check falls silent."""
        times = [since + policy.missing_data_grace for since, _ in result.missing.values()]
        silence = self.state.silence(policy)
        reference = dep.window_start if dep.window_start is not None else now
        for host in runtime.cohort("canary"):
            if host in result.missing:
                continue
            checks = self.state.judged_checks(runtime, host)
            for check in policy.required_checks:
                window = checks.get(check)
                last = window.last_seen if window is not None else None
                start = max(last if last is not None else reference, silence.since)
                times.append(start + silence.intervals * silence.interval(check))
        future = [t for t in times if t > now]
        return min(future) if future else None

    # Commands --------------------------------------------------------------------------

    def send(
        self,
        dep: Deployment,
        orders: list[Order],
        now: float,
        out: Outbox,
        *,
        purpose: Purpose,
        step: int,
    ) -> None:
        timeout = self.state.policy(dep.environment).ack_timeout
        for order in orders:
            command = CommandRecord(
                id=dep.next_command_id(),
                host=order.host,
                purpose=purpose,
                step=step,
                action=order.action,
                version=order.version,
                slot=order.slot,
                expect_version=order.expect_version,
                expect_slot=order.expect_slot,
                confirm_status=order.confirm_status,
                issued=now,
                deadline=now + timeout,
            )
            dep.commands[command.id] = command
            self.state.commands[command.id] = dep.id
            self.runtime(dep).waiting = None
            out.add(
                SendCommand(
                    command_id=command.id,
                    deployment_id=dep.id,
                    host=command.host,
                    action=command.action,
                    version=command.version,
                    slot=command.slot,
                    issued=now,
                )
            )
        out.touch(dep)
        self.rebuild(dep)

    def resend(
        self, dep: Deployment, command: CommandRecord, now: float, out: Outbox, why: str
    ) -> None:
        """Replace a command the agent can no longer accept (expired while its host was
        away) by a fresh one with a new id."""
        self.cancel(dep, command, out, why)
        order = Order(
            host=command.host,
            action=command.action,
            version=command.version,
            slot=command.slot,
            expect_version=command.expect_version,
            expect_slot=command.expect_slot,
            confirm_status=command.confirm_status,
        )
        self.send(dep, [order], now, out, purpose=command.purpose, step=command.step)

    def cancel(self, dep: Deployment, command: CommandRecord, out: Outbox, why: str) -> None:
        command.state = "cancelled"
        command.detail = why
        out.add(
            CancelCommand(
                command_id=command.id, deployment_id=dep.id, host=command.host, reason=why
            )
        )
        out.touch(dep)

    def confirmed(self, command: CommandRecord) -> bool:
        if command.state != "succeeded":
            return False
        if not command.confirm_status:
            return True
        record = self.state.fleet.get(command.host)
        if record is None:
            return False
        if command.expect_version is not None and record.version != command.expect_version:
            return False
        return command.expect_slot is None or record.slot == command.expect_slot

    def _expire(self, dep: Deployment, command: CommandRecord, now: float, out: Outbox) -> bool:
        """Time out a command past its deadline; True if it failed now."""
        if command.final and command.state != "succeeded":
            return False
        if self.confirmed(command) or now < command.deadline:
            return False
        if command.state == "succeeded":
            return True  # acknowledged, but the host never reported the new state
        command.state = "timed_out"
        command.detail = f"no answer within {command.deadline - command.issued:g} s"
        out.add(
            CancelCommand(
                command_id=command.id, deployment_id=dep.id, host=command.host, reason="timed out"
            )
        )
        out.touch(dep)
        return True

    def _command_evidence(self, command: CommandRecord) -> dict[str, Any]:
        record = self.state.fleet.get(command.host)
        return {
            "command": command.id,
            "host": command.host,
            "action": command.action,
            "state": command.state,
            "detail": command.detail,
            "issued": command.issued,
            "deadline": command.deadline,
            "reported_version": record.version if record else None,
            "reported_slot": record.slot if record else None,
            "expected_version": command.expect_version,
            "expected_slot": command.expect_slot,
        }

    # The automatic path ---------------------------------------------------------------

    def _advance(self, dep: Deployment, now: float, out: Outbox, *, full: bool) -> bool:
        phase = dep.phase
        if phase in TERMINAL:
            return False
        if phase is Phase.PREFLIGHT:
            if dep.preflight_deadline is not None and now >= dep.preflight_deadline:
                pending = [p.name for p in dep.preflight if p.ok is None]
                self.fire(
                    dep,
                    Trigger.PREFLIGHT_FAILED,
                    now,
                    out,
                    f"refused: preflight commands not reported in time: {', '.join(pending)}",
                    evidence={"pending": pending},
                    notify=("refused", "warning"),
                )
                return True
            return False  # preflight reports and operator requests move it (operator.py)
        if phase is Phase.ROLLING_BACK:
            if not full and self.waiting(dep):
                return False
            return self._rollback_progress(dep, now, out)
        if phase is Phase.PROMOTING:
            self._choose_next(dep, now, out)
            return True
        if not full:
            if phase is Phase.DEPLOYING and not self.waiting(dep):
                return self._confirm_step(dep, now, out)
            return False
        failures = []
        for command in dep.rollout_commands():
            if command.state in _FAILED_STATES or self._expire(dep, command, now, out):
                failures.append(self._command_evidence(command))
        if failures:
            hosts = ", ".join(sorted({f["host"] for f in failures}))
            self.start_rollback(
                dep,
                Trigger.FAIL,
                now,
                out,
                reason=f"command failed or unanswered on {hosts}",
                evidence={"rule": "command", "commands": failures},
            )
            return True
        result = self.judgement(dep, now)
        if result is not None and result.outcome is Outcome.FAIL:
            self.start_rollback(
                dep,
                Trigger.FAIL,
                now,
                out,
                reason="; ".join(r.message for r in result.failed),
                evidence=result.evidence(),
            )
            return True
        self._alert_once(dep, result, now, out)
        if phase is Phase.DEPLOYING:
            return self._confirm_step(dep, now, out)
        if phase is Phase.BAKING:
            return self._baking(dep, result, now, out)
        if phase is Phase.HELD:
            if dep.hold_reason == "missing_data" and result is not None:
                if result.outcome is Outcome.FLEET:
                    return self._hold(dep, "fleet_incident", result, now, out)
                if result.outcome is not Outcome.MISSING:
                    self.fire(
                        dep,
                        Trigger.CLEARED,
                        now,
                        out,
                        "every judged host reports again; bake continues",
                        evidence=result.evidence(),
                        notify=("resumed", "info"),
                    )
                    return True
            return False
        if phase is Phase.VERIFYING:
            return self._verify(dep, result, now, out)
        return False

    def _confirm_step(self, dep: Deployment, now: float, out: Outbox) -> bool:
        step = dep.steps[dep.step]
        mine = self._attempt(dep)
        if len(mine) < len(step.orders) or not all(self.confirmed(c) for c in mine):
            return False
        dep.bake_elapsed = 0.0
        dep.bake_length = step.bake
        dep.extended = False
        self.fire(
            dep,
            Trigger.ACKED,
            now,
            out,
            f"step {step.name}: every host confirmed; baking {step.bake:g} s",
            evidence={"hosts": sorted(c.host for c in mine)},
        )
        self.open_window(dep, now)
        return True

    def _baking(self, dep: Deployment, result: Judgement | None, now: float, out: Outbox) -> bool:
        if result is None:
            raise EngineError(f"deployment {dep.id} is baking with nobody to judge")
        if result.outcome is Outcome.FLEET:
            return self._hold(dep, "fleet_incident", result, now, out)
        if result.outcome is Outcome.MISSING:
            return self._hold(dep, "missing_data", result, now, out)
        if dep.bake_at(now) + EPSILON < dep.bake_length:
            return False
        step = dep.steps[dep.step]
        if result.outcome is Outcome.PASS:
            self.fire(
                dep,
                Trigger.BAKE_PASSED,
                now,
                out,
                f"step {step.name} passed its {dep.bake_length:g} s bake",
                evidence=result.evidence(),
            )
            return True
        extension = step.bake * self.state.policy(dep.environment).inconclusive_extension
        if not dep.extended and extension > 0:
            dep.extended = True
            dep.bake_length += extension
            self.fire(
                dep,
                Trigger.EXTEND,
                now,
                out,
                f"step {step.name} inconclusive at the end of its bake; "
                f"extended by {extension:g} s",
                evidence={"extension": extension, **result.evidence()},
            )
            return True
        return self._hold(dep, "inconclusive", result, now, out)

    def _hold(
        self, dep: Deployment, reason: HoldReason, result: Judgement, now: float, out: Outbox
    ) -> bool:
        texts = {
            "fleet_incident": "the baseline shows the same breach: a fleet-wide incident, "
            "not this version; held (resume or roll back)",
            "missing_data": "judged hosts without data; held (rolled back after the grace)",
            "inconclusive": "still inconclusive after the extension; held for an operator "
            "(promote, resume to bake longer, or roll back)",
        }
        message = texts[reason]
        if reason != "missing_data":
            blocking = [r.message for r in (result.failed or result.blocking())]
            if blocking:
                message = f"{message}: {'; '.join(blocking)}"
        else:
            message = f"{message}: " + "; ".join(
                f"{h} {why}" for h, (_, why) in sorted(result.missing.items())
            )
        if dep.phase is Phase.HELD:
            # A hold changing its reason (missing data turning out to be fleet-wide).
            dep.hold_reason = reason
            dep.summary = message
            out.touch(dep)
            out.record(
                now, "deployment.hold", message, deployment=dep.id, evidence=result.evidence()
            )
            changed = False
        else:
            self.fire(
                dep,
                Trigger.HOLD,
                now,
                out,
                message,
                evidence={"reason": reason, **result.evidence()},
                notify=("held", "warning"),
            )
            dep.hold_reason = reason
            changed = True
        if reason == "fleet_incident":
            # The window holds the incident's data for canary and baseline alike; a
            # resumed bake must judge the version on data from after it.
            self.open_window(dep, now)
        return changed

    def _alert_once(
        self, dep: Deployment, result: Judgement | None, now: float, out: Outbox
    ) -> None:
        """Missing data or a fleet-wide breach outside BAKING (deploying, paused,
        awaiting approval, verifying): nothing to hold, but people hear of it once."""
        runtime = self.runtime(dep)
        conditions = {
            "missing": result is not None and result.outcome is Outcome.MISSING,
            "fleet": result is not None and result.outcome is Outcome.FLEET,
        }
        for key, present in conditions.items():
            if not present:
                runtime.notified.discard(key)
                continue
            if key in runtime.notified or dep.phase in (Phase.BAKING, Phase.HELD):
                continue
            assert result is not None
            runtime.notified.add(key)
            text = (
                "judged hosts without data: "
                + "; ".join(f"{h} {why}" for h, (_, why) in sorted(result.missing.items()))
                if key == "missing"
                else "fleet-wide breach (baseline too): "
                + "; ".join(r.message for r in result.failed)
            )
            out.record(
                now, f"deployment.{key}", text, deployment=dep.id, evidence=result.evidence()
            )
            out.notify(
                now,
                f"deployment.{key}",
                "warning",
                f"{dep.id}: {text}",
                environment=dep.environment,
                deployment=dep.id,
                evidence=result.evidence(),
            )

    def _choose_next(self, dep: Deployment, now: float, out: Outbox) -> None:
        following = dep.step + 1
        if following >= len(dep.steps):
            self.fire(
                dep,
                Trigger.STEPS_DONE,
                now,
                out,
                "every step passed; verifying every host reports the new version, healthy",
            )
            return
        step = dep.steps[following]
        if step.approval and following not in dep.approved:
            self.fire(
                dep,
                Trigger.APPROVAL_REQUIRED,
                now,
                out,
                f"step {step.name} waits for an operator's approve",
                notify=("approval_needed", "info"),
            )
            return
        self.advance_step(dep, Trigger.NEXT_STEP, now, out)

    def advance_step(
        self,
        dep: Deployment,
        trigger: Trigger,
        now: float,
        out: Outbox,
        *,
        actor: str | None = None,
        reason: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """Send the next step's orders (after a passed bake or an approve)."""
        step = dep.steps[dep.step + 1]
        hosts = [o.host for o in step.orders]
        message = f"promoted to {step.name} ({len(hosts)} hosts)"
        if reason:
            message = f"{message}: {reason}"
        self.fire(
            dep,
            trigger,
            now,
            out,
            message,
            actor=actor,
            evidence={
                "hosts": hosts,
                "percent": step.percent,
                "next_step": step.index,
                **(evidence or {}),
            },
            notify=("promoted", "info"),
        )
        dep.step = step.index
        self.send(dep, list(step.orders), now, out, purpose="rollout", step=step.index)

    def _verify(self, dep: Deployment, result: Judgement | None, now: float, out: Outbox) -> bool:
        expected_slot = {o.host: o.expect_slot for o in dep.steps[-1].orders}
        wrong = {}
        for host in sorted(dep.targets):
            record = self.state.fleet.get(host)
            if (
                record is None
                or record.version != dep.version
                or (expected_slot.get(host) is not None and record.slot != expected_slot[host])
            ):
                wrong[host] = {
                    "version": record.version if record else None,
                    "slot": record.slot if record else None,
                }
        unhealthy = (
            []
            if result is None
            else [
                r.evidence()
                for r in result.results
                if r.rule == "health" and r.verdict is not Verdict.PASS
            ]
        )
        missing = {} if result is None else result.missing
        if wrong or unhealthy or missing:
            return False
        self.fire(
            dep,
            Trigger.VERIFIED,
            now,
            out,
            f"completed: every host ({len(dep.targets)}) reports {dep.version} and is healthy",
            evidence=result.evidence() if result is not None else {},
            notify=("completed", "info"),
        )
        return True

    # Rollback --------------------------------------------------------------------------

    def stable_version(self, dep: Deployment) -> str | None:
        """The last stable version. For a completed deployment: the newest deployment
        before it in the environment's history that completed and was not rolled back
        since. Otherwise (or without such history): what the hosts ran at its start."""
        if dep.phase is Phase.COMPLETED:
            entries = [h for h in self.state.history if h.environment == dep.environment]
            seen, undone = False, set()
            for entry in reversed(entries):
                if entry.deployment == dep.id:
                    seen = True
                elif entry.outcome == "rolled_back":
                    undone.add(entry.deployment)
                elif seen and entry.outcome == "completed" and entry.deployment not in undone:
                    return entry.version
        return dep.from_version

    def start_rollback(
        self,
        dep: Deployment,
        trigger: Trigger,
        now: float,
        out: Outbox,
        *,
        reason: str,
        evidence: dict[str, Any],
        actor: str | None = None,
    ) -> None:
        """Return every host that got (or may have got) the new version to the last
        stable version: the canary's and direct's hosts by a rollback command, blue-green's
        switched hosts by switching back. After completion that is every target host; a
        retry after a failed rollback repeats it where it was not confirmed."""
        retry = dep.phase is Phase.FAILED and dep.rollback_version is not None
        if retry:
            stable, hosts = dep.rollback_version, set(dep.rollback_hosts)
        else:
            stable = self.stable_version(dep)
            whole_fleet = dep.phase is Phase.COMPLETED
            if whole_fleet:
                hosts = set(dep.targets)
            elif dep.strategy == "blue-green":
                # Before the switch no host serves the new version: nothing to revert.
                hosts = {c.host for c in dep.rollout_commands() if c.action == "switch"}
            else:
                hosts = dep.ordered_hosts()
        self.fire(
            dep,
            trigger,
            now,
            out,
            f"rolling back to {stable}: {reason}",
            evidence={
                "stable_version": stable,
                "from_version": dep.from_version,
                "hosts": sorted(hosts),
                "reason": reason,
                **evidence,
            },
            actor=actor,
            notify=("rolling_back", "critical" if trigger is Trigger.FAIL else "warning"),
        )
        dep.rollback_version = stable
        dep.rollback_reason = reason
        dep.rollback_started = now
        dep.rollback_hosts = sorted(hosts)
        for command in dep.commands.values():
            if not command.final:
                self.cancel(dep, command, out, "superseded by rollback")
        if retry:
            done = {
                c.host
                for c in dep.commands.values()
                if c.purpose == "rollback" and self.confirmed(c)
            }
            hosts -= done
        if dep.strategy == "blue-green":
            orders = bluegreen.rollback_orders(dep.targets, sorted(hosts))
        else:
            orders = canary.rollback_orders(sorted(hosts), stable)
        self.send(dep, orders, now, out, purpose="rollback", step=-1)

    def _rollback_progress(self, dep: Deployment, now: float, out: Outbox) -> bool:
        timeout = self.state.policy(dep.environment).ack_timeout
        started = dep.rollback_started if dep.rollback_started is not None else now
        attempt = [
            c
            for c in dep.commands.values()
            if c.purpose == "rollback" and c.issued >= started and c.state != "cancelled"
        ]
        for command in attempt:
            record = self.state.fleet.get(command.host)
            if not command.final and record is not None and not record.online:
                # An offline host cannot answer; it is rolled back when it returns.
                command.deadline = max(command.deadline, now + timeout)
                continue
            self._expire(dep, command, now, out)
        failed = [c for c in attempt if c.state in _FAILED_STATES]
        waiting = [c for c in attempt if c not in failed and not self.confirmed(c)]
        late = [c for c in waiting if c.state == "succeeded" and now >= c.deadline]
        if waiting and len(late) < len(waiting):
            return False
        failed += late
        stable = dep.rollback_version
        expected_slot = (
            {t.host: t.from_slot for t in dep.targets.values()}
            if dep.strategy == "blue-green"
            else {}
        )
        off = {}
        for host in sorted(dep.targets):
            record = self.state.fleet.get(host)
            if record is not None and (
                record.version != stable
                or (expected_slot.get(host) is not None and record.slot != expected_slot[host])
            ):
                off[host] = {"version": record.version, "slot": record.slot}
        # Statuses may lag the acks (and after a restart, arrive again): give them the
        # ack timeout, counted from the engine's own (re)start at the earliest.
        since = self.state.since if self.state.since is not None else started
        if off and not failed and now < max(started, since) + timeout:
            return False
        unhealthy = sorted(
            f"{host}/{name}"
            for host in dep.targets
            for name, window in self.state.plain_checks(host).items()
            if window.last_ok is False
        )
        evidence = {
            "stable_version": stable,
            "reason": dep.rollback_reason,
            "commands": [self._command_evidence(c) for c in attempt],
            "not_on_stable": off,
            "unhealthy": unhealthy,
        }
        if failed or off:
            self.fire(
                dep,
                Trigger.ROLLBACK_FAILED,
                now,
                out,
                f"rollback to {stable} not verified on "
                + ", ".join(sorted({c.host for c in failed} | set(off)))
                + "; needs a person (rollback again to retry)",
                evidence=evidence,
                notify=("rollback_failed", "critical"),
            )
            return True
        health = f"; still unhealthy: {', '.join(unhealthy)}" if unhealthy else "; healthy"
        self.fire(
            dep,
            Trigger.ROLLBACK_DONE,
            now,
            out,
            f"rolled back: every host reports {stable}{health} (reason: {dep.rollback_reason})",
            evidence=evidence,
            notify=("rolled_back", "warning" if unhealthy else "info"),
        )
        return True

    # Finishing -------------------------------------------------------------------------

    def _finish(self, dep: Deployment, now: float) -> None:
        dep.finished = now
        outcome = {
            Phase.COMPLETED: "completed",
            Phase.ROLLED_BACK: "rolled_back",
            Phase.FAILED: "failed",
            Phase.REFUSED: "refused",
        }[dep.phase]
        self.state.history.append(
            HistoryEntry(
                deployment=dep.id,
                environment=dep.environment,
                version=dep.version,
                from_version=dep.from_version,
                outcome=outcome,  # type: ignore[arg-type]
                finished=now,
            )
        )
        limit = self.state.config.engine.history_limit
        mine = [h for h in self.state.history if h.environment == dep.environment]
        if len(mine) > limit:
            drop = {id(h) for h in mine[: len(mine) - limit]}
            self.state.history = [h for h in self.state.history if id(h) not in drop]
        # Keep in full only this deployment and the environment's latest completed one
        # (the one a manual rollback can still undo); the rest lives on in the history.
        finished = [
            d
            for d in self.state.deployments.values()
            if d.environment == dep.environment and d.phase in TERMINAL
        ]
        completed = [d for d in finished if d.phase is Phase.COMPLETED]
        keep = {dep.id}
        if completed:
            keep.add(max(completed, key=lambda d: d.finished or 0.0).id)
        for other in finished:
            if other.id not in keep:
                self.forget(other)
        for host in dep.targets:
            windows = self.state.windows.get(host)
            if windows is not None:
                windows.close()
        self.state.runtimes.pop(dep.id, None)

    def forget(self, dep: Deployment) -> None:
        for command_id in dep.commands:
            self.state.commands.pop(command_id, None)
        self.state.deployments.pop(dep.id, None)
        self.state.runtimes.pop(dep.id, None)


def targets_of(records: list[Any]) -> dict[str, TargetHost]:
    return {
        r.host: TargetHost(
            host=r.host, from_version=r.version, from_slot=r.slot, labels=dict(r.labels)
        )
        for r in records
    }


def plan(policy: EnvironmentPolicy, dep: Deployment) -> list[Step]:
    return PLANNERS[dep.strategy](policy, dep.id, dep.version, list(dep.targets.values()))
