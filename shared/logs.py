"""Logging for both daemons: plain text for people, JSON lines for log shippers.

When stderr is the journal (systemd sets ``JOURNAL_STREAM`` to its ``device:inode``),
every line starts with its syslog priority, ``<4>`` for a warning, so that
``journalctl -p warning`` filters them; elsewhere lines are left as they are.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final

import msgspec

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_RESERVED: Final = frozenset(vars(logging.makeLogRecord({})))
# sd-daemon(3) priorities: emerg 0 ... debug 7.
_PRIORITIES: Final = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY: Final = 7


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (crit 2, err 3, warning 4, info 6, debug 7)."""
    for threshold, value in _PRIORITIES:
        if levelno >= threshold:
            return value
    return _DEBUG_PRIORITY


def stderr_is_journal(environ: dict[str, str] | None = None, fd: int | None = None) -> bool:
    """Whether stderr is the journal's stream: ``JOURNAL_STREAM`` (``device:inode``)
    names the file stderr is open on. A child that inherits the variable but whose
    stderr was redirected elsewhere does not match."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno() if fd is None else fd)
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


class JournalPrefix(logging.Formatter):
    """Prefix every line of what ``inner`` formats with the record's ``<priority>``;
    a traceback's lines carry it too, so none of them lands at the default level."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields are kept as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif journal:
        # The journal stamps its own time.
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(JournalPrefix(formatter) if journal else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # paho logs every packet at debug; keep it out unless asked for explicitly.
    logging.getLogger("aiomqtt").setLevel(max(_LEVELS[level], logging.INFO))
