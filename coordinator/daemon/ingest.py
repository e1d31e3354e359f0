"""Turning an MQTT message into a validated message, or a counted rejection.

Everything that arrives is checked here before it can touch state: the topic must be
a known host topic with a valid host id, the payload must decode strictly into the
topic's message type, and the host inside the payload must be the host in the topic
(the ACL guarantees who published on a host's topic, so the topic is the identity).
"""

from __future__ import annotations

from typing import Final

from shared import topics
from shared.errors import MessageError
from shared.messages import CommandResult, HostStatus, MetricBatch, decode

Inbound = HostStatus | MetricBatch | CommandResult

_TYPES: Final[
    dict[topics.HostTopic, type[HostStatus] | type[MetricBatch] | type[CommandResult]]
] = {
    topics.HostTopic.STATUS: HostStatus,
    topics.HostTopic.METRICS: MetricBatch,
    topics.HostTopic.CMD_RESULT: CommandResult,
}


def parse_inbound(topic: str, payload: bytes) -> Inbound:
    """Validate one message from a host or raise MessageError naming what was wrong."""
    parsed = topics.parse_host_topic(topic)
    kind = _TYPES.get(parsed.kind)
    if kind is None:
        raise MessageError(
            "the coordinator does not accept messages on this topic", topic=topic, reason="topic"
        )
    message: Inbound = decode(kind, payload, topic=topic)  # type: ignore[type-var]
    if message.host != parsed.host:
        raise MessageError(
            f"payload names host {message.host!r} but was published on {parsed.host!r}'s topic",
            topic=topic,
            reason="host-mismatch",
        )
    return message
