"""Just enough of the Prometheus text format to read one counter and one histogram.

The application check turns two scrapes into this interval's counts: per series the
difference of the cumulative values (a series that went down was reset, so its new
value is the count), summed by HTTP status class and by histogram bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

Labels = tuple[tuple[str, str], ...]
STATUS_LABELS: Final = ("code", "status", "status_code")


class PromError(ValueError):
    """A line of the exposition is not a sample this parser understands."""


class Series(NamedTuple):
    name: str
    labels: Labels
    value: float


def parse(text: str, names: Iterable[str]) -> Iterator[Series]:
    """The samples of the metrics in ``names`` (exact sample names); other lines are
    skipped without being parsed, which keeps a large scrape cheap."""
    wanted = tuple(names)
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith(wanted):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            labels, rest = _labels(line, brace + 1)
        else:
            name, _, rest = line.partition(" ")
            labels = ()
        if name not in wanted:
            continue
        fields = rest.split()
        if not fields:
            raise PromError(f"no value in {line[:80]!r}")
        try:
            value = float(fields[0])
        except ValueError:
            raise PromError(f"bad value in {line[:80]!r}") from None
        yield Series(name, labels, value)


def _labels(line: str, start: int) -> tuple[Labels, str]:
    labels: list[tuple[str, str]] = []
    i = start
    while True:
        while i < len(line) and line[i] in " ,":
            i += 1
        if i < len(line) and line[i] == "}":
            return tuple(sorted(labels)), line[i + 1 :]
        eq = line.find("=", i)
        if eq == -1 or eq + 1 >= len(line) or line[eq + 1] != '"':
            raise PromError(f"bad labels in {line[:80]!r}")
        key = line[i:eq].strip()
        i = eq + 2
        value: list[str] = []
        while i < len(line) and line[i] != '"':
            if line[i] == "\\" and i + 1 < len(line):
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(line[i + 1], line[i + 1]))
                i += 2
            else:
                value.append(line[i])
                i += 1
        if i >= len(line):
            raise PromError(f"unterminated label value in {line[:80]!r}")
        labels.append((key, "".join(value)))
        i += 1


def deltas(previous: dict[Labels, float], current: dict[Labels, float]) -> dict[Labels, float]:
    """Per series, what was counted since ``previous`` (a decrease is a reset)."""
    out: dict[Labels, float] = {}
    for labels, value in current.items():
        before = previous.get(labels)
        out[labels] = value - before if before is not None and value >= before else value
    return out


def status_label(series: Iterable[Labels], preferred: str | None) -> str | None:
    if preferred is not None:
        return preferred
    present = {key for labels in series for key, _ in labels}
    return next((name for name in STATUS_LABELS if name in present), None)


def by_status_class(counts: dict[Labels, float], label: str | None) -> dict[str, float]:
    """Sums by the first digit of the status label ("2", "4", "5"; "?" if absent)."""
    out: dict[str, float] = {}
    for labels, value in counts.items():
        status = dict(labels).get(label, "") if label else ""
        key = status[:1] if status[:1].isdigit() else "?"
        out[key] = out.get(key, 0.0) + value
    return out


def bucket_counts(
    counts: dict[Labels, float], scale: float
) -> tuple[list[float], list[int]] | None:
    """Cumulative ``_bucket`` deltas -> (finite upper bounds x scale, per-bucket counts
    with the +Inf bucket last); None without a +Inf bucket."""
    by_le: dict[float, float] = {}
    for labels, value in counts.items():
        le = dict(labels).get("le")
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        by_le[bound] = by_le.get(bound, 0.0) + value
    if math.inf not in by_le:
        return None
    bounds = sorted(by_le)
    cumulative = [by_le[b] for b in bounds]
    counts_out: list[int] = []
    below = 0.0
    for total in cumulative:
        counts_out.append(max(0, round(total - below)))
        below = max(below, total)
    return [b * scale for b in bounds[:-1]], counts_out
