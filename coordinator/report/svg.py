"""The report's chart: canary versus baseline over time, as one inline SVG: error rate,
latency, the canary-versus-baseline ratio, and the CPU, memory and disk gauges, on one
time axis with the thresholds, the phases and every decision marked.

Plain SVG 1.1 with presentation attributes (no CSS, no script, no fonts to fetch), so
it renders the same inline in the HTML page, opened alone, or pasted elsewhere.
Every text is escaped.

Nothing written on the chart overlaps: decision markers are laid out in rows and pushed
apart (a slanted leader joins a pushed marker to its time), thresholds are labelled in
the value gutter (a tick label they would cover is left out) and named in the panel's
title. :func:`chart_layout` returns every text's and marker's box with the drawing, so
tests check the layout rather than pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from coordinator.report.model import Entry, Report, Span
from coordinator.report.panels import (
    BASELINE,
    CANARY,
    MUTED,
    THRESHOLD,
    Panel,
    panels,
)
from coordinator.report.words import clock, duration, offset

WIDTH: Final = 1080
LEFT: Final = 76  # the value gutter: ticks and threshold values
RIGHT: Final = 28
LEGEND_Y: Final = 16
MARKER_ROWS: Final = 2
MARKER_R: Final = 8.5
MARKER_GAP: Final = 21.0  # between two markers' centres in a row
ROW_H: Final = 21.0
# Marker rows live between the legend and the first panel's title.
MARKERS_TOP: Final = 42.0
TOP: Final = MARKERS_TOP + MARKER_ROWS * ROW_H + 30
GAP: Final = 42  # above each panel after the first: its title
STRIP: Final = 20  # the steps, under the panels
AXIS: Final = 40
PLOT_W: Final = WIDTH - LEFT - RIGHT
# Approximate advance of a character of Helvetica, as a share of the font size.
CHAR_W: Final = 0.6

GRID: Final = "#e9ecef"
INK: Final = "#343a40"
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
class Box:
    """Where one text or marker is drawn (its bounding box, approximately for text)."""

    kind: str  # marker, gutter, title, legend, axis, step, note
    text: str
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


@dataclass
class _Canvas:
    parts: list[str]
    boxes: list[Box]

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        kind: str,
        size: int = 11,
        fill: str = INK,
        anchor: str = "start",
        weight: str = "normal",
    ) -> None:
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
            f'text-anchor="{anchor}" font-weight="{weight}">{escape(text)}</text>'
        )
        width = CHAR_W * size * len(text) * (1.08 if weight == "bold" else 1.0)
        x0 = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
        # Baseline at y: ascenders reach about 0.75 of the size above, descenders 0.25 below.
        self.boxes.append(Box(kind, text, x0, y - 0.75 * size, x0 + width, y + 0.25 * size))


@dataclass(frozen=True)
class _Axis:
    start: float
    end: float

    def x(self, t: float) -> float:
        span = max(self.end - self.start, 1e-9)
        return LEFT + PLOT_W * min(1.0, max(0.0, (t - self.start) / span))


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


def gutter_labels(
    ticks: Sequence[tuple[float, str]], limits: Sequence[tuple[float, str]], size: float = 10
) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """The value gutter's labels as (y, text): every threshold's (pushed apart where two
    would overlap), and the ticks a threshold label leaves room for."""
    height = size + 2
    placed: list[tuple[float, str]] = []
    for wanted, text in sorted(limits):
        at = max(wanted, placed[-1][0] + height) if placed else wanted
        placed.append((at, text))
    kept = [(y, text) for y, text in ticks if all(abs(y - ly) >= height for ly, _ in placed)]
    return kept, placed


def _panel(canvas: _Canvas, axis: _Axis, top: float, panel: Panel, times: Sequence[float]) -> None:
    out = canvas.parts
    height = panel.height
    bottom = top + height
    values = [v for s in panel.series for _, v in s.values if v is not None]
    values += [j.value for j in panel.judged]
    first_limit = panel.limits[0].value if panel.limits else None
    # A wide upper bound (few requests) may stretch the scale, but not without end.
    cap = 2 * first_limit if first_limit is not None else max(values, default=0.0)
    values += [min(j.high, cap) for j in panel.judged if j.high is not None]
    peak = max(values, default=0.0)
    # Show a threshold when it fits the data's scale; otherwise say where it is.
    shown = [
        limit
        for limit in panel.limits
        if panel.fixed is not None or limit.value <= 3 * peak or peak == 0
    ]
    far = [limit for limit in panel.limits if limit not in shown]
    if panel.fixed is not None:
        ymax = panel.fixed
    else:
        ymax = nice_ceiling(
            max([peak * 1.15, panel.floor, *(limit.value * 1.15 for limit in shown)])
        )

    def y(value: float) -> float:
        return bottom - height * min(1.0, max(0.0, value / ymax))

    title = panel.title
    if far:
        title += (
            " (threshold above this scale)" if len(far) == 1 else " (thresholds above this scale)"
        )
    canvas.text(LEFT, top - 10, title, kind="title", size=13, weight="bold")
    ticks = [(y(value) + 4, panel.fmt(value)) for value in value_ticks(ymax)]
    kept, placed = gutter_labels(
        ticks, [(y(limit.value) + 4, limit.label) for limit in shown if limit.label]
    )
    for value in value_ticks(ymax):
        out.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{LEFT + PLOT_W}" y2="{y(value):.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
    for t in times:
        x = axis.x(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID}" '
            'stroke-width="1"/>'
        )
    for ty, text in kept:
        canvas.text(LEFT - 8, ty, text, kind="gutter", size=10, fill=MUTED, anchor="end")
    out.append(
        f'<rect x="{LEFT}" y="{top}" width="{PLOT_W}" height="{height}" fill="none" '
        f'stroke="#ced4da" stroke-width="1"/>'
    )
    by_label = {limit.label: limit for limit in shown}
    for ty, text in placed:
        limit = by_label[text]
        ly = y(limit.value)
        out.append(
            f'<line x1="{LEFT}" y1="{ly:.1f}" x2="{LEFT + PLOT_W}" y2="{ly:.1f}" '
            f'stroke="{limit.colour}" stroke-width="1.5" stroke-dasharray="{limit.dash}"/>'
        )
        canvas.text(
            LEFT - 8,
            ty,
            text,
            kind="gutter",
            size=10,
            fill=limit.colour,
            anchor="end",
            weight="bold",
        )
    if not values:
        canvas.text(
            LEFT + PLOT_W / 2,
            top + height / 3,
            panel.empty,
            kind="note",
            size=12,
            fill=MUTED,
            anchor="middle",
        )
    for s in panel.series:
        points = [(axis.x(t), v) for t, v in s.values if v is not None or not s.joined]
        dashed = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for run in _segments(points):
            if len(run) > 1:
                path = " ".join(f"{px:.1f},{y(py):.1f}" for px, py in run)
                out.append(
                    f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="2" stroke-linejoin="round"{dashed}/>'
                )
        for t, point in s.values:
            if point is None or not s.dots:
                continue
            tip = f"{s.name} at {clock(t)}: {panel.fmt(point)}"
            out.append(
                f'<circle cx="{axis.x(t):.1f}" cy="{y(point):.1f}" r="2.6" '
                f'fill="{s.colour}"><title>{escape(tip)}</title></circle>'
            )
    for j in panel.judged:
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


def _shading(
    axis: _Axis, spans: Sequence[Span], panels: Sequence[tuple[float, float]]
) -> list[str]:
    out: list[str] = []
    for span in spans:
        fill = PHASE_FILLS.get(span.phase)
        if fill is None:
            continue
        x0, x1 = axis.x(span.start), axis.x(span.end)
        width = max(x1 - x0, 1.0)
        for top, height in panels:
            out.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{width:.1f}" height="{height}" '
                f'fill="{fill[0]}" opacity="0.85"><title>{escape(fill[1])} '
                f"{escape(duration(span.end - span.start))}</title></rect>"
            )
    return out


def _steps(canvas: _Canvas, axis: _Axis, spans: Sequence[Span], top: float) -> None:
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
    canvas.text(LEFT - 8, top + 14, "step", kind="step", size=10, fill=MUTED, anchor="end")
    for index, (start, end, label) in enumerate(merged):
        x0, x1 = axis.x(start), axis.x(end)
        fill = "#ffc9c9" if label == "rollback" else STEP_FILLS[index % 2]
        canvas.parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1.0):.1f}" height="{STRIP}" '
            f'fill="{fill}"><title>{escape(label)}: {escape(duration(end - start))}</title></rect>'
        )
        if x1 - x0 >= CHAR_W * 10 * len(label) + 8:
            canvas.text((x0 + x1) / 2, top + 14, label, kind="step", size=10, anchor="middle")


def tick_times(axis: _Axis) -> list[float]:
    """The time axis' ticks: round offsets from the start, at most ten."""
    span = axis.end - axis.start
    step = time_step(span)
    out: list[float] = []
    t = 0.0
    while t <= span + 1e-6:
        out.append(axis.start + t)
        t += step
    return out


def _time_axis(canvas: _Canvas, axis: _Axis, y: float) -> None:
    for t in tick_times(axis):
        x = axis.x(t)
        canvas.parts.append(
            f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 5}" stroke="{MUTED}" '
            'stroke-width="1"/>'
        )
        canvas.text(
            x, y + 17, offset(t, axis.start), kind="axis", size=10, fill=MUTED, anchor="middle"
        )
    canvas.text(
        LEFT + PLOT_W,
        y + 34,
        f"time since the deployment started (started {clock(axis.start)} UTC)",
        kind="axis",
        size=10,
        fill=MUTED,
        anchor="end",
    )


@dataclass(frozen=True)
class MarkerPlace:
    """Where a decision's numbered marker is drawn: ``x`` is its time on the axis,
    ``cx``/``cy`` the circle's centre (``cx`` pushed aside when markers crowd)."""

    number: int
    x: float
    cx: float
    cy: float


def place_markers(
    xs: Sequence[tuple[int, float]],
    *,
    left: float = LEFT,
    right: float = LEFT + PLOT_W,
    gap: float = MARKER_GAP,
    rows: int = MARKER_ROWS,
) -> list[MarkerPlace]:
    """Markers (number, x in time order) placed in ``rows`` rows so that no two circles
    in a row are closer than ``gap``: each goes in the first row with room at its x,
    else in the row where it moves least, pushed right; a row that runs past ``right``
    is pushed back left. More markers than the rows hold share the space evenly."""
    if not xs:
        return []
    capacity = rows * (math.floor((right - left) / gap) + 1)
    if len(xs) > capacity:
        gap = rows * (right - left) / max(len(xs) - rows, 1)
    lasts = [-math.inf] * rows
    rows_of: list[list[tuple[int, float, float]]] = [[] for _ in range(rows)]
    for number, x in xs:
        free = next((r for r in range(rows) if x - lasts[r] >= gap), None)
        row = free if free is not None else min(range(rows), key=lambda r: lasts[r])
        cx = max(x, lasts[row] + gap, left)
        lasts[row] = cx
        rows_of[row].append((number, x, cx))
    out: list[MarkerPlace] = []
    for row, placed in enumerate(rows_of):
        limit = right
        fixed: list[tuple[int, float, float]] = []
        for number, x, pushed in reversed(placed):
            cx = min(pushed, limit)
            limit = cx - gap
            fixed.append((number, x, cx))
        if fixed and fixed[-1][2] < left:
            # More than the row holds even at the narrowed gap: spread it evenly.
            step = (right - left) / max(len(fixed) - 1, 1)
            fixed = [(n, x, right - i * step) for i, (n, x, _) in enumerate(fixed)]
        cy = MARKERS_TOP + MARKER_R + (rows - 1 - row) * ROW_H
        out += [MarkerPlace(number, x, cx, cy) for number, x, cx in reversed(fixed)]
    out.sort(key=lambda m: m.number)
    return out


def _markers(
    canvas: _Canvas, axis: _Axis, entries: Sequence[Entry], bottom: float
) -> list[MarkerPlace]:
    """Every decision: a numbered circle (the timeline's number) and a line down, with a
    slanted leader from a circle pushed aside to its time."""
    marked = sorted((e for e in entries if e.marked), key=lambda e: (e.time, e.number))
    places = {m.number: m for m in place_markers([(e.number, axis.x(e.time)) for e in marked])}
    for entry in marked:
        m = places[entry.number]
        stroke = colour(entry.category)
        tip = f"#{entry.number} {offset(entry.time, axis.start)} {entry.label}"
        canvas.parts.append(
            f"<g><title>{escape(tip)}</title>"
            f'<polyline points="{m.cx:.1f},{m.cy + MARKER_R:.1f} {m.x:.1f},{TOP - 20:.1f} '
            f'{m.x:.1f},{bottom}" fill="none" stroke="{stroke}" stroke-width="1.3" '
            f'stroke-dasharray="4,3"/>'
            f'<circle cx="{m.cx:.1f}" cy="{m.cy:.1f}" r="{MARKER_R}" fill="{stroke}"/>'
            f'<text x="{m.cx:.1f}" y="{m.cy + 3.5:.1f}" font-size="9" fill="#ffffff" '
            f'text-anchor="middle" font-weight="bold">{entry.number}</text>'
            "</g>"
        )
        canvas.boxes.append(
            Box(
                "marker",
                str(entry.number),
                m.cx - MARKER_R,
                m.cy - MARKER_R,
                m.cx + MARKER_R,
                m.cy + MARKER_R,
            )
        )
    return sorted(places.values(), key=lambda m: m.number)


def _legend(canvas: _Canvas, y: float) -> None:
    items = [
        (CANARY, "canary (new version)", None),
        (BASELINE, "baseline (old version)", None),
        (THRESHOLD, "rollback threshold", "7,4"),
    ]
    x = float(LEFT)
    for stroke, label, dash in items:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        canvas.parts.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{stroke}" '
            f'stroke-width="2.5"{dashed}/>'
        )
        canvas.text(x + 28, y + 4, label, kind="legend", size=11)
        x += 44 + CHAR_W * 11 * len(label)
    canvas.parts.append(
        f'<path d="M{x + 11},{y - 6} L{x + 17},{y} L{x + 11},{y + 6} L{x + 5},{y} Z" '
        f'fill="#ffffff" stroke="{INK}" stroke-width="2"/>'
    )
    canvas.parts.append(
        f'<line x1="{x + 25}" y1="{y - 7}" x2="{x + 25}" y2="{y + 7}" stroke="{INK}" '
        'stroke-width="1.5"/>'
    )
    canvas.text(
        x + 34, y + 4, "what a decision judged: its window, with confidence bounds", kind="legend"
    )


@dataclass(frozen=True)
class Layout:
    """The chart drawn: its SVG parts, its height, and every text's and marker's box."""

    parts: list[str]
    height: float
    boxes: list[Box]
    markers: list[MarkerPlace]


def chart_layout(report: Report) -> Layout:
    span = max(report.end - report.start, 1.0)
    # A little room on the right: the last decisions are not drawn on the frame.
    axis = _Axis(report.start, report.start + span * 1.02)
    chosen = panels(report)
    tops: list[tuple[float, float]] = []
    y = TOP
    for panel in chosen:
        tops.append((y, panel.height))
        y += panel.height + GAP
    strip = y - GAP + 8
    height = strip + STRIP + AXIS
    canvas = _Canvas(parts=[], boxes=[])
    canvas.parts += [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        f'role="img" aria-labelledby="chart-title">',
        f'<title id="chart-title">Canary versus baseline for {escape(report.summary.id)}: '
        "error rate, latency, their ratio, and CPU, memory and disk over time, with every "
        "decision marked</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    _legend(canvas, LEGEND_Y)
    canvas.parts += _shading(axis, report.spans, tops)
    times = tick_times(axis)
    for (top, _), panel in zip(tops, chosen, strict=True):
        _panel(canvas, axis, top, panel, times)
    _steps(canvas, axis, report.spans, strip)
    _time_axis(canvas, axis, strip + STRIP + 2)
    places = _markers(canvas, axis, report.timeline, tops[-1][0] + tops[-1][1])
    canvas.parts.append("</svg>")
    return Layout(parts=canvas.parts, height=height, boxes=canvas.boxes, markers=places)


def chart_svg(report: Report) -> str:
    return "\n".join(chart_layout(report).parts)
