"""Driving deployments: every automatic decision, made by firing triggers through the
transition table (phases.py) and never by setting a phase directly.

``drive`` advances a deployment as far as the facts at ``now`` allow. It is called after
every event that can change those facts (a sample of a judged host, a status, a command
result, a tick), so a decision is taken at the first moment its evidence exists: a
breaching sample rolls back on arrival, a bake passes at its exact end (the engine asks
to be woken then), a host's Will starts the missing-data grace at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.engine import bluegreen, canary, direct
from coordinator.engine.actions import Severity
from coordinator.engine.cohorts import Cohorts
from coordinator.engine.commands import FAILED_STATES, Commands
from coordinator.engine.deployment import (
    Deployment,
    HistoryEntry,
    Hold,
    Step,
    TargetHost,
)
from coordinator.engine.errors import EngineError
from coordinator.engine.judge import Judgement, Outcome
from coordinator.engine.phases import TERMINAL, Log, Phase, Trigger, fire
from coordinator.engine.reach import (
    Reach,
    deploy_order,
    latest_finished,
    ordered_by_now,
    rollback_order,
)
from coordinator.engine.rollback import Rollback
from coordinator.engine.state import Effects, EngineState
from coordinator.engine.verification import Gate, Verification
from shared.config.coordinator import EnvironmentPolicy
from shared.evidence import CommandState, Converging, HealthResult, HoldReason, Verdict
from shared.kinds import EventKind

# A deployment settles within a handful of transitions per event; more is a bug.
MAX_TRANSITIONS_PER_EVENT = 32
# Floating-point slack when comparing the bake clock with its length.
EPSILON = 1e-6

PLANNERS = {"canary": canary.plan, "blue-green": bluegreen.plan, "direct": direct.plan}


class Driver:
    def __init__(self, state: EngineState) -> None:
        self.state = state
        self.cohorts = Cohorts(state)
        self.commands = Commands(state, self.cohorts)
        self.reach = Reach(state)
        self.rollback = Rollback(state, self.commands, self.reach, self.fire)
        self.verification = Verification(state, self.rollback)

    def fire(
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
    ) -> None:
        """phases.fire, then what follows the change: a finished deployment goes to the
        history, a running one's cohorts are rebuilt for its new phase."""
        after = fire(dep, trigger, now, out, message, evidence=evidence, actor=actor, notify=notify)
        if after in TERMINAL:
            self._finish(dep, now)
        else:
            self.cohorts.runtime(dep).waiting = None
            self.cohorts.rebuild(dep)

    def drive(self, dep: Deployment, now: float, out: Effects, *, full: bool = True) -> None:
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

    def samples_arrived(self, dep: Deployment, host: str, now: float, out: Effects) -> None:
        """After a judged host's samples: drive fully only when they fail a rule (checked
        in constant time) or may end a hold for missing data."""
        if self.cohorts.failed_on_arrival(dep, host, now) or (
            dep.phase is Phase.HELD
            and dep.hold_reason == "missing_data"
            and self.cohorts.runtime(dep).members.get(host) == "canary"
        ):
            self.drive(dep, now, out)

    def start_rollback(
        self,
        dep: Deployment,
        trigger: Trigger,
        now: float,
        out: Effects,
        *,
        reason: str,
        evidence: dict[str, Any],
        actor: str | None = None,
    ) -> None:
        self.rollback.start(dep, trigger, now, out, reason=reason, evidence=evidence, actor=actor)

    def _advance(self, dep: Deployment, now: float, out: Effects, *, full: bool) -> bool:
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
                    notify=(EventKind.DEPLOYMENT_REFUSED, "warning"),
                )
                return True
            return False  # preflight reports and operator requests move it (operator.py)
        if phase is Phase.ROLLING_BACK:
            if not full and self.commands.waiting(dep):
                return False
            return self.rollback.progress(dep, now, out)
        if phase is Phase.PROMOTING:
            self._choose_next(dep, now, out)
            return True
        if not full:
            if phase is Phase.DEPLOYING and not self.commands.waiting(dep):
                return self._confirm_step(dep, now, out)
            return False
        self._drop_unreachable(dep, now, out)
        failures: list[CommandState] = []
        for command in dep.rollout_commands():
            if command.state in FAILED_STATES or self.commands.expire(dep, command, now, out):
                failures.append(self.commands.evidence(command))
        if failures:
            hosts = ", ".join(sorted({f.host for f in failures}))
            self.rollback.start(
                dep,
                Trigger.FAIL,
                now,
                out,
                reason=f"command failed or unanswered on {hosts}",
                evidence={"rule": "command", "commands": failures},
            )
            return True
        result = self.cohorts.judgement(dep, now)
        if result is not None and result.outcome is Outcome.FAIL:
            self.rollback.start(
                dep,
                Trigger.FAIL,
                now,
                out,
                reason="; ".join(r.message for r in result.failed),
                evidence=result.fields(),
            )
            return True
        self._alert_once(dep, result, now, out)
        if phase is Phase.DEPLOYING:
            return self._confirm_step(dep, now, out)
        if phase is Phase.BAKING:
            return self._baking(dep, result, now, out)
        if phase is Phase.HELD:
            if dep.hold_reason == "unreachable":
                return self._unreachable_cleared(dep, result, now, out)
            if (
                dep.hold_reason == "missing_data"
                and result is not None
                and self.state.broker_connected
            ):
                # Away from the broker the engine hears nobody: that the hosts are
                # not missing then says nothing of whether they report again.
                if result.outcome is Outcome.FLEET:
                    return self._hold(dep, "fleet_incident", result, now, out)
                if result.outcome is not Outcome.MISSING:
                    self.fire(
                        dep,
                        Trigger.CLEARED,
                        now,
                        out,
                        "every judged host reports again; bake continues",
                        evidence=result.fields(),
                        notify=(EventKind.DEPLOYMENT_RESUMED, "info"),
                    )
                    return True
            return False
        if phase is Phase.VERIFYING:
            return self._verify(dep, result, now, out)
        return False

    def _confirm_step(self, dep: Deployment, now: float, out: Effects) -> bool:
        step = dep.steps[dep.step]
        mine = self.commands.attempt(dep)
        if not all(self.commands.confirmed(c) for c in mine):
            return False
        skipped = set(dep.unreachable)
        confirmed = {c.host for c in mine}
        if any(o.host not in confirmed and o.host not in skipped for o in step.orders):
            return False
        dep.bake.restart(step.bake)
        unreachable = sorted(o.host for o in step.orders if o.host not in confirmed)
        away = f" ({', '.join(unreachable)} unreachable, not waited for)" if unreachable else ""
        self.fire(
            dep,
            Trigger.ACKED,
            now,
            out,
            f"step {step.name}: every reachable host confirmed{away}; baking {step.bake:g} s",
            evidence={"hosts": sorted(confirmed), "unreachable": unreachable},
        )
        self.cohorts.open_window(dep, now)
        return True

    def _baking(self, dep: Deployment, result: Judgement | None, now: float, out: Effects) -> bool:
        if result is None:
            if not dep.unreachable:
                raise EngineError(f"deployment {dep.id} is baking with nobody to judge")
            # Every judged host of the steps so far was unreachable when its order would
            # have gone out: nothing to judge the version on. A person decides.
            if not set(dep.unreachable) <= set(dep.accepted_unreachable):
                return self._hold_unreachable(dep, now, out)
            if dep.bake.at(now) + EPSILON < dep.bake.length:
                return False
            self.fire(
                dep,
                Trigger.BAKE_PASSED,
                now,
                out,
                f"step {dep.steps[dep.step].name}: no judged host was reachable; going on "
                "as the operator chose",
                evidence={"unreachable": list(dep.unreachable)},
            )
            return True
        if result.outcome is Outcome.FLEET:
            return self._hold(dep, "fleet_incident", result, now, out)
        if result.outcome is Outcome.MISSING:
            return self._hold(dep, "missing_data", result, now, out)
        if dep.bake.at(now) + EPSILON < dep.bake.length:
            return False
        step = dep.steps[dep.step]
        if result.outcome is Outcome.PASS:
            if dep.step + 1 < len(dep.steps) and self._too_many_away(dep, now):
                return self._hold_unreachable(dep, now, out, result)
            self.fire(
                dep,
                Trigger.BAKE_PASSED,
                now,
                out,
                f"step {step.name} passed its {dep.bake.length:g} s bake",
                evidence=result.fields(),
            )
            return True
        extension = step.bake * self.state.policy(dep.environment).inconclusive_extension
        if not dep.bake.extended and extension > 0:
            dep.bake.extended = True
            dep.bake.length += extension
            self.fire(
                dep,
                Trigger.EXTEND,
                now,
                out,
                f"step {step.name} inconclusive at the end of its bake; "
                f"extended by {extension:g} s",
                evidence={"extension": extension, **result.fields()},
            )
            return True
        return self._hold(dep, "inconclusive", result, now, out)

    def _hold(
        self, dep: Deployment, reason: HoldReason, result: Judgement, now: float, out: Effects
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
            # Saved with the hold: a restore does not give these hosts a fresh grace.
            for host, found in result.missing.items():
                self.state.carried.setdefault(host, found)
        if dep.phase is Phase.HELD:
            # A hold changing its reason (missing data turning out to be fleet-wide).
            dep.hold = Hold(reason=reason)
            dep.summary = message
            out.touch(dep)
            out.record(
                now,
                EventKind.DEPLOYMENT_HOLD,
                message,
                deployment=dep.id,
                evidence=result.evidence(),
            )
            changed = False
        else:
            self.fire(
                dep,
                Trigger.HOLD,
                now,
                out,
                message,
                evidence={"reason": reason, **result.fields()},
                notify=(EventKind.DEPLOYMENT_HELD, "warning"),
            )
            dep.hold = Hold(reason=reason)
            changed = True
        if reason == "fleet_incident":
            # The window holds the incident's data for canary and baseline alike; a
            # resumed bake must judge the version on data from after it.
            self.cohorts.open_window(dep, now)
        return changed

    # Hosts that are away ---------------------------------------------------------------

    def _drop_unreachable(self, dep: Deployment, now: float, out: Effects) -> None:
        """Stop waiting for the current step's commands to hosts that became unreachable
        (offline, or silent past the grace): their ack timeout would otherwise fail a
        good step. They are listed, not judged, and converged when they return."""
        if dep.phase is not Phase.DEPLOYING:
            return
        dropped = []
        for command in self.commands.attempt(dep):
            if not self.commands.awaited(command) or not self.reach.gone(
                command.host, command.deadline, now
            ):
                continue
            self.commands.cancel(dep, command, out, "host unreachable; converged when it returns")
            dropped.append(command.host)
        if dropped:
            dep.mark_unreachable(dropped)
            self.cohorts.runtime(dep).waiting = None
            self.cohorts.rebuild(dep)

    def _too_many_away(self, dep: Deployment, now: float) -> bool:
        _, share = self.reach.share(dep, now)
        return share > self.state.policy(dep.environment).unreachable_share + EPSILON

    def _hold_unreachable(
        self, dep: Deployment, now: float, out: Effects, result: Judgement | None = None
    ) -> bool:
        """Hold for an operator: more target hosts unreachable than the policy tolerates
        (or none of the judged ones left). Never a rollback: nothing says the version is
        bad."""
        hosts, share = self.reach.share(dep, now)
        tolerated = self.state.policy(dep.environment).unreachable_share
        message = (
            f"{len(hosts)} of {len(dep.targets)} target hosts unreachable ({share:.0%}, "
            f"the policy tolerates {tolerated:.0%}): {', '.join(hosts)}; held (resume to "
            "go on without them, or roll back)"
            if result is not None
            else f"no judged host is reachable ({', '.join(dep.unreachable)}); held (resume "
            "to go on, or roll back)"
        )
        self.fire(
            dep,
            Trigger.HOLD,
            now,
            out,
            message,
            evidence={
                "reason": "unreachable",
                "unreachable": hosts,
                **(result.fields() if result is not None else {}),
            },
            notify=(EventKind.DEPLOYMENT_HELD, "warning"),
        )
        dep.hold = Hold(reason="unreachable")
        return True

    def _unreachable_cleared(
        self, dep: Deployment, result: Judgement | None, now: float, out: Effects
    ) -> bool:
        """A hold for unreachable hosts ends by itself once few enough are away."""
        if result is None or self._too_many_away(dep, now):
            return False
        self.fire(
            dep,
            Trigger.CLEARED,
            now,
            out,
            "enough target hosts reachable again; the deployment goes on",
            evidence={**result.fields(), "unreachable": self.reach.share(dep, now)[0]},
            notify=(EventKind.DEPLOYMENT_RESUMED, "info"),
        )
        return True

    def send_first_step(self, dep: Deployment, now: float, out: Effects) -> None:
        """The first step's orders, to the hosts reachable now (the gate has just seen
        every target online; one may have gone since)."""
        step = dep.steps[0]
        reachable = [o for o in step.orders if self.reach.reachable(o.host, now)]
        dep.mark_unreachable({o.host for o in step.orders} - {o.host for o in reachable})
        self.commands.send(dep, reachable, now, out, purpose="rollout", step=0)

    def converge(self, host: str, session: int, now: float, out: Effects) -> None:
        """A host came back (its birth status): bring it to the version it should run
        now. While a deployment runs: its current target for the host (the new version
        once a step has ordered it, the stable one otherwise; the stable one while rolling
        back). Otherwise: the version the environment's last deployment left (the new one
        after a completion, the stable one after a rollback). One command at a time per
        host; none when it already runs that version."""
        record = self.state.fleet.get(host)
        if record is None or not record.online:
            return
        dep = self.state.active_in(record.environment)
        if dep is not None and host not in dep.targets:
            return
        because: str
        if dep is not None:
            if dep.phase is Phase.PREFLIGHT:
                return
            because = "deployment"
            if dep.phase is Phase.ROLLING_BACK:
                stable = dep.rollback.version if dep.rollback is not None else dep.from_version
                version, order, purpose = stable, rollback_order(host, stable), "rollback"
            elif ordered_by_now(dep, host):
                version, order, purpose = dep.version, deploy_order(host, dep.version), "converge"
            else:
                version = dep.from_version
                order, purpose = rollback_order(host, version), "converge"
        else:
            dep = latest_finished(self.state, record.environment, host)
            if dep is None:
                return
            if dep.phase is Phase.COMPLETED:
                because = "completed"
                version, order = dep.version, deploy_order(host, dep.version)
            else:
                because = "rolled_back"
                version = dep.rollback.version if dep.rollback is not None else dep.from_version
                order = rollback_order(host, version)
            purpose = "converge"
        if version is None or dep.strategy == "blue-green":
            # Blue-green hosts carry two slots: bringing one back is a deploy to the
            # inactive slot and a switch, which a person starts (see the README).
            return
        if record.version == version:
            return
        ttl = self.state.config.command_ttl
        for command in list(dep.commands.values()):
            if command.host != host or command.final:
                continue
            if now - command.issued < ttl:
                return  # one in flight already (re-published by id until answered)
            self.commands.cancel(dep, command, out, "expired while the host was away")
        self.commands.send(
            dep,
            [order],
            now,
            out,
            purpose="rollback" if purpose == "rollback" else "converge",
            step=-1 if purpose == "rollback" else dep.step,
        )
        command = dep.commands[f"{dep.id}-c{dep.counter:04d}"]
        if dep.phase in TERMINAL:
            self.state.runtimes.pop(dep.id, None)
        out.record(
            now,
            EventKind.HOST_CONVERGING,
            f"{host} is back (session {session}) on {record.version}: {order.action} to "
            f"{version}, "
            + {
                "deployment": f"what {dep.id} has it run now",
                "completed": f"what {dep.id} completed",
                "rolled_back": f"what {dep.id} rolled back to",
            }[because],
            deployment=dep.id,
            host=host,
            evidence=Converging(
                command=command.id,
                action=order.action,
                version=version,
                reported_version=record.version,
                because=because,  # type: ignore[arg-type]
                session=session,
            ),
        )

    def _alert_once(
        self, dep: Deployment, result: Judgement | None, now: float, out: Effects
    ) -> None:
        """Missing data or a fleet-wide breach outside BAKING (deploying, paused,
        awaiting approval, verifying): nothing to hold, but people hear of it once."""
        runtime = self.cohorts.runtime(dep)
        conditions = {
            "missing": result is not None and result.outcome is Outcome.MISSING,
            "fleet": result is not None and result.outcome is Outcome.FLEET,
        }
        kinds = {"missing": EventKind.DEPLOYMENT_MISSING, "fleet": EventKind.DEPLOYMENT_FLEET}
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
            out.record(now, kinds[key], text, deployment=dep.id, evidence=result.evidence())
            out.notify(
                now,
                kinds[key],
                "warning",
                f"{dep.id}: {text}",
                environment=dep.environment,
                deployment=dep.id,
                evidence=result.evidence(),
            )

    def _choose_next(self, dep: Deployment, now: float, out: Effects) -> None:
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
                notify=(EventKind.DEPLOYMENT_APPROVAL_NEEDED, "info"),
            )
            return
        self.advance_step(dep, Trigger.NEXT_STEP, now, out)

    def advance_step(
        self,
        dep: Deployment,
        trigger: Trigger,
        now: float,
        out: Effects,
        *,
        actor: str | None = None,
        reason: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """Send the next step's orders (after a passed bake or an approve)."""
        step = dep.steps[dep.step + 1]
        reachable = [o for o in step.orders if self.reach.reachable(o.host, now)]
        skipped = sorted(o.host for o in step.orders if o not in reachable)
        hosts = [o.host for o in reachable]
        message = f"promoted to {step.name} ({len(hosts)} hosts)"
        if skipped:
            message = f"{message}; {', '.join(skipped)} unreachable, not commanded"
        if reason:
            message = f"{message}: {reason}"
        dep.mark_unreachable(skipped)
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
                "unreachable": skipped,
                **(evidence or {}),
            },
            notify=(EventKind.DEPLOYMENT_PROMOTED, "info"),
        )
        dep.step = step.index
        self.commands.send(dep, reachable, now, out, purpose="rollout", step=step.index)

    def _verify(self, dep: Deployment, result: Judgement | None, now: float, out: Effects) -> bool:
        expected_slot = {o.host: o.expect_slot for o in dep.steps[-1].orders}
        # A host it could not reach is not waited for: it is converged when it returns.
        away = self.reach.away(dep, now) | set(dep.unreachable)
        wrong = {}
        for host in sorted(set(dep.targets) - away):
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
                r
                for r in result.results
                if isinstance(r, HealthResult) and r.verdict is not Verdict.PASS
            ]
        )
        missing = {} if result is None else result.missing
        if wrong or unhealthy or missing:
            return False
        gate = self.verification.gate(dep, now, out)
        if gate is not Gate.PASSED:
            return gate is Gate.CHANGED
        pending = sorted(
            h for h in away if (r := self.state.fleet.get(h)) is None or r.version != dep.version
        )
        dep.mark_unreachable(pending)
        reached = len(dep.targets) - len(pending)
        if pending:
            message = (
                f"completed: {reached} hosts report {dep.version} and are healthy; "
                f"{', '.join(pending)} unreachable, will be brought to {dep.version} "
                "when it returns"
            )
        else:
            message = f"completed: every host ({reached}) reports {dep.version} and is healthy"
        if dep.verification:
            names = ", ".join(v.name for v in dep.verification)
            message = f"{message}; verification passed ({names})"
        self.fire(
            dep,
            Trigger.VERIFIED,
            now,
            out,
            message,
            evidence={
                **(result.fields() if result is not None else {}),
                "unreachable": pending,
                "verification": [{"name": v.name, "ok": v.ok} for v in dep.verification],
            },
            notify=(EventKind.DEPLOYMENT_COMPLETED, "info"),
        )
        return True

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
