"""The report as one self-contained HTML page: inline CSS and SVG, no script, no
external asset, every text escaped."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Final

from coordinator.report.model import (
    Entry,
    HostRow,
    Report,
    RuleLine,
    StepRow,
    VerdictRow,
    fact_rows,
)
from coordinator.report.svg import chart_svg, colour
from coordinator.report.words import clock, duration, millis, offset, rate, stamp

STATE_COLOURS: Final = {
    "completed": "#2f9e44",
    "rolled_back": "#e03131",
    "failed": "#862e9c",
    "refused": "#868e96",
}
VERDICT_COLOURS: Final = {
    "fail": "#e03131",
    "pass": "#2f9e44",
    "inconclusive": "#f08c00",
    "no_data": "#868e96",
}

CSS: Final = """
:root { color-scheme: light; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #212529;
  margin: 0; background: #f8f9fa; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 40px; }
header { background: #fff; border: 1px solid #dee2e6; border-radius: 8px; padding: 18px 22px; }
h1 { font-size: 22px; margin: 6px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.state { display: inline-block; color: #fff; font-weight: 700; font-size: 12px;
  letter-spacing: .06em; text-transform: uppercase; padding: 3px 10px; border-radius: 12px; }
.outcome { font-size: 15px; margin: 8px 0 14px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 0; }
dl.facts dt { color: #868e96; }
dl.facts dd { margin: 0; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
section.card { background: #fff; border: 1px solid #dee2e6; border-radius: 8px;
  padding: 14px 18px; overflow-x: auto; }
svg { display: block; max-width: 100%; height: auto; }
ol.markers { columns: 2; margin: 10px 0 0; padding-left: 0; list-style: none; font-size: 13px; }
ol.markers li { margin: 2px 0; break-inside: avoid; }
.num { display: inline-block; min-width: 20px; height: 20px; border-radius: 10px;
  color: #fff; font-size: 11px; font-weight: 700; text-align: center; line-height: 20px;
  margin-right: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px;
  border-bottom: 1px solid #e9ecef; }
th { color: #495057; font-weight: 600; background: #f1f3f5; }
td.when { white-space: nowrap; color: #495057; }
td code, td.nowrap { white-space: nowrap; }
ul.ev { margin: 4px 0 0; padding-left: 18px; color: #495057; }
ul.rules { margin: 4px 0 0; padding-left: 0; list-style: none; }
.verdict { display: inline-block; min-width: 100px; font-size: 10.5px; font-weight: 700;
  text-transform: uppercase; letter-spacing: .04em; }
.muted { color: #868e96; }
.ok { color: #2f9e44; font-weight: 600; }
.bad { color: #e03131; font-weight: 600; }
.note { color: #495057; font-size: 13px; margin: 8px 0 0; }
table.verdicts td.v { white-space: nowrap; font-weight: 700; text-transform: uppercase;
  font-size: 11.5px; letter-spacing: .04em; }
table.verdicts tr.fail td { background: #fff5f5; }
footer { color: #868e96; font-size: 12px; margin-top: 26px; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _facts(report: Report) -> str:
    rows = fact_rows(
        report.summary,
        text=_e,
        strong=lambda value: f"<b>{value}</b>",
        code=lambda value: f"<code>{_e(value)}</code>",
    )
    return (
        '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
    )


def _number(entry: Entry) -> str:
    return f'<span class="num" style="background:{colour(entry.category)}">{entry.number}</span>'


def _markers(report: Report) -> str:
    marked = [e for e in report.timeline if e.marked]
    if not marked:
        return '<p class="note">No decision has been recorded yet.</p>'
    items = "".join(
        f"<li>{_number(e)}<span class='muted'>{_e(offset(e.time, report.start))}</span> "
        f"{_e(e.label)}</li>"
        for e in marked
    )
    return f'<ol class="markers">{items}</ol>'


def _threshold_note(report: Report) -> str:
    t = report.thresholds
    parts: list[str] = []
    if t.error_rate is not None:
        parts.append(
            f"error rate {'rolls back' if t.error_rate_enforced else 'is reported'} over "
            f"{_e(rate(t.error_rate))}"
        )
    if t.latency_ms is not None:
        q = f"p{(t.latency_quantile or 0.95) * 100:g}"
        parts.append(f"{q} latency rolls back over {_e(millis(t.latency_ms))}")
    text = "; ".join(parts) if parts else "no rule has been judged yet"
    confidence = (
        f", judged at {t.confidence:.1%} confidence on the whole bake window, not on single points"
        if t.confidence is not None
        else ""
    )
    count = len(report.windows)
    return (
        f'<p class="note">Thresholds: {text}{_e(confidence)}. Each point is one analysis '
        f"window ({count} in all) of the canary (hosts on the new version) and the "
        "baseline (hosts still on the old one); the gauges show the highest host of each "
        "cohort, the ratio the canary's error rate over the baseline's since the step "
        "began; shaded: held or paused (yellow), rolling back (red). Numbered markers are "
        "the decisions in the timeline below.</p>"
    )


def _rule(line: RuleLine) -> str:
    tint = VERDICT_COLOURS.get(line.verdict, "#868e96")
    label = line.verdict.replace("_", " ")
    enforced = "" if line.enforced else ' <span class="muted">(reported only)</span>'
    cohort = f' <span class="muted">[{_e(line.cohort)}]</span>' if line.cohort else ""
    return (
        f'<li><span class="verdict" style="color:{tint}">{_e(label)}</span>'
        f"{_e(line.message)}{cohort}{enforced}</li>"
    )


def _entry(entry: Entry, start: float) -> str:
    evidence = ""
    if entry.details:
        evidence += '<ul class="ev">' + "".join(f"<li>{_e(d)}</li>" for d in entry.details)
        evidence += "</ul>"
    if entry.rules:
        evidence += '<ul class="rules">' + "".join(_rule(r) for r in entry.rules) + "</ul>"
    who = f"<b>{_e(entry.actor)}</b>" if entry.actor else '<span class="muted">rollguard</span>'
    number = _number(entry) if entry.marked else f'<span class="muted">{entry.number}</span>'
    host = f" <code>{_e(entry.host)}</code>" if entry.host else ""
    return (
        f"<tr><td>{number}</td>"
        f'<td class="when">{_e(clock(entry.time))}<br>'
        f'<span class="muted">{_e(offset(entry.time, start))}</span></td>'
        f"<td><code>{_e(entry.kind)}</code>{host}<br>{_e(entry.message)}{evidence}</td>"
        f'<td class="nowrap">{who}</td></tr>'
    )


def _table(head: Iterable[str], rows: Iterable[str]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _verdict_row(row: VerdictRow) -> str:
    tint = VERDICT_COLOURS.get(row.verdict, "#868e96")
    label = row.verdict.replace("_", " ")
    enforced = "" if row.enforced else '<br><span class="muted">reported only</span>'
    return (
        f'<tr class="{_e(row.verdict)}"><td><code>{_e(row.rule)}</code></td>'
        f"<td>{_e(row.canary)}</td><td>{_e(row.baseline)}</td><td>{_e(row.threshold)}</td>"
        f'<td class="v" style="color:{tint}" title="{_e(row.message)}">{_e(label)}'
        f"{enforced}</td></tr>"
    )


def _verdicts(report: Report) -> str:
    v = report.verdicts
    if v is None:
        return '<p class="note">No rule has been judged yet.</p>'
    table = _table(
        ["rule", "canary", "baseline", "threshold", "verdict"],
        (_verdict_row(row) for row in v.rows),
    ).replace("<table>", '<table class="verdicts">', 1)
    marker = next((e for e in report.timeline if e.number == v.number), None)
    number = _number(marker) if marker is not None else f"#{v.number}"
    return (
        f'<p class="note">{number}What decision #{v.number} ({_e(v.label)}, '
        f"{_e(offset(v.time, report.start))}) judged of the canary, the baseline over the "
        "same window beside it.</p>" + table
    )


def _step(row: StepRow) -> str:
    approval = " (needs approval)" if row.approval else ""
    return (
        f"<tr><td>{_e(row.name)}</td><td>{len(row.hosts)}: {_e(', '.join(row.hosts))}</td>"
        f"<td>{_e(duration(row.bake))}{_e(approval)}</td><td>{_e(row.outcome)}</td></tr>"
    )


def _host(row: HostRow) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(row.labels.items()))
    if row.now_version is None and row.online is None:
        now = '<span class="muted">not reporting</span>'
    else:
        now = _e(row.now_version or "-")
        if row.online is False:
            now += ' <span class="bad">offline</span>'
    if row.ok is True:
        verdict = '<span class="ok">as expected</span>'
    elif row.ok is False:
        verdict = f'<span class="bad">expected {_e(row.expected)}</span>'
    else:
        verdict = '<span class="muted">-</span>'
    return (
        f"<tr><td><code>{_e(row.host)}</code></td><td>{_e(labels or '-')}</td>"
        f"<td>{_e(row.from_version or '-')}</td><td>{_e(row.step or 'not reached')}</td>"
        f"<td>{_e(row.rollout or '-')}</td><td>{_e(row.rollback or '-')}</td>"
        f"<td>{_e(row.end_version or '-')}</td><td>{now}</td>"
        f'<td class="nowrap">{verdict}</td></tr>'
    )


def render_html(report: Report) -> str:
    s = report.summary
    tint = STATE_COLOURS.get(s.state, "#1c7ed6")
    timeline = _table(
        ["#", "time (UTC)", "what happened, with its evidence", "who"],
        (_entry(e, report.start) for e in report.timeline),
    )
    hosts = _table(
        [
            "host",
            "labels",
            "before",
            "got the new version at",
            "rollout command",
            "rollback command",
            "after this deployment",
            "now",
            "",
        ],
        (_host(h) for h in report.hosts),
    )
    steps = _table(["step", "hosts", "bake", "outcome"], (_step(r) for r in report.steps))
    title = f"{s.version} to {s.environment} by {s.strategy}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rollguard report: {_e(s.id)} ({_e(s.state_words)})</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<span class="state" style="background:{tint}">{_e(s.state_words)}</span>
<h1>{_e(title)}</h1>
<p class="outcome">{_e(s.outcome)}</p>
{_facts(report)}
</header>
<h2>Verdicts</h2>
<section class="card" id="verdicts">{_verdicts(report)}</section>
<h2>Canary versus baseline</h2>
<section class="card" id="chart">
{chart_svg(report)}
{_markers(report)}
{_threshold_note(report)}
</section>
<h2>Plan</h2>
<section class="card" id="plan">{steps}</section>
<h2>Timeline</h2>
<section class="card" id="timeline">{timeline}</section>
<h2>Hosts</h2>
<section class="card" id="hosts">{hosts}
<p class="note">“After this deployment” is what the deployment's own commands left on each
host; “now” is what the host reported when this report was generated.</p>
</section>
<footer>Generated by rollguard on {_e(stamp(report.generated))} from the coordinator's stored
events for deployment {_e(s.id)}.</footer>
</main>
</body>
</html>
"""
