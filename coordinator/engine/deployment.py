"""A deployment's state: everything needed to resume it after a crash, and nothing
that can be rebuilt from new data (sample windows are not here on purpose).

Plain msgspec Structs, so the shell persists them as JSON and the engine restores them
exactly. Mutable: the engine owns them and hands out copies (``copy``).

Data that belongs to one phase lives in that phase's group (the bake clock, a hold, a
pause, a rollback) rather than in loose fields. Deployments stored in the earlier flat
layout (layout 1) are read into the groups on decode; see ``Deployment``.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from shared.config.coordinator import Strategy
from shared.evidence import HoldReason
from shared.messages import Action, Environment, Slot
from shared.phases import Phase

CommandStatus = Literal[
    "pending", "accepted", "succeeded", "failed", "rejected", "timed_out", "cancelled"
]
FINAL_STATES = frozenset({"succeeded", "failed", "rejected", "timed_out", "cancelled"})
# "converge": a host that came back, brought to the version it should run now.
Purpose = Literal["rollout", "rollback", "converge"]


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
    state: CommandStatus = "pending"
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


class BakeClock(Struct, kw_only=True):
    """A step's bake: seconds accumulated, the engine time the running stretch began
    (None while stopped: the clock runs only in BAKING), and the length to reach
    (grows with the one extension)."""

    elapsed: float = 0.0
    since: float | None = None
    length: float = 0.0
    extended: bool = False

    def at(self, now: float) -> float:
        """Bake seconds elapsed at ``now``."""
        if self.since is None:
            return self.elapsed
        return self.elapsed + max(0.0, now - self.since)

    def stop(self, now: float) -> None:
        self.elapsed = self.at(now)
        self.since = None

    def restart(self, length: float) -> None:
        """A new step's bake, not running until the deployment enters BAKING."""
        self.elapsed, self.since, self.length, self.extended = 0.0, None, length, False


class Hold(Struct, kw_only=True):
    """An automatic hold (HELD, and PAUSED from HELD): why it waits for a person."""

    reason: HoldReason


class Pause(Struct, kw_only=True):
    """An operator's pause (PAUSED): the phase a resume returns to."""

    resume_to: Phase


class RollbackState(Struct, kw_only=True):
    """A rollback, from ROLLING_BACK on (kept in ROLLED_BACK and FAILED for a retry)."""

    # The last stable version the hosts return to.
    version: str | None
    reason: str
    started: float
    # The hosts it returns to the stable version.
    hosts: list[str] = []


class Deployment(Struct, kw_only=True, omit_defaults=True):
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
    steps: list[Step] = []
    step: int = 0
    targets: dict[str, TargetHost] = {}
    commands: dict[str, CommandRecord] = {}
    counter: int = 0
    # Data of one phase (or a few), None outside it.
    bake: BakeClock = msgspec.field(default_factory=BakeClock)
    hold: Hold | None = None
    pause: Pause | None = None
    rollback: RollbackState | None = None
    # Where the current analysis window began (judged phases).
    window_start: float | None = None
    approved: list[int] = []
    preflight: list[PreflightState] = []
    # The shell must have reported every preflight command by then (PREFLIGHT).
    preflight_deadline: float | None = None
    # Post-deployment verification (VERIFYING, and PAUSED from it): each configured
    # command's outcome, and the time by which all must be reported; the deadline is
    # set when the commands are started, once every host reports the new version.
    verification: list[PreflightState] = []
    verify_deadline: float | None = None
    finished: float | None = None
    # Target hosts it could not reach (offline or silent past the grace) when a step or
    # the rollback would have commanded them: not commanded, not waited for, not
    # judged; each is converged to the version it should run when it returns.
    unreachable: list[str] = []
    # Unreachable hosts an operator chose to go on without (resuming a hold for them):
    # they no longer count against the policy's tolerated share.
    accepted_unreachable: list[str] = []
    # The last decision in words, for `rollguard status`.
    summary: str = ""
    # Layout 1 (up to snapshot format 1 and the deployment rows written with it) kept
    # these loose; a stored deployment in that layout is read into the groups above by
    # __post_init__, and they are never written again.
    v1_bake_elapsed: float | None = msgspec.field(default=None, name="bake_elapsed")
    v1_bake_since: float | None = msgspec.field(default=None, name="bake_since")
    v1_bake_length: float | None = msgspec.field(default=None, name="bake_length")
    v1_extended: bool | None = msgspec.field(default=None, name="extended")
    v1_paused_from: Phase | None = msgspec.field(default=None, name="paused_from")
    v1_hold_reason: HoldReason | None = msgspec.field(default=None, name="hold_reason")
    v1_rollback_version: str | None = msgspec.field(default=None, name="rollback_version")
    v1_rollback_reason: str | None = msgspec.field(default=None, name="rollback_reason")
    v1_rollback_started: float | None = msgspec.field(default=None, name="rollback_started")
    v1_rollback_hosts: list[str] | None = msgspec.field(default=None, name="rollback_hosts")

    def __post_init__(self) -> None:
        if self.v1_bake_elapsed is not None:
            self._from_layout_1()

    def _from_layout_1(self) -> None:
        self.bake = BakeClock(
            elapsed=self.v1_bake_elapsed or 0.0,
            since=self.v1_bake_since,
            length=self.v1_bake_length or 0.0,
            extended=bool(self.v1_extended),
        )
        self.hold = None if self.v1_hold_reason is None else Hold(reason=self.v1_hold_reason)
        self.pause = None if self.v1_paused_from is None else Pause(resume_to=self.v1_paused_from)
        if self.v1_rollback_started is not None:
            self.rollback = RollbackState(
                version=self.v1_rollback_version,
                reason=self.v1_rollback_reason or "",
                started=self.v1_rollback_started,
                hosts=list(self.v1_rollback_hosts or []),
            )
        self.v1_bake_elapsed = self.v1_bake_since = self.v1_bake_length = None
        self.v1_extended = None
        self.v1_paused_from = None
        self.v1_hold_reason = None
        self.v1_rollback_version = self.v1_rollback_reason = None
        self.v1_rollback_started = None
        self.v1_rollback_hosts = None

    @property
    def paused_from(self) -> Phase | None:
        """The phase a resume returns to (None unless paused)."""
        return None if self.pause is None else self.pause.resume_to

    @property
    def hold_reason(self) -> HoldReason | None:
        return None if self.hold is None else self.hold.reason

    def next_command_id(self) -> str:
        self.counter += 1
        return f"{self.id}-c{self.counter:04d}"

    def rollout_commands(self) -> list[CommandRecord]:
        return [c for c in self.commands.values() if c.purpose == "rollout"]

    def ordered_hosts(self) -> set[str]:
        """Hosts that were sent the new version (whether it was confirmed or not): by a
        step's order, or by converging a host that came back mid-rollout."""
        return {
            c.host
            for c in self.commands.values()
            if c.purpose == "rollout" or (c.purpose == "converge" and c.version == self.version)
        }

    def mark_unreachable(self, hosts: set[str] | list[str]) -> None:
        """Add ``hosts`` to the ones it could not reach (kept sorted, once each)."""
        self.unreachable = sorted(set(self.unreachable) | set(hosts))

    def current_step(self) -> Step | None:
        return self.steps[self.step] if 0 <= self.step < len(self.steps) else None

    def copy(self) -> Deployment:
        return _decoder.decode(_encoder.encode(self))

    def checkpoint(self, now: float) -> Deployment:
        """A copy to persist, its bake clock folded to ``now``: ``bake.elapsed`` is the
        bake time at ``now`` and ``bake.since`` only says whether the clock runs. A
        restore restarts a running clock at the moment it resumes, so the engine's own
        downtime never counts as bake time."""
        return _json_decoder.decode(self.checkpoint_body(now))

    def checkpoint_body(self, now: float) -> bytes:
        """``checkpoint(now)`` as the store keeps it (JSON), without a copy: encoding
        takes a quarter of the time a copy does (a 1,000-host deployment, on every step
        that changes it, a rollback's among them)."""
        folded = self
        if self.bake.since is not None:
            bake = msgspec.structs.replace(self.bake, elapsed=self.bake.at(now), since=now)
            folded = msgspec.structs.replace(self, bake=bake)
        return _json_encoder.encode(folded)


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
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(Deployment)


def encode_body(deployment: Deployment) -> bytes:
    """A deployment as the store keeps it: JSON."""
    return _json_encoder.encode(deployment)


def decode_body(data: bytes) -> Deployment:
    """The deployment in ``body`` (JSON); msgspec's errors propagate."""
    return _json_decoder.decode(data)
