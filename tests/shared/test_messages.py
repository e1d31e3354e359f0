"""The wire contract: strict decoding with errors that name what was wrong."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shared import topics
from shared.errors import MessageError
from shared.messages import (
    MAX_PAYLOAD,
    Command,
    CommandResult,
    CoordinatorStatus,
    Event,
    Histogram,
    HostStatus,
    Message,
    MetricBatch,
    Sample,
    decode,
    encode,
)

STATUS = HostStatus(
    host="web-1",
    online=True,
    session=3,
    environment="production",
    version="1.2.0",
    slot="blue",
    labels={"zone": "a"},
    agent_version="0.1.0",
    time=1000.0,
)
BATCH = MetricBatch(
    host="web-1",
    session=3,
    seq=7,
    samples=[
        Sample(check="cpu", time=1000.0, ok=True, values={"percent": 12.5}),
        Sample(
            check="application",
            time=1001.0,
            ok=True,
            values={"requests": 5, "errors": 0},
            latencies_ms=[12.0, 15.5, 9.0, 11.0, 30.0],
            histogram=Histogram(bounds=[10.0, 100.0], counts=[1, 4, 0]),
        ),
        Sample(check="database", time=1002.0, ok=False, error="timeout after 5s"),
    ],
)
COMMAND = Command(
    id="cmd-0001abcd",
    host="web-1",
    deployment="d1",
    action="deploy",
    version="1.3.0",
    issued=1000.0,
    expires=1600.0,
    fencing=2,
    signature="",
)
RESULT = CommandResult(
    id="cmd-0001abcd", host="web-1", state="succeeded", version="1.3.0", time=1.0
)
COORD = CoordinatorStatus(online=True, node="c1", leader=True, time=1.0)
EVENT = Event(seq=1, time=1.0, kind="rolled_back", message="error rate", evidence={"rule": "x"})


@pytest.mark.parametrize("message", [STATUS, BATCH, COMMAND, RESULT, COORD, EVENT])
def test_every_message_round_trips(message: Message) -> None:
    kind: Any = type(message)  # decode() takes one message type, not the union
    assert decode(kind, encode(message)) == message


def _mutated(message: msgspec.Struct, **changes: object) -> bytes:
    raw = msgspec.json.decode(encode(message))  # type: ignore[arg-type]
    raw.update(changes)
    return msgspec.json.encode(raw)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (_mutated(STATUS, extra=1), "unknown field `extra`"),
        (_mutated(STATUS, online="yes"), "Expected `bool`, got `str` - at `$.online`"),
        (_mutated(STATUS, host="Web_1!"), "at `$.host`"),
        (_mutated(STATUS, session=-1), "at `$.session`"),
        (_mutated(STATUS, environment="qa"), "at `$.environment`"),
        (_mutated(STATUS, version="../../etc"), "at `$.version`"),
        (b"{not json", "malformed"),
        (b"[]", "Expected `object`, got `array`"),
    ],
)
def test_status_refuses_bad_payloads_naming_the_place(payload: bytes, fragment: str) -> None:
    with pytest.raises(MessageError) as info:
        decode(HostStatus, payload, topic="rollguard/v1/hosts/web-1/status")
    assert fragment in str(info.value)
    assert info.value.topic == "rollguard/v1/hosts/web-1/status"


def test_sample_errors_point_inside_the_batch() -> None:
    raw = msgspec.json.decode(encode(BATCH))
    raw["samples"][1]["check"] = "Bad Check"
    with pytest.raises(MessageError, match=r"\$\.samples\[1\]\.check"):
        decode(MetricBatch, msgspec.json.encode(raw))


def test_histogram_shape_is_checked() -> None:
    raw = msgspec.json.decode(encode(BATCH))
    raw["samples"][1]["histogram"]["counts"] = [1, 2]
    with pytest.raises(MessageError, match="len\\(counts\\) == len\\(bounds\\) \\+ 1"):
        decode(MetricBatch, msgspec.json.encode(raw))


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = b'{"pad":"' + b"x" * MAX_PAYLOAD + b'"}'
    with pytest.raises(MessageError, match="exceeds the 65536 byte limit"):
        decode(MetricBatch, payload)


def test_a_payload_at_the_limit_is_still_decoded() -> None:
    base = encode(BATCH)
    sample = Sample(check="cpu", time=1.0, ok=False, error="x")
    padding = MAX_PAYLOAD - len(base) - len(encode(sample)) - 1  # type: ignore[arg-type]
    filler = Sample(check="cpu", time=1.0, ok=False, error="e" * min(1024, padding))
    batch = msgspec.structs.replace(BATCH, samples=[*BATCH.samples, filler])
    assert len(encode(batch)) <= MAX_PAYLOAD
    assert decode(MetricBatch, encode(batch)) == batch


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"expires": 900.0}, "expires must be after issued"),
        ({"version": None}, "a deploy command needs a version"),
        ({"action": "reboot"}, "at `$.action`"),
        ({"id": "short"}, "at `$.id`"),
    ],
)
def test_command_rules_across_fields(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment.replace("$", r"\$").replace(".", r"\.")):
        decode(Command, _mutated(COMMAND, **changes))


def test_switch_needs_a_slot() -> None:
    with pytest.raises(MessageError, match="a switch command needs a slot"):
        decode(Command, _mutated(COMMAND, action="switch", version=None))


@pytest.mark.parametrize("host", ["a", "web-1", "db.eu-west.3", "x" * 63, "0_host"])
def test_valid_host_ids(host: str) -> None:
    assert topics.validate_host_id(host) == host
    assert topics.parse_host_topic(topics.metrics(host)) == (host, topics.HostTopic.METRICS)


@pytest.mark.parametrize(
    "host", ["", "Web", "-web", "_coordinator", "a/b", "a+", "#", "x" * 64, "é"]
)
def test_invalid_host_ids_are_refused_by_name(host: str) -> None:
    with pytest.raises(MessageError, match="invalid host id"):
        topics.status(host)


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("rollguard/v1/hosts/web-1/cmd/result", None),
        ("rollguard/v1/hosts/web-1/cmd", None),
        ("rollguard/v1/hosts/web-1/logs", "unknown host topic kind"),
        ("rollguard/v1/hosts/web-1", "unknown host topic kind"),
        ("rollguard/v2/hosts/web-1/status", "not a rollguard host topic"),
        ("rollguard/v1/hosts/WEB/status", "invalid host id"),
    ],
)
def test_parse_host_topic(topic: str, fragment: str | None) -> None:
    if fragment is None:
        assert topics.parse_host_topic(topic).host == "web-1"
    else:
        with pytest.raises(MessageError, match=fragment):
            topics.parse_host_topic(topic)
