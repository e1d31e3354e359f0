"""Topic names under ``rollguard/v1``: building them, parsing them, validating host ids."""

from __future__ import annotations

import enum
import re
from typing import Final, NamedTuple

from shared.errors import MessageError

PREFIX: Final = "rollguard/v1"
HOST_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_HOST_ID_RE: Final = re.compile(HOST_ID_PATTERN)

COORDINATOR_STATUS: Final = f"{PREFIX}/coordinator/status"
EVENTS: Final = f"{PREFIX}/events"

# What the coordinator subscribes to; `+` stands for one host id.
ALL_STATUS: Final = f"{PREFIX}/hosts/+/status"
ALL_METRICS: Final = f"{PREFIX}/hosts/+/metrics"
ALL_RESULTS: Final = f"{PREFIX}/hosts/+/cmd/result"


class HostTopic(enum.Enum):
    STATUS = "status"
    METRICS = "metrics"
    CMD = "cmd"
    CMD_RESULT = "cmd/result"


class ParsedTopic(NamedTuple):
    host: str
    kind: HostTopic


def is_valid_host_id(host: str) -> bool:
    return _HOST_ID_RE.fullmatch(host) is not None


def validate_host_id(host: str) -> str:
    """Return ``host`` unchanged, or raise naming why it is not a host id."""
    if not is_valid_host_id(host):
        raise MessageError(
            f"invalid host id {host!r}: must match {HOST_ID_PATTERN} "
            "(lowercase letters, digits, '.', '_', '-'; 1 to 63 characters)"
        )
    return host


def host_topic(host: str, kind: HostTopic) -> str:
    return f"{PREFIX}/hosts/{validate_host_id(host)}/{kind.value}"


def status(host: str) -> str:
    return host_topic(host, HostTopic.STATUS)


def metrics(host: str) -> str:
    return host_topic(host, HostTopic.METRICS)


def cmd(host: str) -> str:
    return host_topic(host, HostTopic.CMD)


def cmd_result(host: str) -> str:
    return host_topic(host, HostTopic.CMD_RESULT)


_BY_SUFFIX: Final = {kind.value: kind for kind in HostTopic}
_HOSTS_PREFIX: Final = f"{PREFIX}/hosts/"


def parse_host_topic(topic: str) -> ParsedTopic:
    """Split ``rollguard/v1/hosts/{host}/{kind}``; raise MessageError on anything else."""
    if not topic.startswith(_HOSTS_PREFIX):
        raise MessageError("not a rollguard host topic", topic=topic, reason="topic")
    host, sep, suffix = topic[len(_HOSTS_PREFIX) :].partition("/")
    kind = _BY_SUFFIX.get(suffix) if sep else None
    if kind is None:
        raise MessageError("unknown host topic kind", topic=topic, reason="topic")
    if not is_valid_host_id(host):
        raise MessageError(f"invalid host id {host!r} in topic", topic=topic, reason="topic")
    return ParsedTopic(host, kind)
