"""The rows of the store, as immutable Structs, one per table.

A record's fields are its table's columns by name: the store writes a record by
listing its fields and reads a row back with ``msgspec.convert``, so adding a column is
its migration plus a field here. JSON columns (evidence) are named in ``JSON_FIELDS``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from msgspec import Struct

from shared.phases import TERMINAL

# Deployment states after which nothing more happens to a deployment, from the phase
# enum. An unknown state counts as in flight, so a restart resumes rather than forgets it.
TERMINAL_STATES: Final = frozenset(phase.value for phase in TERMINAL)

# Command results after which a command is never resent; "accepted" is not one of them.
FINAL_RESULTS: Final = frozenset({"succeeded", "failed", "rejected"})
ResultState = Literal["accepted", "succeeded", "failed", "rejected"]
RESULT_STATES: Final = ("accepted", "succeeded", "failed", "rejected")


class DeploymentRow(Struct, kw_only=True, frozen=True):
    """One deployment: the engine's Deployment (``body``, msgspec JSON, opaque here) and
    the columns the store filters on. The only copy: the engine snapshot names it by id."""

    id: str
    environment: str
    version: str
    strategy: str
    state: str
    body: bytes
    # The fencing token of the leader that last wrote it.
    fencing: int
    # Kept from the first save; ``updated`` moves with every save.
    created: float
    updated: float

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class CommandResultRow(Struct, kw_only=True, frozen=True):
    state: ResultState
    detail: str
    time: float


class CommandRow(Struct, kw_only=True, frozen=True):
    id: str
    deployment_id: str
    host: str
    action: str
    # The signed command exactly as published, so a resend is byte-identical.
    payload: bytes
    created: float
    fencing: int
    # Every result received, oldest first (a table of its own, not a column).
    results: tuple[CommandResultRow, ...] = ()

    @property
    def state(self) -> ResultState | None:
        """The latest result's state, or None while the agent has not answered."""
        return self.results[-1].state if self.results else None

    @property
    def final(self) -> bool:
        return any(result.state in FINAL_RESULTS for result in self.results)


class AlertRow(Struct, kw_only=True, frozen=True):
    """An alert the engine fired; ``resolved`` is set when it resolves. At most one
    alert per key is active (unresolved) at a time."""

    key: str
    host: str | None
    rule: str
    message: str = ""
    started: float
    resolved: float | None = None
    # What the engine saw when it fired: rule, window, numbers.
    evidence: dict[str, Any] = {}


class EngineStateRow(Struct, kw_only=True, frozen=True):
    """The engine's resumable state, one row (see coordinator/engine/state.py)."""

    snapshot: bytes
    # The engine time it was taken at.
    time: float
    fencing: int


# Columns holding JSON text (jsonb on PostgreSQL), by table.
JSON_FIELDS: Final = {"alerts": ("evidence",), "events": ("evidence",)}
