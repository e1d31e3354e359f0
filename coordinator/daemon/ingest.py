"""Turning an MQTT message into a validated message, or a counted rejection.

Everything that arrives is checked here before it can touch state: the topic must be
a known host topic with a valid host id, the payload must decode strictly into the
topic's message type, and the host inside the payload must be the host in the topic
(the ACL guarantees who published on a host's topic, so the topic is the identity).
Metrics and command results must not be retained (a host could otherwise replay one to
every later coordinator session), and no time a host sends may run further ahead of
the coordinator's clock than ``ingest.max_clock_skew``.

What is refused, and anything that goes wrong while a message is handled, is logged
through :class:`ThrottledLog`: once per host (or topic) per ``ingest.log_interval``,
with how many more were suppressed since, so a flood costs a counter increment per
message rather than a log line.
"""

from __future__ import annotations

import logging
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


def check_receipt(message: Inbound, *, retained: bool, now: float, max_skew: float) -> None:
    """Refuse what only the receipt can judge: a retained batch or result, and a time
    further ahead of ``now`` than ``max_skew`` (a host clock that far ahead would pin
    the host's windows and order in the future)."""
    if retained and not isinstance(message, HostStatus):
        raise MessageError("metrics and command results must not be retained", reason="retained")
    latest = sent_time(message)
    if latest > now + max_skew:
        raise MessageError(
            f"time {latest:.3f} is {latest - now:.1f}s ahead of the coordinator's clock "
            f"(at most {max_skew:g}s allowed: ingest.max_clock_skew)",
            reason="future",
        )


def _latest(batch: MetricBatch) -> float:
    return max((sample.time for sample in batch.samples), default=0.0)


def source_of(topic: str) -> str:
    """The host a topic belongs to, or the topic itself (bounded) when it names none."""
    parts = topic.split("/")
    if len(parts) >= 4 and parts[:3] == ["rollguard", "v1", "hosts"]:
        return parts[3][:64]
    return topic[:128]


class ThrottledLog:
    """Log at most once per key per ``interval`` seconds, counting what was left out.

    Keys are hosts (or topics); at most ``max_keys`` are remembered, the table being
    cleared when full, so a flood of distinct topics cannot grow memory."""

    def __init__(self, logger: logging.Logger, interval: float, *, max_keys: int = 10_000) -> None:
        self._log = logger
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, now: float, message: str, *, exc_info: bool = False) -> bool:
        """Log ``message`` for ``key`` unless it logged within the interval; True if it did."""
        last = self._last.get(key)
        if last is not None and now - last < self._interval and now >= last:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if len(self._last) >= self._max_keys and key not in self._last:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more from {key} not logged in the last {self._interval:g}s)"
        self._log.warning("%s", message, exc_info=exc_info)
        return True


class HostClocks:
    """How far each host's clock runs ahead of the coordinator's (negative: behind),
    estimated from arrivals.

    Every message carries the host's time: a status its send time, a batch the times of
    its samples (taken before sending), a result its own. ``sent - arrived`` is the
    offset minus the delay on the way, so the largest of a host's last ``window``
    observations (the least delayed) is the estimate; a host that buffered through an
    outage only lowers a few observations, and a clock that steps shows within
    ``window`` messages."""

    def __init__(self, window: int = 16, *, max_hosts: int = 100_000) -> None:
        self._window = window
        self._max_hosts = max_hosts
        self._seen: dict[str, list[float]] = {}

    def observe(self, host: str, sent: float, arrived: float) -> float:
        """Add one observation; return the host's estimated offset."""
        seen = self._seen.get(host)
        if seen is None:
            if len(self._seen) >= self._max_hosts:
                self._seen.clear()
            seen = self._seen[host] = []
        seen.append(sent - arrived)
        if len(seen) > self._window:
            del seen[0]
        return max(seen)

    def offset(self, host: str) -> float | None:
        seen = self._seen.get(host)
        return max(seen) if seen else None

    def largest(self) -> float:
        """The largest offset in either direction over every host (0 with none)."""
        return max((abs(max(seen)) for seen in self._seen.values() if seen), default=0.0)


def sent_time(message: Inbound) -> float:
    """The host's time on a message: a status's or result's own, a batch's newest sample."""
    return _latest(message) if isinstance(message, MetricBatch) else message.time
