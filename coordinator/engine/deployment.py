"""A deployment's state: everything needed to resume it after a crash, and nothing
that can be rebuilt from new data (sample windows are not here on purpose).

Plain msgspec Structs, so the shell persists them as JSON and the engine restores them
exactly. Mutable: the engine owns them and hands out copies (``copy``).
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from shared.config.coordinator import Strategy
from shared.messages import Action, Environment, Slot
from shared.phases import Phase

CommandState = Literal[
    "pending", "accepted", "succeeded", "failed", "rejected", "timed_out", "cancelled"
]
FINAL_STATES = frozenset({"succeeded", "failed", "rejected", "timed_out", "cancelled"})
Purpose = Literal["rollout", "rollback"]
HoldReason = Literal["fleet_incident", "missing_data", "inconclusive"]


class Order(Struct, frozen=True, kw_only=True):
    """One command a step sends, and what the host must report afterwards."""

    host: str
    action: Action
    version: str | None = None
    slot: Slot | None = None
    # After the ack, the host's status must show this version and slot (None: anything).
    expect_version: str | None = None
    expect_slot: Slot | None = None
    # Blue-green's deploy to the inactive slot changes nothing the status shows.
    confirm_status: bool = True


class Step(Struct, frozen=True, kw_only=True):
    index: int
    name: str
    percent: float
    orders: list[Order]
    # Seconds of analysis after every order is confirmed; the last step's is the watch.
    bake: float
    # Wait for an operator's approve before sending this step's orders.
    approval: bool = False
    # Judge each ordered host's checks for the slot it was deployed to (blue-green's
    # health window on the inactive slot) instead of its plain checks.
    judge_slot: bool = False


class CommandRecord(Struct, kw_only=True):
    id: str
    host: str
    purpose: Purpose
    step: int
    action: Action
    version: str | None = None
    slot: Slot | None = None
    expect_version: str | None = None
    expect_slot: Slot | None = None
    confirm_status: bool = True
    issued: float
    # Final answer expected by then; pushed back while a rollback waits for an offline host.
    deadline: float
    state: CommandState = "pending"
    detail: str = ""
    answered: float | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class TargetHost(Struct, kw_only=True):
    """A host the deployment covers, as it was when the deployment started."""

    host: str
    from_version: str | None = None
    from_slot: Slot | None = None
    labels: dict[str, str] = {}


class PreflightState(Struct, kw_only=True):
    name: str
    ok: bool | None = None
    output_tail: str = ""


class Deployment(Struct, kw_only=True):
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
    phase: Phase = Phase.PREFLIGHT
    paused_from: Phase | None = None
    hold_reason: HoldReason | None = None
    steps: list[Step] = []
    step: int = 0
    targets: dict[str, TargetHost] = {}
    commands: dict[str, CommandRecord] = {}
    counter: int = 0
    # The bake clock: seconds accumulated, the engine time the running stretch began
    # (None while stopped), and the length to reach (grows with the extension).
    bake_elapsed: float = 0.0
    bake_since: float | None = None
    bake_length: float = 0.0
    extended: bool = False
    window_start: float | None = None
    approved: list[int] = []
    preflight: list[PreflightState] = []
    # The shell must have reported every preflight command by then.
    preflight_deadline: float | None = None
    rollback_version: str | None = None
    rollback_reason: str | None = None
    rollback_started: float | None = None
    # The hosts the rollback returns to the stable version (kept for a retry).
    rollback_hosts: list[str] = []
    finished: float | None = None
    # The last decision in words, for `rollguard status`.
    summary: str = ""

    def next_command_id(self) -> str:
        self.counter += 1
        return f"{self.id}-c{self.counter:04d}"

    def bake_at(self, now: float) -> float:
        """Bake seconds elapsed at ``now``."""
        if self.bake_since is None:
            return self.bake_elapsed
        return self.bake_elapsed + max(0.0, now - self.bake_since)

    def stop_bake(self, now: float) -> None:
        self.bake_elapsed = self.bake_at(now)
        self.bake_since = None

    def rollout_commands(self) -> list[CommandRecord]:
        return [c for c in self.commands.values() if c.purpose == "rollout"]

    def ordered_hosts(self) -> set[str]:
        """Hosts that were sent a rollout order (whether it was confirmed or not)."""
        return {c.host for c in self.commands.values() if c.purpose == "rollout"}

    def current_step(self) -> Step | None:
        return self.steps[self.step] if 0 <= self.step < len(self.steps) else None

    def copy(self) -> Deployment:
        return _decoder.decode(_encoder.encode(self))

    def checkpoint(self, now: float) -> Deployment:
        """A copy to persist, its bake clock folded to ``now``: ``bake_elapsed`` is the
        bake time at ``now`` and ``bake_since`` only says whether the clock runs. A
        restore restarts a running clock at the moment it resumes, so the engine's own
        downtime never counts as bake time."""
        copy = self.copy()
        if copy.bake_since is not None:
            copy.bake_elapsed = self.bake_at(now)
            copy.bake_since = now
        return copy


class HistoryEntry(Struct, frozen=True, kw_only=True):
    """A finished deployment, kept per environment for the last stable version."""

    deployment: str
    environment: Environment
    version: str
    from_version: str | None
    outcome: Literal["completed", "rolled_back", "failed", "refused"]
    finished: float


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Deployment)
