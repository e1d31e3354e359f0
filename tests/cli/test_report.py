"""The report's pure parts: what it extracts from the API's data, and the HTML,
Markdown and JSON it renders (escaping included)."""

from __future__ import annotations

import json
import re

import pytest

from coordinator.report import build_report, render
from coordinator.report.markdown import md, thin
from coordinator.report.model import Cohort, Report, Window, windows_of
from coordinator.report.svg import nice_ceiling, time_step, value_ticks
from tests.cli.samples import HOSTILE, SCRIPT, T0, rolled_back


def report(hostile: bool = False) -> Report:
    deployment, events, hosts = rolled_back(hostile=hostile)
    return build_report(deployment, events, hosts, generated=T0 + 60)


def test_summary_tells_the_outcome_with_its_reason() -> None:
    s = report().summary
    assert s.state == "rolled_back"
    assert s.state_words == "rolled back"
    assert s.outcome == (
        "Rolled back to 1.0.0 automatically after 6.2 s at step 10% (1 of 3): "
        "error_rate: 30/200 = 15.00%, at 99.0% confidence at least 9.50%, over 1.00%."
    )
    assert (s.step, s.step_number, s.steps_total) == ("10%", 1, 3)
    assert s.duration == pytest.approx(6.2)


def test_windows_thresholds_and_what_each_decision_judged() -> None:
    r = report()
    assert [(w.end, w.canary.errors, w.baseline.requests) for w in r.windows] == [
        (T0 + 2, 14, 300),
        (T0 + 4, 16, 300),
    ]
    assert r.thresholds.error_rate == 0.01
    assert r.thresholds.latency_ms == 1000.0
    assert r.thresholds.latency_quantile == 0.95
    canary, baseline = r.judged
    assert (canary.cohort, canary.verdict, canary.errors, canary.requests) == (
        "canary",
        "fail",
        30,
        200,
    )
    assert (canary.lower, canary.error_rate, canary.upper) == (0.095, 0.15, 0.23)
    assert canary.latency_ms == 160.0
    assert (baseline.cohort, baseline.requests, baseline.verdict) == ("baseline", 900, "pass")
    assert canary.number == baseline.number == 5  # the deployment.fail row


def test_timeline_numbers_every_event_but_the_windows_and_marks_decisions() -> None:
    r = report()
    assert [e.number for e in r.timeline] == list(range(1, 8))
    assert "analysis.window" not in {e.kind for e in r.timeline}
    marked = [(e.number, e.kind, e.label, e.category) for e in r.timeline if e.marked]
    assert marked == [
        (5, "deployment.fail", "rollback: error_rate", "rollback"),
        (7, "deployment.rollback_done", "rolled back", "done"),
    ]
    fail = r.timeline[4]
    assert [line.rule for line in fail.rules] == ["error_rate", "latency"]  # failures first
    assert "after 5.9 s of a 10 s bake" in fail.details
    assert any(d.startswith("baseline for error_rate: error_rate: 1/900") for d in fail.details)
    assert not any(d.startswith("reason: ") for d in fail.details)  # already the message
    assert r.timeline[0].actor == "alice"


def test_phases_and_hosts() -> None:
    r = report()
    assert [(s.phase, s.step) for s in r.spans] == [("baking", "10%"), ("rolling_back", "10%")]
    assert r.spans[0].end == r.spans[1].start == T0 + 6.0
    rows = {h.host: h for h in r.hosts}
    assert rows["web-1"].step == "10%"
    assert rows["web-1"].rollout == "deploy 2.1.0: succeeded (current -> releases/2.1.0)"
    assert rows["web-1"].rollback == "rollback 1.0.0: succeeded (current -> releases/1.0.0)"
    assert {h.end_version for h in r.hosts} == {"1.0.0"}
    assert all(h.ok for h in r.hosts)
    assert rows["web-2"].step is None and rows["web-2"].rollout is None
    assert rows["web-4"].online is False


def test_html_is_self_contained_with_the_chart() -> None:
    html = render(report(), "html")
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 1
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    assert "<link" not in html
    # The lines, the threshold, the judged window and both decision markers.
    assert html.count("<polyline") == 4  # canary and baseline, two panels
    assert "rollback over 1.00%" in html
    assert "rollback over 1,000 ms at p95: far above this scale" in html
    assert "#5 +0:06 rollback: error_rate" in html
    assert "#7 +0:06 rolled back" in html
    assert "canary, judged" in html and "30/200 = 15.00%, bounds 9.50% to 23.00% (fail)" in html
    assert "Rolled back to 1.0.0 automatically" in html


def test_html_escapes_every_text() -> None:
    html = render(report(hostile=True), "html")
    assert SCRIPT not in html
    assert "& <b>" not in html
    assert "&amp; &lt;b&gt;" in html
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5


def _cells(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_markdown_has_the_same_content_and_escapes_it() -> None:
    text = render(report(hostile=True), "md")
    assert SCRIPT not in text and "<b>" not in text
    assert "&lt;script&gt;" in text
    assert "\\[link\\]" in text and "\\*bold\\*" in text and "\\`code\\`" in text
    for table in re.split(r"\n\n", text):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        if rows:
            assert len({_cells(row) for row in rows}) == 1, table
    assert "## Timeline" in text and "## Hosts" in text and "## Plan" in text
    assert "| 5 | canary | " in text  # what the failing decision judged
    assert "15.00% (30/200)" in text and "9.50% to 23.00%" in text
    assert "- **5** +0:06 rollback: error\\_rate" in text


def test_json_carries_everything_verbatim() -> None:
    data = json.loads(render(report(hostile=True), "json"))
    assert data["format"] == 1
    assert data["summary"]["actor"] == HOSTILE
    assert data["summary"]["state"] == "rolled_back"
    assert len(data["windows"]) == 2
    assert {j["cohort"] for j in data["judged"]} == {"canary", "baseline"}
    assert data["timeline"][-1]["kind"] == "operator.pause"
    assert data["timeline"][-1]["category"] == "failed"  # a refused request
    assert [h["host"] for h in data["hosts"]] == ["web-1", "web-2", "web-3", "web-4"]


def test_a_deployment_that_just_started_renders() -> None:
    deployment, events, hosts = rolled_back()
    deployment.update(state="baking", finished=None, rollback_reason=None, summary="")
    r = build_report(deployment, events[:4], hosts, generated=T0 + 1)
    assert r.summary.outcome.startswith("In progress (baking) at step 10% (1 of 3)")
    assert r.windows == [] and r.judged == []
    assert r.end == T0 + 1
    html = render(r, "html")
    assert "no requests measured in this period" in html
    assert "No analysis window has been recorded." in render(r, "md")


def test_malformed_evidence_degrades_instead_of_failing() -> None:
    deployment, _, hosts = rolled_back()
    events = [
        {"seq": 1, "time": T0, "kind": "analysis.window", "evidence": {"cohorts": "nonsense"}},
        {"seq": 2, "time": T0 + 1, "kind": "deployment.hold", "evidence": {"rules": [1, None]}},
        {"seq": 3, "kind": "mystery", "message": None},
    ]
    r = build_report(deployment, events, hosts, generated=T0 + 2)
    assert len(r.windows) == 1 and r.windows[0].canary.requests == 0
    assert render(r, "html") and render(r, "md") and render(r, "json")


def test_windows_of_orders_by_end() -> None:
    events = [
        {"kind": "analysis.window", "time": 5.0, "evidence": {"start": 3.0, "end": 5.0}},
        {"kind": "analysis.window", "time": 3.0, "evidence": {"start": 1.0, "end": 3.0}},
    ]
    assert [w.end for w in windows_of(events)] == [3.0, 5.0]


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
