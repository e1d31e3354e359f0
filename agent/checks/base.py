"""What every check is: one small unit that measures and writes samples into a sink.

A failure is data: a check reports ``ok=False`` with an error message through the sink
and returns; it never lets an exception escape (the runner still guards against one).
"""

from __future__ import annotations

import abc
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from shared.messages import Histogram, Sample

MAX_ERROR: Final = 1024
# A check's own deadlines stop this much before the runner's, so the sample can say
# what timed out instead of the runner's generic "timed out".
INNER_TIMEOUT_SHARE: Final = 0.9


class Sink(Protocol):
    """Where samples go: the batcher in the agent, a recording list in tests."""

    def emit(self, sample: Sample) -> None: ...


class Check(abc.ABC):
    # The sample's check name: a class attribute, except where one class measures
    # several things (the application check's ``application_<slot>``).
    name: str

    def __init__(self, *, interval: float, timeout: float) -> None:
        self.interval = interval
        # Capped at the interval so a slow run is over before the next one is due.
        self.timeout = min(timeout, interval)

    @property
    def inner_timeout(self) -> float:
        return self.timeout * INNER_TIMEOUT_SHARE

    @abc.abstractmethod
    async def collect(self, sink: Sink) -> None:
        """Measure once and emit the result; report failures as samples."""

    async def close(self) -> None:  # noqa: B027 - most checks hold nothing open
        """Release what the check holds open (connections, sessions)."""

    def sample(
        self,
        started: float,
        values: Mapping[str, float],
        *,
        error: str | None = None,
        ok: bool | None = None,
        latencies_ms: Sequence[float] = (),
        histogram: Histogram | None = None,
    ) -> Sample:
        """A sample stamped with ``started``; ``ok`` defaults to "no error"."""
        return Sample(
            check=self.name,
            time=started,
            ok=(error is None) if ok is None else ok,
            values={k: float(v) for k, v in values.items() if math.isfinite(v)},
            error=truncate(error) if error is not None else None,
            latencies_ms=[round(v, 3) for v in latencies_ms],
            histogram=histogram,
        )

    def failure(
        self, started: float, error: str, values: Mapping[str, float] | None = None
    ) -> Sample:
        return self.sample(started, values or {}, error=error, ok=False)


def now() -> float:
    return time.time()


def truncate(text: str, limit: int = MAX_ERROR) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException, timeout: float | None = None) -> str:
    """A short, human reason for an exception, e.g. ``connection refused``."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s" if timeout is not None else "timed out"
    if isinstance(exc, OSError) and (exc.strerror or exc.errno):
        # asyncio words a refused connect as "Connect call failed (...)"; the errno's
        # own text ("Connection refused") is what an operator searches for.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc.strerror)
        return reason[0].lower() + reason[1:]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of already sorted values (the value itself, no interpolation)."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]
