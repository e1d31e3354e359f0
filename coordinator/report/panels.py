"""What the report's chart shows, panel by panel: each panel's series (one value per
analysis window), thresholds and what the decisions judged. The drawing is
:mod:`coordinator.report.svg`'s.

* error rate and latency of each cohort, with the rate rules' judged windows;
* canary ÷ baseline: the canary's error rate over the baseline's since the step began,
  with what the comparison rules (``error_vs_baseline``, ``latency_vs_baseline``)
  judged and the ratios they allow;
* CPU, memory and disk: each cohort's highest host, against the gauge limits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from coordinator.report.model import Cohort, Report, Span, Window
from coordinator.report.words import clock, millis, rate

PANEL: Final = 210
SMALL: Final = 110  # the gauges' panels

CANARY: Final = "#e8590c"
BASELINE: Final = "#1971c2"
THRESHOLD: Final = "#c92a2a"
MUTED: Final = "#868e96"
RATIO: Final = "#7048e8"
REFERENCE: Final = "#adb5bd"


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    # (time, value): a window's end and its value; None breaks the line.
    values: list[tuple[float, float | None]]
    dash: str | None = None
    # False: a reference line, drawn without a dot per point.
    dots: bool = True
    # True: a point without a value is skipped, not a break (a gauge sampled less often
    # than the windows are recorded).
    joined: bool = False


@dataclass(frozen=True)
class Judged:
    """A decision's view of one cohort: its value over the judged window, with the
    confidence bounds the verdict used when there are any."""

    start: float
    end: float
    value: float
    low: float | None
    high: float | None
    colour: str
    tip: str


@dataclass(frozen=True)
class Limit:
    """A threshold line: its value, the short label in the gutter, and its colour."""

    value: float
    label: str
    colour: str = THRESHOLD
    dash: str = "7,4"


@dataclass(frozen=True)
class Panel:
    title: str
    series: list[Series]
    fmt: Callable[[float], str]
    floor: float
    height: float = PANEL
    limits: tuple[Limit, ...] = ()
    judged: tuple[Judged, ...] = ()
    # A fixed scale (percent gauges: 0..100) instead of one fitted to the data.
    fixed: float | None = None
    empty: str = "no requests measured in this period"


def _percent(value: float) -> str:
    return f"{value * 100:.4g}%"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 or value == 0 else f"{value:.3g} ms"


def _gauge(value: float) -> str:
    return f"{value:.0f} %"


def _times(value: float) -> str:
    return f"{value:.3g}x"


def latency_series(quantile: float | None) -> tuple[str, Callable[[Cohort], float | None]]:
    """The windows' latency quantile closest to the one the engine judges by."""
    if quantile is not None and quantile >= 0.99:
        return "p99", lambda c: c.p99_ms
    if quantile is not None and quantile <= 0.5:
        return "p50", lambda c: c.p50_ms
    return "p95", lambda c: c.p95_ms


def judged_marks(report: Report) -> tuple[list[Judged], list[Judged]]:
    rates: list[Judged] = []
    latencies: list[Judged] = []
    for j in report.judged:
        tint = CANARY if j.cohort == "canary" else BASELINE
        where = f"#{j.number} {j.cohort}, judged {clock(j.window_start)} to {clock(j.window_end)}"
        if j.error_rate is not None:
            rates.append(
                Judged(
                    j.window_start,
                    j.window_end,
                    j.error_rate,
                    j.lower,
                    j.upper,
                    tint,
                    f"{where}: {j.errors}/{j.requests} = {rate(j.error_rate)}, bounds "
                    f"{rate(j.lower)} to {rate(j.upper)} ({j.verdict})",
                )
            )
        if j.latency_ms is not None:
            latencies.append(
                Judged(
                    j.window_start,
                    j.window_end,
                    j.latency_ms,
                    None,
                    None,
                    tint,
                    f"{where}: {millis(j.latency_ms)} ({j.latency_verdict})",
                )
            )
    return rates, latencies


def running_ratio(
    windows: Sequence[Window], spans: Sequence[Span]
) -> list[tuple[float, float | None]]:
    """The canary's error rate over the baseline's, pooled since the current step began
    (what the comparison rule judges), at each window's end; None while the baseline
    has no error to divide by."""
    starts = sorted(s.start for s in spans if s.phase == "deploying")
    out: list[tuple[float, float | None]] = []
    counts = [0, 0, 0, 0]  # canary errors, requests, baseline errors, requests
    began: float | None = None
    for w in windows:
        step_start = max((t for t in starts if t < w.end), default=None)
        if step_start != began:
            began = step_start
            counts = [0, 0, 0, 0]
        counts[0] += w.canary.errors
        counts[1] += w.canary.requests
        counts[2] += w.baseline.errors
        counts[3] += w.baseline.requests
        ce, cr, be, br = counts
        value = (ce / cr) / (be / br) if cr and br and be else None
        out.append((w.end, value))
    return out


def comparison(report: Report) -> Panel:
    t = report.thresholds
    limits: list[Limit] = []
    if t.error_ratio is not None:
        limits.append(Limit(t.error_ratio, f"{t.error_ratio:g}x"))
    if t.latency_ratio is not None and t.latency_ratio != t.error_ratio:
        limits.append(Limit(t.latency_ratio, f"{t.latency_ratio:g}x", RATIO, "3,3"))
    judged: list[Judged] = []
    for c in report.compared:
        if c.ratio is None:
            continue
        tint = CANARY if c.rule == "error_vs_baseline" else RATIO
        what = (
            "errors" if c.rule == "error_vs_baseline" else f"slower than {millis(c.slower_than_ms)}"
        )
        judged.append(
            Judged(
                c.window_start,
                c.span_end,
                c.ratio,
                c.lower,
                c.ratio,
                tint,
                f"#{c.number} {c.rule}: canary {rate(c.canary_rate)} vs baseline "
                f"{rate(c.baseline_rate)} {what} = {c.ratio:.2f}x, at least {c.lower:.2f}x, "
                f"allowed {c.allowed:g}x ({c.verdict})",
            )
        )
    words = []
    if t.error_ratio is not None:
        words.append(f"errors roll back over {t.error_ratio:g}x")
    if t.latency_ratio is not None:
        words.append(f"slow requests over {t.latency_ratio:g}x")
    if words and not t.comparison_enforced:
        words = [", ".join(words).replace(" roll back", "") + " (reported only)"]
    return Panel(
        title="Canary ÷ baseline" + (f" — {', '.join(words)}" if words else ""),
        series=[
            Series(
                "error rate ratio since the step began",
                CANARY,
                running_ratio(report.windows, report.spans),
            ),
            Series(
                "equal", REFERENCE, [(report.start, 1.0), (report.end, 1.0)], dash="2,3", dots=False
            ),
        ],
        fmt=_times,
        floor=2.0,
        height=150,
        limits=tuple(limits),
        judged=tuple(judged),
        empty="no errors in the baseline to compare with",
    )


def gauge_panel(report: Report, name: str, title: str) -> Panel:
    limit = report.thresholds.gauges.get(name)
    consecutive = report.thresholds.gauge_consecutive
    words = (
        f" — rollback over {limit:g} % for {consecutive} samples in a row"
        if limit is not None and consecutive is not None
        else ""
    )

    def peak(cohort: Cohort) -> float | None:
        g = cohort.gauges.get(name)
        return g.max if g is not None else None

    return Panel(
        title=f"{title}, highest host{words}",
        series=[
            Series(
                "canary", CANARY, [(w.end, peak(w.canary)) for w in report.windows], joined=True
            ),
            Series(
                "baseline",
                BASELINE,
                [(w.end, peak(w.baseline)) for w in report.windows],
                joined=True,
            ),
        ],
        fmt=_gauge,
        floor=100.0,
        height=SMALL,
        limits=(Limit(limit, f"{limit:g} %"),) if limit is not None else (),
        fixed=100.0,
        empty=f"no {name} samples recorded in this period",
    )


def panels(report: Report) -> list[Panel]:
    """The chart's panels, top to bottom."""
    thresholds = report.thresholds
    q_name, latency_of = latency_series(thresholds.latency_quantile)
    judged_rates, judged_latencies = judged_marks(report)
    windows = report.windows
    error_limit = (
        Limit(
            thresholds.error_rate,
            rate(thresholds.error_rate),
            THRESHOLD if thresholds.error_rate_enforced else MUTED,
        )
        if thresholds.error_rate is not None
        else None
    )
    error_words = (
        (
            f" — rollback over {rate(thresholds.error_rate)}"
            if thresholds.error_rate_enforced
            else f" — {rate(thresholds.error_rate)} (reported only)"
        )
        if thresholds.error_rate is not None
        else ""
    )
    latency_words = (
        f" — rollback over {millis(thresholds.latency_ms)} at {q_name}"
        if thresholds.latency_ms is not None
        else ""
    )
    return [
        Panel(
            title=f"Error rate{error_words}",
            series=[
                Series("canary", CANARY, [(w.end, w.canary.error_rate) for w in windows]),
                Series("baseline", BASELINE, [(w.end, w.baseline.error_rate) for w in windows]),
            ],
            fmt=_percent,
            floor=0.001,
            limits=(error_limit,) if error_limit is not None else (),
            judged=tuple(judged_rates),
        ),
        Panel(
            title=f"Latency ({q_name}){latency_words}",
            series=[
                Series("canary", CANARY, [(w.end, latency_of(w.canary)) for w in windows]),
                Series("baseline", BASELINE, [(w.end, latency_of(w.baseline)) for w in windows]),
            ],
            fmt=_ms,
            floor=10.0,
            limits=(
                (Limit(thresholds.latency_ms, _ms(thresholds.latency_ms)),)
                if thresholds.latency_ms is not None
                else ()
            ),
            judged=tuple(judged_latencies),
        ),
        comparison(report),
        gauge_panel(report, "cpu", "CPU"),
        gauge_panel(report, "memory", "Memory"),
        gauge_panel(report, "disk", "Disk (fullest mount)"),
    ]
