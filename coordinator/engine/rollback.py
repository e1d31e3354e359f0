"""Rollback: back to the last stable version, verified.

The guide's manual rollback, automated: identify the last stable version (what the
hosts ran before, or the history's last completed deployment for one that finished),
stop the deployment (its unanswered commands are cancelled), revert every host that
got or may have got the new version, verify that every target host reports the stable
version, then notify. A host that is unreachable (offline, or silent past the grace)
cannot answer, and the rollback is not held up by it: it finishes when every reachable
host reports the stable version, lists the others, and frees the environment; each of
them is rolled back when it returns (Driver.converge). Any other command that fails or
stays unanswered ends in FAILED, for a person, who can retry.
"""

from __future__ import annotations

from typing import Any

from coordinator.engine import bluegreen, canary
from coordinator.engine.commands import FAILED_STATES, Commands
from coordinator.engine.deployment import Deployment, RollbackState
from coordinator.engine.phases import Fire, Phase, Trigger
from coordinator.engine.reach import Reach
from coordinator.engine.state import Effects, EngineState
from shared.kinds import EventKind


class Rollback:
    def __init__(self, state: EngineState, commands: Commands, reach: Reach, fire: Fire) -> None:
        self.state = state
        self.commands = commands
        self.reach = reach
        self.fire = fire

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

    def start(
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
        """Return every host that got (or may have got) the new version to the last
        stable version: the canary's and direct's hosts by a rollback command, blue-green's
        switched hosts by switching back. After completion that is every target host; a
        retry after a failed rollback repeats it where it was not confirmed."""
        previous = dep.rollback
        retry = dep.phase is Phase.FAILED and previous is not None and previous.version is not None
        if retry:
            assert previous is not None
            stable, hosts = previous.version, set(previous.hosts)
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
            notify=(
                EventKind.DEPLOYMENT_ROLLING_BACK,
                "critical" if trigger is Trigger.FAIL else "warning",
            ),
        )
        dep.rollback = RollbackState(
            version=stable, reason=reason, started=now, hosts=sorted(hosts)
        )
        for command in dep.commands.values():
            if not command.final:
                self.commands.cancel(dep, command, out, "superseded by rollback")
        if retry:
            done = {
                c.host
                for c in dep.commands.values()
                if c.purpose == "rollback" and self.commands.confirmed(c)
            }
            hosts -= done
        away = {h for h in hosts if not self.reach.reachable(h, now)}
        dep.mark_unreachable(away)
        hosts -= away
        if dep.strategy == "blue-green":
            orders = bluegreen.rollback_orders(dep.targets, sorted(hosts))
        else:
            orders = canary.rollback_orders(sorted(hosts), stable)
        self.commands.send(dep, orders, now, out, purpose="rollback", step=-1)

    def progress(self, dep: Deployment, now: float, out: Effects) -> bool:
        timeout = self.state.policy(dep.environment).ack_timeout
        rollback = dep.rollback
        started = rollback.started if rollback is not None else now
        reason = rollback.reason if rollback is not None else None
        for command in self.commands.attempt(dep):
            if self.commands.awaited(command) and self.reach.gone(
                command.host, command.deadline, now
            ):
                # An unreachable host cannot answer; it is rolled back when it returns.
                self.commands.cancel(dep, command, out, "host unreachable; rolled back on return")
                dep.mark_unreachable([command.host])
                continue
            self.commands.expire(dep, command, now, out)
        attempt = self.commands.attempt(dep)
        failed = [c for c in attempt if c.state in FAILED_STATES]
        waiting = [c for c in attempt if c not in failed and not self.commands.confirmed(c)]
        late = [c for c in waiting if c.state == "succeeded" and now >= c.deadline]
        if waiting and len(late) < len(waiting):
            return False
        failed += late
        # Only now every target's reachability: while commands are awaited (as right
        # after the rollback starts, in the path of its first commands) it is not needed.
        away = self.reach.away(dep, now)
        stable = rollback.version if rollback is not None else None
        expected_slot = (
            {t.host: t.from_slot for t in dep.targets.values()}
            if dep.strategy == "blue-green"
            else {}
        )
        off = {}
        for host in sorted(set(dep.targets) - away):
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
        # Away and (as far as anyone knows) not on the stable version: rolled back when
        # they return.
        pending = sorted(
            h
            for h in away
            if (r := self.state.fleet.get(h)) is None
            or r.version != stable
            or (expected_slot.get(h) is not None and r.slot != expected_slot[h])
        )
        evidence = {
            "stable_version": stable,
            "reason": reason,
            "commands": [self.commands.evidence(c) for c in attempt],
            "not_on_stable": off,
            "unhealthy": unhealthy,
            "unreachable": pending,
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
                notify=(EventKind.DEPLOYMENT_ROLLBACK_FAILED, "critical"),
            )
            return True
        health = f"; still unhealthy: {', '.join(unhealthy)}" if unhealthy else "; healthy"
        if pending:
            dep.mark_unreachable(pending)
            where = (
                f"{len(dep.targets) - len(pending)} hosts on {stable}{health}; "
                f"{', '.join(pending)} unreachable, will be rolled back when it returns"
            )
        else:
            where = f"every host reports {stable}{health}"
        self.fire(
            dep,
            Trigger.ROLLBACK_DONE,
            now,
            out,
            f"rolled back: {where} (reason: {reason})",
            evidence=evidence,
            notify=(EventKind.DEPLOYMENT_ROLLED_BACK, "warning" if unhealthy else "info"),
        )
        return True
