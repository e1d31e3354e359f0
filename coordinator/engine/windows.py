"""Per host and check: what arrived in the current analysis window, and streaks.

A window opens when a step's bake starts (and again after a restart or a fleet-wide
hold): samples timed before its start are the old version's or were never seen by this
engine and are not counted. Counts are kept, never per-sample percentages: a rate is
only ever errors summed over requests summed, pooled over the window and the cohort.

Latency is counted against the environment's threshold as it arrives: raw observations
over it are slow; for a histogram, a bucket wholly above it is surely slow and a bucket
that straddles it possibly slow, so a failure is never claimed on a straddling bucket
and a pass never ignores one.

Untrusted numbers: every number a host sends is checked before it is counted (the
wire schema bounds them too; the engine does not rely on it). A sample with a value
that is not a finite number, a negative count, more requests (or latencies) than its
check's interval can plausibly hold (``EngineConfig.max_count``), or a gauge percent
outside 0..100 counts in no window, streak or alert: it is a sign of life of its host
and nothing more. So one batch cannot overflow a sum, roll back a release, or excuse
one; a host sending such samples has no data and is never promoted on them.

Times: a window opens on the engine's clock and is emptied then, so whatever arrives
after counts unless its own time says it was measured before the start (a backlog
flushed late). A host's clock running ahead changes nothing (what arrived before the
window opened was emptied with it), and silence is judged on arrival, never on a host's
clock: no sample time can hold a window open or keep a host looking alive.

Check names: a sample's ``check`` is what the agent measured. For blue-green, the
inactive slot's checks are told apart by a ``_blue`` / ``_green`` suffix on the check
name (``application_green``) until the wire carries the slot itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from coordinator.engine.stats import LatencySketch
from shared.messages import Sample, Slot

# Gauge checks and the percent values they carry; disk may carry one per mount
# ("percent", "percent_var", ...): the fullest mount counts.
GAUGE_CHECKS: Final = ("cpu", "memory", "disk")
SLOTS: Final[tuple[Slot, ...]] = ("blue", "green")
# Batches remembered per host to drop MQTT QoS 1 duplicates.
DEDUP_DEPTH: Final = 64
# The values that count requests (probes, and real traffic scraped from the app).
COUNT_VALUES: Final = ("requests", "errors", "traffic_requests", "traffic_errors")


def slot_check(check: str, slot: Slot | None) -> str:
    """The check name the agent uses for ``check`` measured on ``slot``."""
    return check if slot is None else f"{check}_{slot}"


def gauge_value(sample: Sample) -> float | None:
    values = [v for k, v in sample.values.items() if k == "percent" or k.startswith("percent_")]
    return max(values) if values else None


def base_check(check: str) -> str:
    for slot in SLOTS:
        suffix = f"_{slot}"
        if check.endswith(suffix):
            return check[: -len(suffix)]
    return check


@dataclass(frozen=True, slots=True)
class Limits:
    """Thresholds a host's samples are counted against (its environment's policy), and
    the bounds of what a sample can plausibly say."""

    latency_ms: float
    gauges: dict[str, float]
    # The most requests one sample of a (base) check can count.
    max_count: Callable[[str], float] = lambda check: math.inf


def untrusted(sample: Sample, max_count: float) -> str | None:
    """Why ``sample``'s numbers cannot be believed (None: they can). ``max_count``: the
    most requests or latencies one sample of its check can plausibly count."""
    for name, value in sample.values.items():
        if not math.isfinite(value):
            return f"{name} is not a finite number"
    for name in COUNT_VALUES:
        count = sample.values.get(name)
        if count is not None and not 0 <= count <= max_count:
            return f"{name} {count:g} is outside 0..{max_count:g} for one interval"
    if sample.check in GAUGE_CHECKS:
        for name, value in sample.values.items():
            if (name == "percent" or name.startswith("percent_")) and not 0 <= value <= 100:
                return f"{name} {value:g} is outside 0..100"
    if len(sample.latencies_ms) > max_count:
        return f"{len(sample.latencies_ms)} latencies are more than {max_count:g}"
    if not all(math.isfinite(v) and v >= 0 for v in sample.latencies_ms):
        return "a latency is not a finite number of ms"
    histogram = sample.histogram
    if histogram is not None:
        if not all(math.isfinite(b) and b >= 0 for b in histogram.bounds):
            return "a histogram bound is not a finite number of ms"
        if any(c < 0 for c in histogram.counts):
            return "a histogram count is negative"
        total = sum(histogram.counts)
        if total > max_count:
            return f"histogram counts {total} are more than {max_count:g}"
    return None


@dataclass(slots=True)
class Tally:
    """Counts over a window; merges by addition, so cohorts pool exactly."""

    samples: int = 0
    failures: int = 0
    requests: int = 0
    errors: int = 0
    latency_n: int = 0
    slow_definite: int = 0
    slow_possible: int = 0
    gauge_n: int = 0
    gauge_sum: float = 0.0
    gauge_max: float | None = None
    sketch: LatencySketch = field(default_factory=LatencySketch)

    def merge(self, other: Tally, *, sketch: bool = True) -> None:
        """Add ``other`` in; ``sketch`` False leaves its latency sketch out (a caller
        that builds the pooled sketch another way)."""
        self.samples += other.samples
        self.failures += other.failures
        self.requests += other.requests
        self.errors += other.errors
        self.latency_n += other.latency_n
        self.slow_definite += other.slow_definite
        self.slow_possible += other.slow_possible
        self.gauge_n += other.gauge_n
        self.gauge_sum += other.gauge_sum
        if other.gauge_max is not None and (
            self.gauge_max is None or other.gauge_max > self.gauge_max
        ):
            self.gauge_max = other.gauge_max
        if sketch and other.sketch.total:
            self.sketch.merge(other.sketch)

    def add_counts(self, other: Tally, sign: int = 1) -> None:
        """Add (``sign`` 1) or take back out (-1) ``other``'s request counts: a sliding
        window of rates. Only those: a gauge's maximum and the latency sketch cannot be
        taken back, so a tally that slides keeps neither."""
        self.requests += sign * other.requests
        self.errors += sign * other.errors
        self.latency_n += sign * other.latency_n
        self.slow_definite += sign * other.slow_definite
        self.slow_possible += sign * other.slow_possible


def _count(value: float | None) -> int:
    """A count as an int; 0 for nothing, a negative or a non-finite value (``untrusted``
    keeps those from being counted; this keeps a direct call from raising)."""
    if value is None or not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def tally_sample(sample: Sample, latency_ms: float, *, sketch: bool = True) -> Tally:
    """One sample's contribution to a window (``sketch`` False: counts only)."""
    tally = Tally(samples=1, failures=0 if sample.ok else 1)
    values = sample.values
    if "requests" in values or "traffic_requests" in values:
        # Probes and real traffic (scraped from the app) are both trials of the same
        # error rate; real traffic usually brings far more of them.
        tally.requests = _count(values.get("requests")) + _count(values.get("traffic_requests"))
        errors = _count(values.get("errors")) + _count(values.get("traffic_errors"))
        # More errors than requests is a broken agent; never count a rate over 100 %.
        tally.errors = min(tally.requests, errors)
    for latency in sample.latencies_ms:
        tally.latency_n += 1
        if sketch:
            tally.sketch.add(latency)
        if latency > latency_ms:
            tally.slow_definite += 1
            tally.slow_possible += 1
    if sample.histogram is not None:
        bounds = sample.histogram.bounds
        for i, count in enumerate(sample.histogram.counts):
            if count <= 0:
                continue
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i] if i < len(bounds) else float("inf")
            tally.latency_n += count
            if sketch:
                tally.sketch.add(upper, count)
            if lower >= latency_ms:
                tally.slow_definite += count
            if upper > latency_ms:
                tally.slow_possible += count
    if sample.check in GAUGE_CHECKS:
        value = gauge_value(sample)
        if value is not None:
            tally.gauge_n = 1
            tally.gauge_sum = value
            tally.gauge_max = value
    return tally


@dataclass(slots=True)
class CheckWindow:
    """One check of one host: the window's counts, streaks, and what came last."""

    tally: Tally = field(default_factory=Tally)
    # Consecutive failed samples, and consecutive gauge samples over the threshold,
    # within the window.
    fail_streak: int = 0
    over_streak: int = 0
    last_ok: bool | None = None
    last_value: float | None = None
    last_error: str | None = None
    # Engine time of the latest sample's arrival (silence is judged on arrival).
    last_seen: float | None = None
    # What the latest sample in the window added: the canary-versus-baseline comparison
    # leaves it out to judge both cohorts over a span they both have data for.
    last_delta: Tally | None = None
    # And what the sample before it added: the comparison leaves the canary's latest
    # sample in its span out too (see compare.span).
    prev_delta: Tally | None = None


class HostWindows:
    """Every check of one host."""

    __slots__ = (
        "_batches",
        "_seen_batches",
        "checks",
        "host",
        "plain",
        "slotted",
        "start",
        "untrusted",
    )

    def __init__(self, host: str) -> None:
        self.host = host
        self.start: float | None = None
        self.checks: dict[str, CheckWindow] = {}
        # The same windows by kind: plain checks, and each slot's checks by base name.
        self.plain: dict[str, CheckWindow] = {}
        self.slotted: dict[str, dict[str, CheckWindow]] = {}
        self._batches: deque[tuple[int, int]] = deque()
        self._seen_batches: set[tuple[int, int]] = set()
        # Samples not trusted (see ``untrusted``), by reason.
        self.untrusted: dict[str, int] = {}

    def duplicate(self, session: int, seq: int) -> bool:
        """Whether this batch was seen already; remembers it if not."""
        key = (session, seq)
        if key in self._seen_batches:
            return True
        self._batches.append(key)
        self._seen_batches.add(key)
        if len(self._batches) > DEDUP_DEPTH:
            self._seen_batches.discard(self._batches.popleft())
        return False

    def open(self, start: float) -> None:
        """Start a new window: counts and streaks restart, last-seen facts stay."""
        self.start = start
        for window in self.checks.values():
            window.tally = Tally()
            window.last_delta = None
            window.prev_delta = None
            window.fail_streak = 0
            window.over_streak = 0

    def close(self) -> None:
        self.open(0.0)
        self.start = None

    def trusted(self, sample: Sample, now: float, limits: Limits) -> bool:
        """Whether ``sample``'s numbers can be counted. One that cannot is still a sign
        of life of its check (silence is judged on arrival) and is counted by reason."""
        reason = untrusted(sample, limits.max_count(base_check(sample.check)))
        if reason is None:
            return True
        window = self.checks.get(sample.check)
        if window is None:
            window = self._create(sample.check)
        window.last_seen = now
        self.untrusted[reason] = self.untrusted.get(reason, 0) + 1
        if len(self.untrusted) > DEDUP_DEPTH:
            # Reasons carry the value: keep the most recent few.
            del self.untrusted[next(iter(self.untrusted))]
        return False

    def ingest(self, sample: Sample, now: float, limits: Limits) -> Tally | None:
        """Take one sample ``trusted`` accepted; return what it added to the window
        (None: before the window)."""
        window = self.checks.get(sample.check)
        if window is None:
            window = self._create(sample.check)
        window.last_seen = now
        window.last_ok = sample.ok
        window.last_error = sample.error
        value = gauge_value(sample) if sample.check in GAUGE_CHECKS else None
        window.last_value = value
        if self.start is not None and sample.time < self.start:
            return None
        window.fail_streak = 0 if sample.ok else window.fail_streak + 1
        limit = limits.gauges.get(sample.check)
        if value is not None and limit is not None:
            window.over_streak = window.over_streak + 1 if value > limit else 0
        delta = tally_sample(sample, limits.latency_ms)
        window.tally.merge(delta)
        window.prev_delta = window.last_delta
        window.last_delta = delta
        return delta

    def get(self, check: str) -> CheckWindow | None:
        return self.checks.get(check)

    def for_slot(self, slot: Slot) -> dict[str, CheckWindow]:
        """The checks judged for a blue-green slot: that slot's checks by base name, and
        the host-level gauges."""
        judged = {c: w for c, w in self.plain.items() if c in GAUGE_CHECKS}
        judged.update(self.slotted.get(slot, {}))
        return judged

    def _create(self, check: str) -> CheckWindow:
        window = self.checks[check] = CheckWindow()
        base = base_check(check)
        if base == check:
            self.plain[check] = window
        else:
            self.slotted.setdefault(check[len(base) + 1 :], {})[base] = window
        return window
