"""The report's chart: canary versus baseline error rate and p95 latency over time, as
one inline SVG with the thresholds, the phases and every decision marked.

Plain SVG 1.1 with presentation attributes (no CSS, no script, no fonts to fetch), so
it renders the same inline in the HTML page, opened alone, or pasted elsewhere.
Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from coordinator.report.model import Cohort, Entry, Report, Span, Window
from coordinator.report.words import clock, duration, millis, offset, rate

WIDTH: Final = 1080
LEFT: Final = 70
RIGHT: Final = 28
TOP: Final = 64  # marker numbers live above the first panel
PANEL: Final = 210
GAP: Final = 52  # between the panels: the second panel's title
STRIP: Final = 20  # the steps, under the second panel
AXIS: Final = 40
HEIGHT: Final = TOP + PANEL + GAP + PANEL + 8 + STRIP + AXIS
PLOT_W: Final = WIDTH - LEFT - RIGHT

CANARY: Final = "#e8590c"
BASELINE: Final = "#1971c2"
THRESHOLD: Final = "#c92a2a"
GRID: Final = "#e9ecef"
INK: Final = "#343a40"
MUTED: Final = "#868e96"
CATEGORY_COLOURS: Final = {
    "start": "#868e96",
    "step": "#4dabf7",
    "promote": "#2f9e44",
    "hold": "#f08c00",
    "resume": "#1c7ed6",
    "rollback": "#e03131",
    "done": "#c92a2a",
    "failed": "#862e9c",
    "operator": "#7048e8",
    "command": "#adb5bd",
    "info": "#868e96",
}
PHASE_FILLS: Final = {
    "held": ("#fff3bf", "held"),
    "paused": ("#fff3bf", "paused"),
    "awaiting_approval": ("#fff3bf", "awaiting approval"),
    "rolling_back": ("#ffe3e3", "rolling back"),
}
STEP_FILLS: Final = ("#d0ebff", "#a5d8ff")
TIME_STEPS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


def colour(category: str) -> str:
    return CATEGORY_COLOURS.get(category, MUTED)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10 * power


def value_ticks(ymax: float) -> list[float]:
    """Round ticks from 0 to ``ymax`` (a nice_ceiling): 4 or 5 intervals."""
    power = 10.0 ** math.floor(math.log10(ymax))
    leading = round(ymax / power, 3)
    step = {1.0: 0.2, 2.0: 0.5, 2.5: 0.5, 5.0: 1.0, 10.0: 2.0}.get(leading, leading / 4) * power
    count = round(ymax / step)
    return [step * i for i in range(count + 1)]


def time_step(span: float, most: int = 10) -> int:
    for step in TIME_STEPS:
        if span / step <= most:
            return step
    return TIME_STEPS[-1] * math.ceil(span / (TIME_STEPS[-1] * most))


@dataclass(frozen=True)
class _Axis:
    start: float
    end: float

    def x(self, t: float) -> float:
        span = max(self.end - self.start, 1e-9)
        return LEFT + PLOT_W * min(1.0, max(0.0, (t - self.start) / span))


def _text(
    x: float,
    y: float,
    text: str,
    *,
    size: int = 11,
    fill: str = INK,
    anchor: str = "start",
    weight: str = "normal",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
        f'text-anchor="{anchor}" font-weight="{weight}">{escape(text)}</text>'
    )


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Runs of points with values; a window without data breaks the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]


@dataclass(frozen=True)
class _Series:
    name: str
    colour: str
    values: list[tuple[Window, float | None]]


@dataclass(frozen=True)
class _Judged:
    """A decision's view of one cohort: its value over the judged window, with the
    confidence bounds the verdict used when there are any."""

    start: float
    end: float
    value: float
    low: float | None
    high: float | None
    colour: str
    tip: str


def _panel(
    axis: _Axis,
    top: float,
    title: str,
    series: Sequence[_Series],
    *,
    threshold: float | None,
    threshold_label: str,
    fmt: Callable[[float], str],
    floor: float,
    judged: Sequence[_Judged] = (),
) -> list[str]:
    bottom = top + PANEL
    values = [v for s in series for _, v in s.values if v is not None]
    values += [j.value for j in judged]
    # A wide upper bound (few requests) may stretch the scale, but not without end.
    cap = 2 * threshold if threshold is not None else max(values, default=0.0)
    values += [min(j.high, cap) for j in judged if j.high is not None]
    peak = max(values, default=0.0)
    # Show the threshold when it fits the data's scale; otherwise say where it is.
    shown = threshold if threshold is not None and (threshold <= 3 * peak or peak == 0) else None
    ymax = nice_ceiling(max(peak * 1.15, floor, shown * 1.15 if shown is not None else 0.0))

    def y(value: float) -> float:
        return bottom - PANEL * min(1.0, max(0.0, value / ymax))

    out = [_text(LEFT, top - 10, title, size=13, weight="bold")]
    if threshold is not None and shown is None:
        # Far above the data: said next to the title instead of squashing the data.
        out.append(
            _text(
                LEFT + 12 + 7.5 * len(title),
                top - 10,
                f"({threshold_label}: far above this scale)",
                size=10,
                fill=THRESHOLD,
            )
        )
    for value in value_ticks(ymax):
        out.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{LEFT + PLOT_W}" y2="{y(value):.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(_text(LEFT - 8, y(value) + 4, fmt(value), size=10, fill=MUTED, anchor="end"))
    out.append(
        f'<rect x="{LEFT}" y="{top}" width="{PLOT_W}" height="{PANEL}" fill="none" '
        f'stroke="#ced4da" stroke-width="1"/>'
    )
    if shown is not None:
        ty = y(shown)
        out.append(
            f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + PLOT_W}" y2="{ty:.1f}" '
            f'stroke="{THRESHOLD}" stroke-width="1.5" stroke-dasharray="7,4"/>'
        )
        out.append(
            _text(LEFT + PLOT_W - 4, ty - 5, threshold_label, size=10, fill=THRESHOLD, anchor="end")
        )
    if not values:
        out.append(
            _text(
                LEFT + PLOT_W / 2,
                top + PANEL / 3,
                "no requests measured in this period",
                size=12,
                fill=MUTED,
                anchor="middle",
            )
        )
    for s in series:
        points = [(axis.x(w.end), v) for w, v in s.values]
        for run in _segments(points):
            if len(run) > 1:
                path = " ".join(f"{px:.1f},{y(py):.1f}" for px, py in run)
                out.append(
                    f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="2" stroke-linejoin="round"/>'
                )
        for window, point in s.values:
            if point is None:
                continue
            tip = f"{s.name} {clock(window.start)} to {clock(window.end)}: {fmt(point)}"
            out.append(
                f'<circle cx="{axis.x(window.end):.1f}" cy="{y(point):.1f}" r="2.6" '
                f'fill="{s.colour}"><title>{escape(tip)}</title></circle>'
            )
    for j in judged:
        x0, x1, vy = axis.x(j.start), axis.x(j.end), y(j.value)
        glyph = [
            f'<line x1="{x0:.1f}" y1="{vy:.1f}" x2="{x1:.1f}" y2="{vy:.1f}" '
            f'stroke="{j.colour}" stroke-width="1.5" stroke-opacity="0.55"/>'
        ]
        if j.low is not None and j.high is not None:
            ly, hy = y(j.low), y(j.high)
            glyph.append(
                f'<line x1="{x1:.1f}" y1="{ly:.1f}" x2="{x1:.1f}" y2="{hy:.1f}" '
                f'stroke="{j.colour}" stroke-width="1.5"/>'
            )
            glyph += [
                f'<line x1="{x1 - 4:.1f}" y1="{b:.1f}" x2="{x1 + 4:.1f}" y2="{b:.1f}" '
                f'stroke="{j.colour}" stroke-width="1.5"/>'
                for b in (ly, hy)
            ]
        glyph.append(
            f'<path d="M{x1:.1f},{vy - 6:.1f} L{x1 + 6:.1f},{vy:.1f} L{x1:.1f},{vy + 6:.1f} '
            f'L{x1 - 6:.1f},{vy:.1f} Z" fill="#ffffff" stroke="{j.colour}" stroke-width="2"/>'
        )
        out.append(f"<g><title>{escape(j.tip)}</title>{''.join(glyph)}</g>")
    return out


def _percent(value: float) -> str:
    return f"{value * 100:.4g}%"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 or value == 0 else f"{value:.3g} ms"


def _shading(axis: _Axis, spans: Sequence[Span], tops: Sequence[float]) -> list[str]:
    out: list[str] = []
    for span in spans:
        fill = PHASE_FILLS.get(span.phase)
        if fill is None:
            continue
        x0, x1 = axis.x(span.start), axis.x(span.end)
        width = max(x1 - x0, 1.0)
        for top in tops:
            out.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{width:.1f}" height="{PANEL}" '
                f'fill="{fill[0]}" opacity="0.85"><title>{escape(fill[1])} '
                f"{escape(duration(span.end - span.start))}</title></rect>"
            )
    return out


def _steps(axis: _Axis, spans: Sequence[Span], top: float) -> list[str]:
    """The strip under the panels: which step was running when."""
    merged: list[tuple[float, float, str]] = []
    for span in spans:
        label = "rollback" if span.phase == "rolling_back" else span.step
        if label is None:
            continue
        if merged and merged[-1][2] == label:
            merged[-1] = (merged[-1][0], span.end, label)
        else:
            merged.append((span.start, span.end, label))
    out = [_text(LEFT - 8, top + 14, "step", size=10, fill=MUTED, anchor="end")]
    for index, (start, end, label) in enumerate(merged):
        x0, x1 = axis.x(start), axis.x(end)
        fill = "#ffc9c9" if label == "rollback" else STEP_FILLS[index % 2]
        out.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1.0):.1f}" height="{STRIP}" '
            f'fill="{fill}"><title>{escape(label)}: {escape(duration(end - start))}</title></rect>'
        )
        if x1 - x0 >= 7 * len(label) + 6:
            out.append(_text((x0 + x1) / 2, top + 14, label, size=10, anchor="middle"))
    return out


def _time_axis(axis: _Axis, y: float) -> list[str]:
    span = axis.end - axis.start
    step = time_step(span)
    out: list[str] = []
    t = 0.0
    while t <= span + 1e-6:
        x = axis.x(axis.start + t)
        out.append(
            f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 5}" stroke="{MUTED}" '
            'stroke-width="1"/>'
        )
        out.append(
            _text(
                x, y + 17, offset(axis.start + t, axis.start), size=10, fill=MUTED, anchor="middle"
            )
        )
        t += step
    out.append(
        _text(
            LEFT + PLOT_W,
            y + 34,
            f"time since the deployment started (started {clock(axis.start)} UTC)",
            size=10,
            fill=MUTED,
            anchor="end",
        )
    )
    return out


def _markers(axis: _Axis, entries: Sequence[Entry], bottom: float) -> list[str]:
    """Every decision: a numbered circle (the timeline's number) and a line down."""
    out: list[str] = []
    last_in_row: list[float] = [-1e9, -1e9, -1e9]
    for entry in sorted((e for e in entries if e.marked), key=lambda e: (e.time, e.number)):
        x = axis.x(entry.time)
        row = next((r for r, last in enumerate(last_in_row) if x - last >= 19), 2)
        last_in_row[row] = x
        cy = TOP - 14 - row * 18
        stroke = colour(entry.category)
        tip = f"#{entry.number} {offset(entry.time, axis.start)} {entry.label}"
        out.append(
            f"<g><title>{escape(tip)}</title>"
            f'<line x1="{x:.1f}" y1="{cy + 8:.1f}" x2="{x:.1f}" y2="{bottom}" stroke="{stroke}" '
            f'stroke-width="1.3" stroke-dasharray="4,3"/>'
            f'<circle cx="{x:.1f}" cy="{cy:.1f}" r="8.5" fill="{stroke}"/>'
            + _text(
                x,
                cy + 3.5,
                str(entry.number),
                size=9,
                fill="#ffffff",
                anchor="middle",
                weight="bold",
            )
            + "</g>"
        )
    return out


def _legend(y: float) -> list[str]:
    items = [
        (CANARY, "canary (new version)", None),
        (BASELINE, "baseline (old version)", None),
        (THRESHOLD, "rollback threshold", "7,4"),
    ]
    out: list[str] = []
    x = LEFT
    for stroke, label, dash in items:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{stroke}" '
            f'stroke-width="2.5"{dashed}/>'
        )
        out.append(_text(x + 28, y + 4, label, size=11))
        x += 40 + 7 * len(label)
    out.append(
        f'<path d="M{x + 11},{y - 6} L{x + 17},{y} L{x + 11},{y + 6} L{x + 5},{y} Z" '
        f'fill="#ffffff" stroke="{INK}" stroke-width="2"/>'
    )
    out.append(
        f'<line x1="{x + 25}" y1="{y - 7}" x2="{x + 25}" y2="{y + 7}" stroke="{INK}" '
        'stroke-width="1.5"/>'
    )
    out.append(
        _text(
            x + 34,
            y + 4,
            "what a decision judged: its whole window, with confidence bounds",
            size=11,
        )
    )
    return out


def latency_series(quantile: float | None) -> tuple[str, Callable[[Cohort], float | None]]:
    """The windows' latency quantile closest to the one the engine judges by."""
    if quantile is not None and quantile >= 0.99:
        return "p99", lambda c: c.p99_ms
    if quantile is not None and quantile <= 0.5:
        return "p50", lambda c: c.p50_ms
    return "p95", lambda c: c.p95_ms


def _judged_marks(report: Report) -> tuple[list[_Judged], list[_Judged]]:
    rates: list[_Judged] = []
    latencies: list[_Judged] = []
    for j in report.judged:
        tint = CANARY if j.cohort == "canary" else BASELINE
        where = f"#{j.number} {j.cohort}, judged {clock(j.window_start)} to {clock(j.window_end)}"
        if j.error_rate is not None:
            rates.append(
                _Judged(
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
                _Judged(
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


def chart_svg(report: Report) -> str:
    span = max(report.end - report.start, 1.0)
    # A little room on the right: the last decisions are not drawn on the frame.
    axis = _Axis(report.start, report.start + span * 1.02)
    top1 = TOP
    top2 = TOP + PANEL + GAP
    strip = top2 + PANEL + 8
    windows = report.windows
    thresholds = report.thresholds
    q_name, latency_of = latency_series(thresholds.latency_quantile)
    error_label = (
        f"rollback over {rate(thresholds.error_rate)}"
        if thresholds.error_rate_enforced
        else f"{rate(thresholds.error_rate)} (reported only)"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" '
        f'role="img" aria-labelledby="chart-title">',
        f'<title id="chart-title">Canary versus baseline for {escape(report.summary.id)}: '
        "error rate and p95 latency over time, with every decision marked</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    judged_rates, judged_latencies = _judged_marks(report)
    parts += _legend(16)
    parts += _shading(axis, report.spans, (top1, top2))
    parts += _panel(
        axis,
        top1,
        "Error rate",
        [
            _Series("canary", CANARY, [(w, w.canary.error_rate) for w in windows]),
            _Series("baseline", BASELINE, [(w, w.baseline.error_rate) for w in windows]),
        ],
        threshold=thresholds.error_rate,
        threshold_label=error_label,
        fmt=_percent,
        floor=0.001,
        judged=judged_rates,
    )
    parts += _panel(
        axis,
        top2,
        f"Latency ({q_name})",
        [
            _Series("canary", CANARY, [(w, latency_of(w.canary)) for w in windows]),
            _Series("baseline", BASELINE, [(w, latency_of(w.baseline)) for w in windows]),
        ],
        threshold=thresholds.latency_ms,
        threshold_label=f"rollback over {millis(thresholds.latency_ms)} at {q_name}",
        fmt=_ms,
        floor=10.0,
        judged=judged_latencies,
    )
    parts += _steps(axis, report.spans, strip)
    parts += _time_axis(axis, strip + STRIP + 2)
    parts += _markers(axis, report.timeline, top2 + PANEL)
    parts.append("</svg>")
    return "\n".join(parts)
