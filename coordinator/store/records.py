"""The rows the store hands out, as immutable Structs, and the helpers both backends use
to build them from SQL rows (same column order in both dialects)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec
from msgspec import Struct

from coordinator.store.errors import StoreError
from shared.messages import Event

# Deployment states after which nothing more happens to a deployment. The engine owns
# the state names; this set only has to tell finished from in flight, and an unknown
# state counts as in flight so that a restart resumes rather than forgets it.
TERMINAL_STATES: Final = frozenset({"completed", "rolled_back", "failed", "cancelled", "refused"})

# Command results after which a command is never resent; "accepted" is not one of them.
FINAL_RESULTS: Final = frozenset({"succeeded", "failed", "rejected"})
ResultState = Literal["accepted", "succeeded", "failed", "rejected"]
RESULT_STATES: Final = ("accepted", "succeeded", "failed", "rejected")


class _Record(Struct, frozen=True, kw_only=True):
    """Base for rows handed out by the store: immutable, keyword-only."""


class DeploymentRecord(_Record, kw_only=True, frozen=True):
    id: str
    environment: str
    version: str
    strategy: str
    state: str
    # The engine's msgspec-encoded state, opaque to the store.
    snapshot: bytes
    fencing: int
    created: float
    updated: float

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class StepRecord(_Record, kw_only=True, frozen=True):
    deployment_id: str
    step_index: int
    percent: float
    started: float
    ended: float | None = None
    outcome: str | None = None


class CommandResultRecord(_Record, kw_only=True, frozen=True):
    state: ResultState
    detail: str
    time: float


class CommandRecord(_Record, kw_only=True, frozen=True):
    id: str
    deployment_id: str
    host: str
    action: str
    # The signed command exactly as published, so a resend is byte-identical.
    payload: bytes
    created: float
    fencing: int
    # Every result received, oldest first.
    results: tuple[CommandResultRecord, ...] = ()

    @property
    def state(self) -> ResultState | None:
        """The latest result's state, or None while the agent has not answered."""
        return self.results[-1].state if self.results else None

    @property
    def final(self) -> bool:
        return any(result.state in FINAL_RESULTS for result in self.results)


class HostRecord(_Record, kw_only=True, frozen=True):
    host: str
    online: bool
    session: int
    environment: str
    version: str | None
    slot: str | None
    labels: dict[str, str]
    last_seen: float


class AlertRecord(_Record, kw_only=True, frozen=True):
    key: str
    host: str | None
    rule: str
    started: float
    resolved: float | None
    evidence: dict[str, Any]


_json_encoder: Final = msgspec.json.Encoder()
_evidence_decoder: Final = msgspec.json.Decoder(dict[str, Any])
_labels_decoder: Final = msgspec.json.Decoder(dict[str, str])


def encode_json(value: Mapping[str, Any] | None, what: str) -> str:
    """Evidence and labels are stored as JSON text, readable from any SQL prompt."""
    try:
        return _json_encoder.encode(dict(value or {})).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise StoreError(f"{what} is not JSON-encodable: {exc}") from exc


def check_result_state(state: str) -> None:
    if state not in RESULT_STATES:
        raise StoreError(f"command result state {state!r} is not one of {RESULT_STATES}")


def now_or(value: float | None) -> float:
    # The store is IO shell, so it may read the clock; the engine passes its own `now`.
    return time.time() if value is None else value


# Column lists shared by both dialects; the ``*_from_row`` functions read them in order.
# Hosts, alerts and events have JSON columns, which each backend selects as text.
DEPLOYMENT_COLUMNS: Final = (
    "id, environment, version, strategy, state, snapshot, fencing, created, updated"
)
STEP_COLUMNS: Final = "deployment_id, step_index, percent, started, ended, outcome"
COMMAND_COLUMNS: Final = "id, deployment_id, host, action, payload, created, fencing"
RESULT_COLUMNS: Final = "command_id, state, detail, time"

Row = Sequence[Any]


def deployment_from_row(row: Row) -> DeploymentRecord:
    return DeploymentRecord(
        id=row[0],
        environment=row[1],
        version=row[2],
        strategy=row[3],
        state=row[4],
        snapshot=bytes(row[5]),
        fencing=row[6],
        created=row[7],
        updated=row[8],
    )


def step_from_row(row: Row) -> StepRecord:
    return StepRecord(
        deployment_id=row[0],
        step_index=row[1],
        percent=row[2],
        started=row[3],
        ended=row[4],
        outcome=row[5],
    )


def commands_from_rows(commands: Sequence[Row], results: Sequence[Row]) -> list[CommandRecord]:
    """Join command rows with their result rows (RESULT_COLUMNS, oldest first)."""
    history: dict[str, list[CommandResultRecord]] = {}
    for command_id, state, detail, at in results:
        history.setdefault(command_id, []).append(
            CommandResultRecord(state=state, detail=detail, time=at)
        )
    return [
        CommandRecord(
            id=row[0],
            deployment_id=row[1],
            host=row[2],
            action=row[3],
            payload=bytes(row[4]),
            created=row[5],
            fencing=row[6],
            results=tuple(history.get(row[0], ())),
        )
        for row in commands
    ]


def host_from_row(row: Row) -> HostRecord:
    """From ``host, online, session, environment, version, slot, labels, last_seen``."""
    return HostRecord(
        host=row[0],
        online=bool(row[1]),
        session=row[2],
        environment=row[3],
        version=row[4],
        slot=row[5],
        labels=_labels_decoder.decode(row[6]),
        last_seen=row[7],
    )


def alert_from_row(row: Row) -> AlertRecord:
    """From ``key, host, rule, started, resolved, evidence``."""
    return AlertRecord(
        key=row[0],
        host=row[1],
        rule=row[2],
        started=row[3],
        resolved=row[4],
        evidence=_evidence_decoder.decode(row[5]),
    )


def event_from_row(row: Row) -> Event:
    """From ``seq, time, kind, message, deployment, host, actor, evidence``."""
    return Event(
        seq=row[0],
        time=row[1],
        kind=row[2],
        message=row[3],
        deployment=row[4],
        host=row[5],
        actor=row[6],
        evidence=_evidence_decoder.decode(row[7]),
    )
