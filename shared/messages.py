"""Every message on the wire, as strict msgspec Structs, with one decode entry point.

Payloads are JSON. Decoding refuses unknown fields, wrong types, bad host ids and
anything over ``MAX_PAYLOAD`` bytes with a single :class:`MessageError` naming the
place (msgspec's own ``- at `$.samples[0].time``` suffix is kept).
Times are Unix seconds as floats, set by the sender.

Every number a host sends is bounded here, so that no single valid message can push
the coordinator's sums past float range or pin a host: values are finite and within
``MAX_VALUE`` in magnitude, counts and latencies within what one check interval can
plausibly hold, sessions and sequence numbers within a signed 64-bit integer (what
every store keeps), times between 0 and ``MAX_TIME``. How far ahead of the
coordinator's clock a host's time may run is checked on receipt
(``coordinator.daemon.ingest``), since that needs the coordinator's clock.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from shared.errors import MessageError
from shared.topics import HOST_ID_PATTERN

MAX_PAYLOAD: Final = 64 * 1024

HostId = Annotated[str, Meta(pattern=HOST_ID_PATTERN)]
# Release versions: what becomes a directory name on every host, so kept strict.
VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
Version = Annotated[str, Meta(pattern=VERSION_PATTERN)]
CheckName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Label = Annotated[str, Meta(max_length=128)]
# Unix seconds up to the year 2286: beyond that a time is garbage, not a clock.
MAX_TIME: Final = 10_000_000_000.0
# Sessions and sequence numbers: what a signed 64-bit column holds.
MAX_SERIAL: Final = 2**63 - 1
# A gauge or a count in ``Sample.values``: finite, and far below where sums over any
# window could leave float range (1e12 requests in one interval is not a real host).
MAX_VALUE: Final = 1e12
# Observations in one histogram bucket, and one latency, in ms (a day).
MAX_COUNT: Final = 10**12
MAX_LATENCY_MS: Final = 86_400_000.0
Time = Annotated[float, Meta(ge=0, le=MAX_TIME)]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
Serial = Annotated[int, Meta(ge=0, le=MAX_SERIAL)]
Value = Annotated[float, Meta(ge=-MAX_VALUE, le=MAX_VALUE)]
Latency = Annotated[float, Meta(ge=0, le=MAX_LATENCY_MS)]
Slot = Literal["blue", "green"]
Environment = Literal["development", "staging", "production"]


class _Wire(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for wire messages: strict, immutable, keyword-only."""


class HostStatus(_Wire, kw_only=True, frozen=True):
    """Retained on ``hosts/{host}/status``; the agent's Will is the same with online=False.

    ``session`` rises on every connect, so a Will from an old session never marks a
    reborn agent offline.
    """

    host: HostId
    online: bool
    session: Serial
    # Rises with every status the agent publishes within a session: statuses of one
    # session are ordered by it, not by the host's clock (which may step back). 0 from
    # an agent that predates it.
    seq: Serial = 0
    environment: Environment
    version: Version | None = None
    slot: Slot | None = None
    labels: dict[Annotated[str, Meta(max_length=64)], Label] = {}
    agent_version: str = ""
    time: Time


class Histogram(_Wire, kw_only=True, frozen=True):
    """Latency histogram for one interval: ``counts[i]`` observations <= ``bounds[i]`` ms,
    not cumulative; ``counts`` has one more entry than ``bounds`` (the +Inf bucket)."""

    bounds: Annotated[list[Latency], Meta(max_length=256)]
    counts: Annotated[list[Count], Meta(max_length=257)]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError("histogram needs len(counts) == len(bounds) + 1")
        if any(b2 <= b1 for b1, b2 in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("histogram bounds must be strictly increasing")


class Sample(_Wire, kw_only=True, frozen=True):
    """One check's measurement.

    ``values`` holds gauges and counts by name (``percent``, ``latency_ms``,
    ``requests``, ``errors`` ...). Rates always travel with the counts behind them;
    latency with the raw observations (``latencies_ms``) or a ``histogram``.
    """

    check: CheckName
    time: Time
    ok: bool
    values: dict[Annotated[str, Meta(max_length=64)], Value] = {}
    error: Annotated[str, Meta(max_length=1024)] | None = None
    latencies_ms: list[Latency] = []
    histogram: Histogram | None = None


class MetricBatch(_Wire, kw_only=True, frozen=True):
    host: HostId
    session: Serial
    seq: Serial
    samples: list[Sample]


Action = Literal["deploy", "switch", "rollback"]


class Command(_Wire, kw_only=True, frozen=True):
    """Sent by the coordinator on ``hosts/{host}/cmd``; signed over all other fields."""

    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    host: HostId
    deployment: Annotated[str, Meta(min_length=1, max_length=64)]
    action: Action
    version: Version | None = None
    slot: Slot | None = None
    args: dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=256)]] = {}
    issued: Time
    expires: Time
    fencing: Serial = 0
    signature: str = ""

    def __post_init__(self) -> None:
        if self.expires <= self.issued:
            raise ValueError("expires must be after issued")
        if self.action == "deploy" and self.version is None:
            raise ValueError("a deploy command needs a version")
        if self.action == "switch" and self.slot is None:
            raise ValueError("a switch command needs a slot")


ResultState = Literal["accepted", "succeeded", "failed", "rejected"]


class CommandResult(_Wire, kw_only=True, frozen=True):
    id: Annotated[str, Meta(min_length=1, max_length=64)]
    host: HostId
    state: ResultState
    detail: Annotated[str, Meta(max_length=4096)] = ""
    version: Version | None = None
    slot: Slot | None = None
    time: Time


class CoordinatorStatus(_Wire, kw_only=True, frozen=True):
    online: bool
    node: Annotated[str, Meta(min_length=1, max_length=64)]
    leader: bool
    time: Time


class Event(_Wire, kw_only=True, frozen=True):
    """A stored event, as published on ``rollguard/v1/events``.

    ``evidence`` carries the rule, window and numbers behind a decision.
    """

    seq: Serial
    time: Time
    kind: Annotated[str, Meta(min_length=1, max_length=64)]
    message: str
    deployment: str | None = None
    host: HostId | None = None
    actor: str | None = None
    evidence: dict[str, Any] = {}


Message = HostStatus | MetricBatch | Command | CommandResult | CoordinatorStatus | Event
M = TypeVar("M", HostStatus, MetricBatch, Command, CommandResult, CoordinatorStatus, Event)

_encoder: Final = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(
    kind: type[M], payload: bytes | bytearray | memoryview, *, topic: str | None = None
) -> M:
    """Decode and validate one message of type ``kind`` or raise MessageError."""
    if len(payload) > MAX_PAYLOAD:
        raise MessageError(
            f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD} byte limit",
            topic=topic,
            reason="oversized",
        )
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(payload)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise MessageError(f"invalid {kind.__name__}: {exc}", topic=topic) from exc
    except msgspec.DecodeError as exc:
        raise MessageError(
            f"invalid {kind.__name__}: {exc}", topic=topic, reason="malformed"
        ) from exc
