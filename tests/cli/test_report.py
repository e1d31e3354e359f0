"""The report's pure parts: what it extracts from the API's views, and the HTML,
Markdown and JSON it renders (escaping included), fed by what the real engine recorded
in the fleet simulator (tests/cli/samples.py)."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from coordinator.report import build_report, render
from coordinator.report.markdown import md, thin
from coordinator.report.model import Cohort, Report, Window, logged, windows_of
from coordinator.report.svg import (
    LEFT,
    MARKER_R,
    PLOT_W,
    Box,
    chart_layout,
    gutter_labels,
    nice_ceiling,
    place_markers,
    time_step,
    value_ticks,
)
from coordinator.report.words import rules_of
from shared.evidence import (
    ErrorComparisonResult,
    ErrorRateResult,
    LatencyComparisonResult,
    RollbackStarted,
)
from tests.cli.samples import (
    BAD,
    GOOD,
    HOSTILE,
    SCRIPT,
    STABLE,
    START,
    Run,
    bad_canary,
    cpu_hot,
    good_rollout,
    hostile,
    in_progress,
    short_rollback,
)


def report(run: Run) -> Report:
    return build_report(run.deployment, run.events, run.hosts, generated=run.now + 60)


def test_summary_tells_the_outcome_with_its_reason() -> None:
    run = bad_canary()
    s = report(run).summary
    reason = run.deployment.rollback_reason
    assert reason is not None and reason.startswith("error_rate: ")
    assert s.state == "rolled_back"
    assert s.state_words == "rolled back"
    assert s.outcome.startswith(f"Rolled back to {STABLE} automatically after ")
    assert s.outcome.endswith(f" at step 10% (1 of 4): {reason}.")
    assert (s.step, s.step_number, s.steps_total) == ("10%", 1, 4)
    assert s.duration == pytest.approx(run.now - START)
    assert s.actor == "alice" and s.reason == "CHG-1"

    done = report(good_rollout()).summary
    assert done.outcome.startswith("Completed after 2 h 30 min: every host (10) runs 2.0.0.")
    assert (done.step, done.step_number) == ("100%", 4)


def test_windows_thresholds_and_what_each_decision_judged() -> None:
    run = bad_canary()
    r = report(run)
    recorded = [e for e in run.events if e.kind == "analysis.window"]
    assert [w.end for w in r.windows] == [e.time for e in recorded]
    assert sum(w.canary.requests for w in r.windows) > 0
    assert all(w.baseline.hosts == 9 for w in r.windows if w.baseline.requests)
    assert r.thresholds.error_rate == 0.01
    assert r.thresholds.latency_ms == 1000.0
    assert r.thresholds.latency_quantile == 0.95
    canary, baseline = r.judged
    fail = next(e for e in r.timeline if e.kind == "deployment.fail")
    assert canary.number == baseline.number == fail.number
    assert (canary.cohort, canary.verdict) == ("canary", "fail")
    assert canary.lower is not None and canary.upper is not None
    assert 0.01 < canary.lower < (canary.error_rate or 0) < canary.upper
    assert canary.errors > 0 and canary.requests > canary.errors
    assert canary.latency_ms is not None
    # The canary's error rate was in the fail's words.
    assert f"{canary.errors}/{canary.requests} = " in fail.message
    assert baseline.cohort == "baseline" and baseline.requests > canary.requests


def test_timeline_numbers_every_event_but_the_windows_and_marks_decisions() -> None:
    r = report(bad_canary())
    assert [e.number for e in r.timeline] == list(range(1, len(r.timeline) + 1))
    assert "analysis.window" not in {e.kind for e in r.timeline}
    marked = [(e.kind, e.label, e.category) for e in r.timeline if e.marked]
    assert marked == [
        ("deployment.fail", "rollback: error_rate", "rollback"),
        ("deployment.rollback_done", "rolled back", "done"),
    ]
    fail = next(e for e in r.timeline if e.kind == "deployment.fail")
    assert fail.rules[0].rule == "error_rate" and fail.rules[0].verdict == "fail"  # first
    assert any(d.startswith("after ") and d.endswith(" of a 1 h bake") for d in fail.details)
    assert any(d.startswith("judged window ") for d in fail.details)
    assert not any(d.startswith("reason: ") for d in fail.details)  # already the message
    assert r.timeline[0].actor == "alice"
    assert "plan: 10% (1 host, bake 1 h) → 25% (2 hosts, bake 15 min)" in r.timeline[0].details[1]
    refused = r.timeline[-1]
    assert (refused.kind, refused.category) == ("operator.pause", "failed")
    assert "reason refused: cannot pause while rolled_back" in refused.details


def test_phases_and_hosts() -> None:
    run = bad_canary()
    r = report(run)
    assert [(s.phase, s.step) for s in r.spans] == [
        ("deploying", "10%"),
        ("baking", "10%"),
        ("rolling_back", "10%"),
    ]
    assert r.spans[0].end == r.spans[1].start
    canary = run.deployment.steps[0].orders[0].host
    rows = {h.host: h for h in r.hosts}
    assert len(rows) == 10
    assert rows[canary].step == "10%"
    assert rows[canary].rollout == f"deploy {BAD}: succeeded"
    assert rows[canary].rollback == f"rollback {STABLE}: succeeded"
    assert {h.end_version for h in r.hosts} == {STABLE}
    assert all(h.ok for h in r.hosts)
    others = [h for name, h in rows.items() if name != canary]
    assert all(h.step is None and h.rollout is None for h in others)

    good = report(good_rollout())
    assert {h.end_version for h in good.hosts} == {h.now_version for h in good.hosts} == {GOOD}
    assert [s.outcome for s in good.steps] == ["passed"] * 4


def test_html_is_self_contained_with_the_chart() -> None:
    r = report(bad_canary())
    html = render(r, "html")
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 1
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    assert "<link" not in html
    # The panels, their thresholds, the judged windows and both decision markers.
    for title in (
        "Error rate — rollback over 1.00%",
        "Latency (p95) — rollback over 1,000 ms at p95",
        "Canary ÷ baseline — errors roll back over 1.3x, slow requests over 1.5x",
        "CPU, highest host — rollback over 80 % for 3 samples in a row",
        "Memory, highest host — rollback over 90 % for 3 samples in a row",
        "Disk (fullest mount), highest host — rollback over 90 % for 3 samples in a row",
    ):
        assert f">{title}" in html, title
    for entry in r.timeline:
        if entry.marked:
            assert f"#{entry.number} +" in html and entry.label in html
    canary = r.judged[0]
    assert "canary, judged" in html and f"{canary.errors}/{canary.requests} = " in html
    assert "Rolled back to 1.0.0 automatically" in html
    # The canary-versus-baseline comparisons the decision judged, in words.
    fail = next(e for e in r.timeline if e.kind == "deployment.fail")
    compared = [d for d in fail.details if "versus the baseline: canary " in d]
    assert len(compared) == 2
    assert compared[0].startswith("error rate versus the baseline: canary ")
    assert compared[1].startswith("slow requests versus the baseline: canary ")
    assert compared[0] in html and "slow requests versus the baseline: canary " in html


def test_html_escapes_every_text() -> None:
    html = render(report(hostile(bad_canary())), "html")
    assert SCRIPT not in html
    assert "& <b>" not in html
    assert "&amp; &lt;b&gt;" in html
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5
    # The version strings too.
    assert "2.1.0&lt;script&gt;" in html


def _cells(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_markdown_has_the_same_content_and_escapes_it() -> None:
    r = report(hostile(bad_canary()))
    text = render(r, "md")
    assert SCRIPT not in text and "<b>" not in text
    assert "&lt;script&gt;" in text
    assert "\\[link\\]" in text and "\\*bold\\*" in text and "\\`code\\`" in text
    for table in re.split(r"\n\n", text):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        if rows:
            assert len({_cells(row) for row in rows}) == 1, table
    assert "## Timeline" in text and "## Hosts" in text and "## Plan" in text
    canary = r.judged[0]
    assert f"| {canary.number} | canary | " in text  # what the failing decision judged
    assert f"({canary.errors}/{canary.requests})" in text
    assert f"- **{canary.number}** +" in text and "rollback: error\\_rate" in text


def test_json_carries_everything_verbatim() -> None:
    data = json.loads(render(report(hostile(bad_canary())), "json"))
    assert data["format"] == 2
    assert data["summary"]["actor"] == HOSTILE
    assert data["summary"]["state"] == "rolled_back"
    assert len(data["windows"]) == len(
        [e for e in bad_canary().events if e.kind == "analysis.window"]
    )
    assert {j["cohort"] for j in data["judged"]} == {"canary", "baseline"}
    assert data["timeline"][-1]["kind"] == "operator.pause"
    assert data["timeline"][-1]["category"] == "failed"  # a refused request
    assert [h["host"] for h in data["hosts"]] == [f"host-{i:02d}" for i in range(10)]


def test_a_deployment_that_just_started_renders() -> None:
    run = in_progress(bad_canary(), START + 1)
    r = build_report(run.deployment, run.events, run.hosts, generated=run.now)
    assert r.summary.outcome.startswith("In progress (baking) at step 10% (1 of 4)")
    assert r.windows == [] and r.judged == []
    assert r.end == run.now
    html = render(r, "html")
    assert "no requests measured in this period" in html
    assert "No analysis window has been recorded." in render(r, "md")


def test_a_good_rollout_renders_every_step() -> None:
    r = report(good_rollout())
    text = render(r, "md")
    for name in ("10%", "25%", "50%", "100%"):
        assert f"{name} passed" in text
    assert r.verdicts is not None and r.verdicts.kind == "deployment.verified"
    assert {row.verdict for row in r.verdicts.rows if row.enforced} <= {"pass", "no_data"}


def test_evidence_not_of_its_kind_degrades_instead_of_failing() -> None:
    run = bad_canary()
    replace = msgspec.structs.replace
    odd = [
        replace(e, evidence={"cohorts": "nonsense"})
        if e.kind == "analysis.window"
        else replace(e, evidence={"rules": [1, None]})
        if e.kind == "deployment.fail"
        else e
        for e in run.events
    ]
    r = build_report(run.deployment, odd, run.hosts, generated=run.now)
    assert r.windows == [] and r.judged == []
    fail = next(e for e in r.timeline if e.kind == "deployment.fail")
    assert fail.message.startswith("rolling back to 1.0.0") and fail.details == []
    assert render(r, "html") and render(r, "md") and render(r, "json")


def test_windows_of_orders_by_end() -> None:
    recorded = [e for e in bad_canary().events if e.kind == "analysis.window"]
    assert len(recorded) > 2
    shuffled = logged(list(reversed(recorded)))
    assert [w.end for w in windows_of(shuffled)] == [e.time for e in recorded]


def test_thin_keeps_the_first_and_last_window() -> None:
    windows = [Window(start=i, end=i + 1, canary=Cohort(), baseline=Cohort()) for i in range(200)]
    kept = thin(windows, 60)
    assert len(kept) == 60
    assert kept[0] is windows[0] and kept[-1] is windows[-1]


@pytest.mark.parametrize(
    ("value", "ceiling", "ticks"),
    [
        (0.0115, 0.02, 5),
        (0.19, 0.2, 5),
        (0.25, 0.25, 6),
        (173.0, 200.0, 5),
        (0.0, 1.0, 6),
    ],
)
def test_scales_are_round(value: float, ceiling: float, ticks: int) -> None:
    assert nice_ceiling(value) == pytest.approx(ceiling)
    assert len(value_ticks(nice_ceiling(value))) == ticks


def test_time_steps_give_at_most_ten_ticks() -> None:
    assert time_step(2.0) == 1
    assert time_step(25.0) == 5
    assert time_step(3600.0) == 600
    assert time_step(86400.0 * 3) <= 86400.0 * 3 / 10 * 2


def test_md_escapes_markup_only() -> None:
    assert md("error_rate: 1/2 | <b>") == "error\\_rate: 1/2 \\| &lt;b&gt;"
    assert md("line\nbreak") == "line break"


# -- the verdict table --------------------------------------------------------------------


def test_the_verdict_table_is_the_deciding_judgement_failures_first() -> None:
    run = bad_canary()
    r = report(run)
    v = r.verdicts
    assert v is not None
    fail = next(e for e in r.timeline if e.kind == "deployment.fail")
    assert (v.number, v.kind, v.label, v.outcome) == (fail.number, fail.kind, fail.label, "fail")
    facts = next(e for e in run.events if e.kind == "deployment.fail").facts()
    assert isinstance(facts, RollbackStarted)
    # Every rule the engine judged of the canary has its row, the failure on top.
    assert sorted(row.rule for row in v.rows) == sorted(x.rule for x in rules_of(facts))
    rows = {row.rule: row for row in v.rows}
    assert v.rows[0].rule == "error_rate" and v.rows[0].verdict == "fail"
    assert [row.verdict for row in v.rows[1:]].count("fail") == 0
    judged = next(x for x in facts.rules if isinstance(x, ErrorRateResult))
    error = rows["error_rate"]
    assert error.canary_value == judged.numbers.estimate
    assert error.threshold_value == 0.01
    n = judged.numbers
    assert error.canary == f"{n.estimate:.2%} ({n.events}/{n.trials}), at least {n.lower:.2%}"
    assert error.threshold == "1.00% at 99.9% confidence"
    # The baseline's own result of the rule the engine consulted.
    shown = facts.baseline["error_rate"].rule
    assert isinstance(shown, ErrorRateResult)
    assert error.baseline_value == shown.numbers.estimate
    assert error.baseline.startswith(f"0% (0/{shown.numbers.trials:,})")
    assert error.baseline.endswith("; not the same breach")
    # Gauges: the highest host of each cohort over the judged window, from the windows.
    for gauge, limit in (("cpu", 80.0), ("memory", 90.0), ("disk", 90.0)):
        row = rows[gauge]
        assert row.verdict == "pass" and row.threshold_value == limit
        assert row.threshold == f"{limit:g} % for 3 samples in a row"
        inside = [w for w in r.windows if judged.window_start < w.end <= judged.window_end]
        canary_peak = max(w.canary.gauges[gauge].max for w in inside if gauge in w.canary.gauges)
        baseline_peak = max(
            w.baseline.gauges[gauge].max for w in inside if gauge in w.baseline.gauges
        )
        assert (row.canary_value, row.baseline_value) == (canary_peak, baseline_peak)
        assert row.canary.startswith(f"peak {canary_peak:.1f} %, mean ")
    # The canary-versus-baseline comparison: both cohorts' rates, the allowed ratio.
    compared = next(x for x in facts.rules if isinstance(x, LatencyComparisonResult))
    latency = rows["latency_vs_baseline"]
    assert latency.threshold_value == compared.numbers.allowed == 1.5
    assert latency.canary_value == compared.numbers.ratio
    assert latency.baseline.startswith(f"{compared.numbers.baseline_rate:.2%} ")
    errors = next(x for x in facts.rules if isinstance(x, ErrorComparisonResult))
    assert rows["error_vs_baseline"].threshold == (
        "at most 1.3x the baseline's or under 0.10% at 99% confidence"
    )
    assert rows["error_vs_baseline"].verdict == errors.verdict.value


def test_a_cpu_breach_tops_the_table_and_shows_on_its_chart() -> None:
    run = cpu_hot()
    r = report(run)
    assert r.summary.rollback_reason is not None
    assert r.summary.rollback_reason.startswith("cpu: ")
    v = r.verdicts
    assert v is not None and v.label == "rollback: cpu"
    cpu = v.rows[0]
    assert (cpu.rule, cpu.verdict, cpu.threshold_value) == ("cpu", "fail", 80.0)
    assert cpu.canary_value is not None and cpu.canary_value > 80.0
    canary_host = run.deployment.steps[0].orders[0].host
    assert cpu.canary == f"{canary_host} peaked at {cpu.canary_value:.1f} %"
    assert cpu.baseline_value is not None and cpu.baseline_value < 80.0
    assert cpu.baseline.startswith("0 of 9 hosts over; peak ")
    # The windows carry the canary's hot CPU and the baseline's normal one.
    peaks = [w.canary.gauges["cpu"].max for w in r.windows if "cpu" in w.canary.gauges]
    assert peaks and min(peaks) > 80.0
    base = [w.baseline.gauges["cpu"].max for w in r.windows if "cpu" in w.baseline.gauges]
    assert base and max(base) < 80.0
    html = render(r, "html")
    assert ">CPU, highest host — rollback over 80 % for 3 samples in a row</text>" in html
    # The canary's CPU points, with their values in their tips.
    for peak in peaks:
        assert "canary at " in html and f": {peak:.0f} %</title>" in html
    assert '<tr class="fail"><td><code>cpu</code></td>' in html


def test_markdown_and_json_carry_the_same_verdict_table() -> None:
    r = report(cpu_hot())
    v = r.verdicts
    assert v is not None
    text = render(r, "md")
    table = text.split("## Verdicts", 1)[1].split("## Canary versus baseline", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("| `")]
    assert [line.split(" | ")[0] for line in lines] == [f"| `{row.rule}`" for row in v.rows]
    for line, row in zip(lines, v.rows, strict=True):
        assert f"**{row.verdict.replace('_', ' ').upper()}**" in line
        assert md(row.threshold) in line and md(row.canary) in line
    data = json.loads(render(r, "json"))
    assert data["verdicts"]["number"] == v.number
    assert data["verdicts"]["rows"] == [msgspec.to_builtins(row) for row in v.rows]
    html = render(r, "html")
    assert html.index('id="verdicts"') < html.index('id="chart"')  # at the top
    for row in v.rows:
        assert f"<td><code>{row.rule}</code></td>" in html


def test_no_verdict_table_before_a_judgement() -> None:
    run = in_progress(bad_canary(), START + 1)
    r = build_report(run.deployment, run.events, run.hosts, generated=run.now)
    assert r.verdicts is None and r.compared == []
    assert "No rule has been judged yet." in render(r, "html")
    assert "No rule has been judged yet." in render(r, "md")


def test_the_comparison_is_charted_from_its_evidence() -> None:
    r = report(bad_canary())
    rules = {c.rule for c in r.compared}
    assert rules == {"error_vs_baseline", "latency_vs_baseline"}
    latency = next(c for c in r.compared if c.rule == "latency_vs_baseline")
    assert latency.ratio is not None and latency.allowed == 1.5
    html = render(r, "html")
    assert f"#{latency.number} latency_vs_baseline: canary " in html
    assert f"= {latency.ratio:.2f}x, at least {latency.lower:.2f}x, allowed 1.5x" in html
    assert r.thresholds.error_ratio == 1.3 and r.thresholds.latency_ratio == 1.5
    assert r.thresholds.comparison_enforced
    # Where the environment only reports the comparison, the chart does not say rollback.
    reported = msgspec.structs.replace(
        r, thresholds=msgspec.structs.replace(r.thresholds, comparison_enforced=False)
    )
    title = "Canary ÷ baseline — errors over 1.3x, slow requests over 1.5x (reported only)"
    assert f">{title}</text>" in render(reported, "html")


# -- nothing written on the chart overlaps -----------------------------------------------


def overlapping(boxes: list[Box]) -> list[tuple[Box, Box]]:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


def test_a_short_deployment_s_markers_do_not_overlap() -> None:
    r = report(short_rollback())
    assert r.summary.duration is not None and r.summary.duration < 60
    layout = chart_layout(r)
    marked = [e for e in r.timeline if e.marked]
    assert len(marked) == len(layout.markers) == 6
    # Five decisions within a second: a few pixels apart on the axis...
    xs = sorted(m.x for m in layout.markers)
    assert xs[4] - xs[0] < 4 * 2 * MARKER_R
    # ...and still no two markers (nor any text) on each other.
    assert overlapping(layout.boxes) == []
    for a in layout.markers:
        assert a.cx - MARKER_R >= LEFT and a.cx + MARKER_R <= LEFT + PLOT_W + MARKER_R
        for b in layout.markers:
            if a.number < b.number and a.cy == b.cy:
                assert abs(a.cx - b.cx) >= 2 * MARKER_R + 2
    # The ones pushed aside keep their time: a leader runs from the circle to it.
    pushed = [m for m in layout.markers if m.cx != m.x]
    assert pushed
    svg = "\n".join(layout.parts)
    for m in pushed:
        assert f'points="{m.cx:.1f},{m.cy + MARKER_R:.1f} {m.x:.1f},' in svg


@pytest.mark.parametrize("sample", [bad_canary, cpu_hot, good_rollout, short_rollback])
def test_no_text_on_the_chart_overlaps(sample: object) -> None:
    assert callable(sample)
    layout = chart_layout(report(sample()))
    assert overlapping(layout.boxes) == []
    assert {b.kind for b in layout.boxes} >= {"marker", "gutter", "title", "legend", "axis"}


def test_markers_at_one_instant_spread_within_the_plot() -> None:
    places = place_markers([(n, 500.0) for n in range(1, 31)])
    assert len(places) == 30
    for a in places:
        assert LEFT <= a.cx <= LEFT + PLOT_W
        for b in places:
            if a.number < b.number and a.cy == b.cy:
                assert abs(a.cx - b.cx) >= 21.0 - 1e-9
    # At the right edge they are pushed back left, in order.
    edge = place_markers([(n, LEFT + PLOT_W) for n in range(1, 11)])
    assert all(p.cx <= LEFT + PLOT_W for p in edge)
    rows: dict[float, list[float]] = {}
    for p in edge:
        rows.setdefault(p.cy, []).append(p.cx)
    assert all(xs == sorted(xs) for xs in rows.values())
    # More than the rows hold: evenly spread, still inside the plot.
    many = place_markers([(n, 300.0 + n) for n in range(200)])
    assert all(LEFT <= p.cx <= LEFT + PLOT_W for p in many)


def test_threshold_labels_take_the_gutter_from_the_ticks() -> None:
    ticks = [(100.0, "0%"), (60.0, "0.5%"), (20.0, "1%")]
    kept, placed = gutter_labels(ticks, [(63.0, "0.60%"), (58.0, "0.55%")])
    assert placed == [(58.0, "0.55%"), (70.0, "0.60%")]  # pushed apart
    assert kept == [(100.0, "0%"), (20.0, "1%")]  # the covered tick is left out


def test_the_verdict_table_escapes_what_the_evidence_says() -> None:
    run = bad_canary()
    replace = msgspec.structs.replace

    def poisoned(evidence: dict[str, object]) -> dict[str, object]:
        rules = [dict(r) for r in evidence["rules"]]  # type: ignore[attr-defined]
        rules[0]["message"] = HOSTILE
        return {**evidence, "rules": rules}

    events = [
        replace(e, evidence=poisoned(e.evidence)) if e.kind == "deployment.fail" else e
        for e in run.events
    ]
    r = build_report(run.deployment, events, run.hosts, generated=run.now)
    assert r.verdicts is not None and HOSTILE in {row.message for row in r.verdicts.rows}
    html = render(r, "html")
    assert SCRIPT not in html
    assert 'title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; | *bold*' in html
    assert SCRIPT not in render(r, "md")
    assert json.loads(render(r, "json"))["verdicts"]["rows"][0]["message"] == HOSTILE
