"""The report as Markdown (GitHub flavour): the chart's data as a table of windows,
then the same plan, timeline and hosts as the HTML page. Every text from the
coordinator is escaped so that a message can neither break a table nor render markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from coordinator.report.model import Cohort, Entry, Report, Window, fact_rows
from coordinator.report.panels import latency_series
from coordinator.report.words import clock, duration, millis, offset, rate, stamp

# More windows than this are thinned evenly (the first and last always kept).
MAX_WINDOW_ROWS: Final = 60
# Enough to keep text literal inside a table cell: no emphasis, code, link or pipe.
_SPECIAL: Final = re.compile(r"([\\`*_\[\]|~])")


def md(value: object) -> str:
    """Text safe inside a Markdown table cell: markup escaped, HTML neutralised."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def thin(windows: Sequence[Window], most: int = MAX_WINDOW_ROWS) -> list[Window]:
    if len(windows) <= most:
        return list(windows)
    step = (len(windows) - 1) / (most - 1)
    return [windows[round(i * step)] for i in range(most)]


def render_markdown(report: Report) -> str:
    s = report.summary
    t = report.thresholds
    out: list[str] = [
        f"# rollguard report: {md(s.version)} to {md(s.environment)} by {md(s.strategy)}"
        f" — {md(s.state_words)}",
        "",
        f"**{md(s.outcome)}**",
        "",
    ]
    facts = fact_rows(s, text=md, strong=lambda value: f"**{value}**", code=code)
    out += _table(["", ""], facts)

    out += ["", "## Verdicts", ""]
    v = report.verdicts
    if v is None:
        out.append("No rule has been judged yet.")
    else:
        out += [
            f"What decision **{v.number}** ({md(v.label)}, {offset(v.time, report.start)}) "
            "judged of the canary, the baseline over the same window beside it:",
            "",
        ]
        out += _table(
            ["rule", "canary", "baseline", "threshold", "verdict"],
            (
                [
                    code(row.rule),
                    md(row.canary),
                    md(row.baseline),
                    md(row.threshold),
                    f"**{md(row.verdict.replace('_', ' ').upper())}**"
                    + ("" if row.enforced else " (reported only)"),
                ]
                for row in v.rows
            ),
        )

    q_name, latency_of = latency_series(t.latency_quantile)
    out += ["", "## Canary versus baseline", ""]
    limits: list[str] = []
    if t.error_rate is not None:
        limits.append(
            f"error rate {'rolls back' if t.error_rate_enforced else 'is reported'} over "
            f"{rate(t.error_rate)}"
        )
    if t.latency_ms is not None:
        limits.append(f"{q_name} latency rolls back over {millis(t.latency_ms)}")
    out.append(
        "Thresholds: "
        + md("; ".join(limits) if limits else "no rule judged yet")
        + (f", at {t.confidence:.1%} confidence" if t.confidence is not None else "")
        + "."
    )
    rows = thin(report.windows)
    if len(rows) < len(report.windows):
        out.append(
            f"Every analysis window would be {len(report.windows)} rows; "
            f"{len(rows)} are shown, evenly spaced (the JSON form has them all)."
        )
    out.append("")
    if rows:
        out += _table(
            [
                "window end",
                "since start",
                "canary hosts",
                "canary errors",
                f"canary {q_name}",
                "baseline hosts",
                "baseline errors",
                f"baseline {q_name}",
                "canary cpu/mem/disk peak",
                "baseline cpu/mem/disk peak",
            ],
            (
                [
                    clock(w.end),
                    offset(w.end, report.start),
                    str(w.canary.hosts),
                    _errors(w.canary.errors, w.canary.requests, w.canary.error_rate),
                    millis(latency_of(w.canary)),
                    str(w.baseline.hosts),
                    _errors(w.baseline.errors, w.baseline.requests, w.baseline.error_rate),
                    millis(latency_of(w.baseline)),
                    _gauges(w.canary),
                    _gauges(w.baseline),
                ]
                for w in rows
            ),
        )
    else:
        out.append("No analysis window has been recorded.")
    if report.judged:
        out += ["", "What each decision judged (its whole window, with confidence bounds):", ""]
        out += _table(
            ["#", "cohort", "judged window", "errors", "bounds", "verdict", q_name],
            (
                [
                    str(j.number),
                    md(j.cohort),
                    f"{clock(j.window_start)} to {clock(j.window_end)}",
                    f"{rate(j.error_rate)} ({j.errors}/{j.requests})" if j.requests else "-",
                    f"{rate(j.lower)} to {rate(j.upper)}" if j.requests else "-",
                    md(j.verdict.replace("_", " ")),
                    millis(j.latency_ms),
                ]
                for j in report.judged
            ),
        )
    if report.compared:
        out += ["", "Canary versus baseline, as each decision compared them:", ""]
        out += _table(
            ["#", "rule", "span", "canary", "baseline", "ratio", "at least", "allowed", "verdict"],
            (
                [
                    str(c.number),
                    code(c.rule),
                    f"{clock(c.window_start)} to {clock(c.span_end)}",
                    f"{rate(c.canary_rate)} ({c.canary_events}/{c.canary_trials})",
                    f"{rate(c.baseline_rate)} ({c.baseline_events}/{c.baseline_trials})",
                    f"{c.ratio:.2f}x" if c.ratio is not None else "-",
                    f"{c.lower:.2f}x",
                    f"{c.allowed:g}x",
                    md(c.verdict.replace("_", " ")),
                ]
                for c in report.compared
            ),
        )
    marked = [e for e in report.timeline if e.marked]
    if marked:
        out += ["", "Decisions (numbered as in the timeline):", ""]
        out += [f"- **{e.number}** {offset(e.time, report.start)} {md(e.label)}" for e in marked]

    out += ["", "## Plan", ""]
    out += _table(
        ["step", "hosts", "bake", "outcome"],
        (
            [
                md(r.name),
                f"{len(r.hosts)}: {md(', '.join(r.hosts))}",
                md(duration(r.bake)) + (" (needs approval)" if r.approval else ""),
                md(r.outcome),
            ]
            for r in report.steps
        ),
    )

    out += ["", "## Timeline", ""]
    out += _table(
        ["#", "time (UTC)", "what happened, with its evidence", "who"],
        (
            [
                str(e.number),
                f"{clock(e.time)} ({offset(e.time, report.start)})",
                _what(e),
                md(e.actor) if e.actor else "rollguard",
            ]
            for e in report.timeline
        ),
    )

    out += ["", "## Hosts", ""]
    out += _table(
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
        (
            [
                code(h.host),
                md(", ".join(f"{k}={v}" for k, v in sorted(h.labels.items())) or "-"),
                md(h.from_version or "-"),
                md(h.step or "not reached"),
                md(h.rollout or "-"),
                md(h.rollback or "-"),
                md(h.end_version or "-"),
                "not reporting"
                if h.online is None
                else md(h.now_version or "-") + ("" if h.online else " (offline)"),
                "as expected" if h.ok else f"expected {md(h.expected)}" if h.ok is False else "",
            ]
            for h in report.hosts
        ),
    )
    out += [
        "",
        f"_Generated by rollguard on {md(stamp(report.generated))} from the coordinator's "
        "stored events._",
        "",
    ]
    return "\n".join(out)


def _gauges(cohort: Cohort) -> str:
    peaks = [cohort.gauges.get(name) for name in ("cpu", "memory", "disk")]
    if not any(peaks):
        return "-"
    return "/".join(f"{g.max:.0f}" if g is not None else "-" for g in peaks) + " %"


def _errors(errors: int, requests: int, value: float | None) -> str:
    return f"{rate(value)} ({errors}/{requests})" if requests else "-"


def code(value: str) -> str:
    return md(value) if "`" in value else f"`{value}`"


def _what(entry: Entry) -> str:
    head = code(entry.kind) + (f" {code(entry.host)}" if entry.host else "")
    parts = [head, md(entry.message)]
    parts += [f"· {md(d)}" for d in entry.details]
    for rule in entry.rules:
        verdict = rule.verdict.replace("_", " ").upper()
        enforced = "" if rule.enforced else " (reported only)"
        parts.append(f"· **{md(verdict)}** {md(rule.message)}{enforced}")
    return "<br>".join(parts)
