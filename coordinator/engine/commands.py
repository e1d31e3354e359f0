"""Commands: issued with deterministic ids, awaited, confirmed, timed out, cancelled.

A command is confirmed when the agent answered ``succeeded`` and its status shows what
the order expects (the new version, the switched slot); blue-green's deploy to the
inactive slot changes nothing a status shows and is confirmed by the answer alone.
Ids are ``<deployment>-c<counter>``: deterministic, unique per deployment, and kept
across a restart, so an agent that sees an id again answers from memory.
"""

from __future__ import annotations

from typing import Final

from coordinator.engine.actions import CancelCommand, SendCommand
from coordinator.engine.cohorts import Cohorts
from coordinator.engine.deployment import CommandRecord, Deployment, Order, Purpose
from coordinator.engine.phases import Phase
from coordinator.engine.state import Effects, EngineState
from shared.evidence import CommandState

FAILED_STATES: Final = frozenset({"failed", "rejected", "timed_out"})


class Commands:
    def __init__(self, state: EngineState, cohorts: Cohorts) -> None:
        self.state = state
        self.cohorts = cohorts

    def attempt(self, dep: Deployment) -> list[CommandRecord]:
        """The commands the current phase waits for: the step's orders while deploying,
        the rollback's while rolling back."""
        if dep.phase is Phase.DEPLOYING:
            return [
                c for c in dep.rollout_commands() if c.step == dep.step and c.state != "cancelled"
            ]
        if dep.phase is Phase.ROLLING_BACK:
            started = dep.rollback.started if dep.rollback is not None else 0.0
            return [
                c
                for c in dep.commands.values()
                if c.purpose == "rollback" and c.issued >= started and c.state != "cancelled"
            ]
        return []

    def waiting(self, dep: Deployment) -> dict[str, set[str]]:
        """Commands of the current attempt neither confirmed nor final, by host."""
        runtime = self.cohorts.runtime(dep)
        if runtime.waiting is None:
            runtime.waiting = {}
            for command in self.attempt(dep):
                if self.awaited(command):
                    runtime.waiting.setdefault(command.host, set()).add(command.id)
        return runtime.waiting

    def awaited(self, command: CommandRecord) -> bool:
        """Neither confirmed nor failed: an answer or a status is still to come."""
        return (
            command.state not in FAILED_STATES
            and command.state != "cancelled"
            and not (self.confirmed(command))
        )

    def heard_from(self, dep: Deployment, host: str) -> None:
        """A result or status from ``host``: drop its commands that are now settled."""
        runtime = self.cohorts.runtime(dep)
        if runtime.waiting is None:
            return
        ids = runtime.waiting.get(host)
        if not ids:
            return
        for command_id in list(ids):
            if not self.awaited(dep.commands[command_id]):
                ids.discard(command_id)
        if not ids:
            del runtime.waiting[host]

    def send(
        self,
        dep: Deployment,
        orders: list[Order],
        now: float,
        out: Effects,
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
            self.cohorts.runtime(dep).waiting = None
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
        self.cohorts.rebuild(dep)

    def cancel(self, dep: Deployment, command: CommandRecord, out: Effects, why: str) -> None:
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

    def expire(self, dep: Deployment, command: CommandRecord, now: float, out: Effects) -> bool:
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

    def evidence(self, command: CommandRecord) -> CommandState:
        record = self.state.fleet.get(command.host)
        return CommandState(
            command=command.id,
            host=command.host,
            action=command.action,
            state=command.state,
            detail=command.detail,
            issued=command.issued,
            deadline=command.deadline,
            reported_version=record.version if record else None,
            reported_slot=record.slot if record else None,
            expected_version=command.expect_version,
            expected_slot=command.expect_slot,
        )
