"""What a deployment report says, built from what the API returns: the deployment, its
stored events and the hosts, as the typed views of :mod:`shared.views`. Pure: no IO, no
clock (``generated`` is passed in).

Every renderer (HTML, Markdown, JSON) reads the same :class:`Report`, so the three forms
carry the same content.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import msgspec

from coordinator.report.verdicts import (
    Compared,
    Pooled,
    VerdictRow,
    Verdicts,
    compared_of,
    verdicts_of,
)
from coordinator.report.words import (
    STATE_WORDS,
    RuleLine,
    baseline_of,
    category_of,
    clock,
    details,
    duration,
    marker_label,
    rule_lines,
    rules_of,
    stamp,
    transition_of,
)
from shared.evidence import (
    GAUGE_RESULTS,
    AnalysisWindow,
    CohortNumbers,
    ErrorComparisonResult,
    ErrorRateResult,
    Evidence,
    GaugeResult,
    GaugeSpread,
    LatencyComparisonResult,
    LatencyResult,
    NoEvidence,
)
from shared.phases import TERMINAL, Phase
from shared.views import CommandView, DeploymentView, EventView, HostView

WINDOW_KIND: Final = "analysis.window"


class Cohort(msgspec.Struct, frozen=True, kw_only=True):
    hosts: int = 0
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    # Gauge name (cpu, memory, disk) -> mean and highest percent over the cohort's hosts.
    gauges: dict[str, GaugeSpread] = {}


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One ``analysis.window``: each cohort's pooled numbers over ``start``..``end``."""

    start: float
    end: float
    canary: Cohort
    baseline: Cohort


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the timeline: a stored event in words, with its evidence."""

    number: int
    seq: int
    time: float
    kind: str
    # start, step, promote, hold, resume, rollback, done, failed, operator, command, info
    category: str
    message: str
    actor: str | None = None
    host: str | None = None
    # Drawn on the chart (decisions), with this short label; commands and requests are not.
    marked: bool = False
    label: str = ""
    details: list[str] = []
    rules: list[RuleLine] = []


class CohortJudged(msgspec.Struct, frozen=True, kw_only=True):
    """What one decision judged of one cohort: the rates over its whole window, with
    the confidence bounds the verdict used (entry ``number`` of the timeline)."""

    number: int
    time: float
    cohort: str
    window_start: float
    window_end: float
    verdict: str
    errors: int
    requests: int
    error_rate: float | None
    lower: float | None
    upper: float | None
    latency_ms: float | None
    latency_verdict: str | None


class StepRow(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    name: str
    percent: float
    hosts: list[str]
    bake: float
    approval: bool
    outcome: str


class HostRow(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    labels: dict[str, str]
    from_version: str | None
    # The step that sent this host the new version; None if it never got it.
    step: str | None
    rollout: str | None
    rollback: str | None
    # What the deployment's commands left on the host.
    end_version: str | None
    # What the host reports now (at report time), and whether it is online.
    now_version: str | None
    online: bool | None
    expected: str | None
    ok: bool | None


class Span(msgspec.Struct, frozen=True, kw_only=True):
    """A stretch of time in one phase at one step (``step`` None once finished)."""

    start: float
    end: float
    phase: str
    step: str | None


class Thresholds(msgspec.Struct, frozen=True, kw_only=True):
    """The limits the engine judged by, as its decisions recorded them."""

    error_rate: float | None = None
    error_rate_enforced: bool = True
    latency_ms: float | None = None
    latency_quantile: float | None = None
    confidence: float | None = None
    # Gauge name -> the percent a host must stay under, for ``gauge_consecutive`` samples.
    gauges: dict[str, float] = {}
    gauge_consecutive: int | None = None
    # Canary versus baseline: the ratios of the baseline's rate the canary may reach.
    error_ratio: float | None = None
    error_floor: float | None = None
    latency_ratio: float | None = None
    # False where the environment only reports the comparison.
    comparison_enforced: bool = True


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: str
    from_version: str | None
    environment: str
    strategy: str
    state: str
    state_words: str
    actor: str
    reason: str
    created: float
    finished: float | None
    duration: float | None
    step: str | None
    step_number: int
    steps_total: int
    rollback_version: str | None
    rollback_reason: str | None
    outcome: str
    last_decision: str


def fact_rows(
    s: Summary,
    text: Callable[[object], str],
    strong: Callable[[str], str],
    code: Callable[[str], str],
) -> list[tuple[str, str]]:
    """The report's header facts, marked up by the caller's escaping (HTML, Markdown)."""
    rows: list[tuple[str, str]] = [
        ("deployment", code(s.id)),
        ("version", f"{text(s.from_version or '-')} → {strong(text(s.version))}"),
        ("environment", f"{text(s.environment)}, {text(s.strategy)}"),
        (
            "started",
            f"{text(stamp(s.created))} by {strong(text(s.actor))}"
            + (f" — “{text(s.reason)}”" if s.reason else ""),
        ),
    ]
    if s.finished is not None and s.duration is not None:
        rows.append(("finished", f"{text(stamp(s.finished))}, after {text(duration(s.duration))}"))
    if s.step is not None:
        rows.append(("step reached", f"{text(s.step)} ({s.step_number} of {s.steps_total})"))
    if s.rollback_reason:
        rows.append(("rollback reason", text(s.rollback_reason)))
    if s.last_decision:
        rows.append(("last decision", text(s.last_decision)))
    return rows


class Report(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    generated: float
    summary: Summary
    thresholds: Thresholds
    steps: list[StepRow]
    # The chart's time axis: from the start to the end (or the last thing seen).
    start: float
    end: float
    spans: list[Span]
    windows: list[Window]
    judged: list[CohortJudged]
    timeline: list[Entry]
    hosts: list[HostRow]
    # The verdict table at the top; None until a rule has been judged.
    verdicts: Verdicts | None = None
    compared: list[Compared] = []


# 2: the verdict table, gauges in the windows, the canary-versus-baseline comparisons.
REPORT_FORMAT: Final = 2


class Logged(NamedTuple):
    """A stored event and its evidence, decoded once by the event's kind."""

    event: EventView
    facts: Evidence


def logged(events: Sequence[EventView]) -> list[Logged]:
    """Each event with its typed evidence. Evidence that is not of its kind's type (a
    coordinator of another version) is shown as none: the event still has its row."""
    out: list[Logged] = []
    for event in events:
        try:
            facts = event.facts()
        except msgspec.ValidationError:
            facts = NoEvidence()
        out.append(Logged(event, facts))
    return out


def _cohort(numbers: CohortNumbers | None) -> Cohort:
    if numbers is None:
        return Cohort()
    return Cohort(
        hosts=numbers.hosts,
        requests=numbers.requests,
        errors=numbers.errors,
        error_rate=numbers.error_rate,
        p50_ms=numbers.p50_ms,
        p95_ms=numbers.p95_ms,
        p99_ms=numbers.p99_ms,
        gauges=dict(numbers.gauges),
    )


def windows_of(events: Sequence[Logged]) -> list[Window]:
    """The ``analysis.window`` events as windows, in time order."""
    out = [
        Window(
            start=facts.start,
            end=facts.end,
            canary=_cohort(facts.cohorts.get("canary")),
            baseline=_cohort(facts.cohorts.get("baseline")),
        )
        for _, facts in events
        if isinstance(facts, AnalysisWindow)
    ]
    out.sort(key=lambda w: w.end)
    return out


def step_names(deployment: DeploymentView) -> list[str]:
    return [s.name for s in deployment.steps]


def timeline_of(deployment: DeploymentView, events: Sequence[Logged]) -> list[Entry]:
    """Every stored event but the analysis windows, numbered in order."""
    names = step_names(deployment)
    rows: list[Entry] = []
    ordered = sorted(
        (e for e in events if e.event.kind != WINDOW_KIND),
        key=lambda e: (e.event.time, e.event.seq),
    )
    for number, (event, facts) in enumerate(ordered, start=1):
        kind = event.kind
        label = marker_label(kind, facts, event.actor, names)
        rows.append(
            Entry(
                number=number,
                seq=event.seq,
                time=event.time,
                kind=kind,
                category=category_of(kind, facts),
                message=event.message,
                actor=event.actor,
                host=event.host,
                marked=label is not None,
                label=label or "",
                details=[
                    d
                    for d in details(kind, facts, names)
                    if not (d.startswith("reason: ") and d[8:] in event.message)
                ],
                rules=rule_lines(facts),
            )
        )
    return rows


def _judged(
    number: int, time: float, cohort: str, rates: ErrorRateResult, latency: LatencyResult | None
) -> CohortJudged:
    numbers = rates.numbers
    counted = numbers.trials > 0
    return CohortJudged(
        number=number,
        time=time,
        cohort=cohort,
        window_start=rates.window_start or time,
        window_end=rates.window_end or time,
        verdict=rates.verdict.value,
        errors=numbers.events,
        requests=numbers.trials,
        error_rate=numbers.estimate if counted else None,
        lower=numbers.lower if counted else None,
        upper=numbers.upper if counted else None,
        latency_ms=latency.numbers.quantile_ms if latency is not None else None,
        latency_verdict=latency.verdict.value if latency is not None else None,
    )


def judged_of(events: Sequence[Logged], timeline: Sequence[Entry]) -> list[CohortJudged]:
    """The rate rules every decision judged, per cohort (the baseline's only where the
    engine consulted it), once per window."""
    numbers = {entry.seq: entry.number for entry in timeline}
    out: list[CohortJudged] = []
    seen: set[tuple[str, float, float]] = set()
    for event, facts in events:
        number = numbers.get(event.seq)
        if number is None or not event.kind.startswith("deployment."):
            continue
        rates = {r.cohort: r for r in rules_of(facts) if isinstance(r, ErrorRateResult)}
        latencies = {r.cohort: r for r in rules_of(facts) if isinstance(r, LatencyResult)}
        for cohort, result in rates.items():
            key = (cohort, result.window_start, result.window_end)
            if key in seen:
                continue
            seen.add(key)
            out.append(_judged(number, event.time, cohort, result, latencies.get(cohort)))
        shown = baseline_of(facts).get("error_rate")
        if shown is not None and isinstance(shown.rule, ErrorRateResult):
            out.append(_judged(number, event.time, "baseline", shown.rule, None))
    return out


def thresholds_of(events: Sequence[Logged]) -> Thresholds:
    """The limits from the latest decision that judged each rule."""
    error_rate: float | None = None
    enforced = True
    latency_ms: float | None = None
    quantile: float | None = None
    confidence: float | None = None
    gauges: dict[str, float] = {}
    consecutive: int | None = None
    error_ratio: float | None = None
    error_floor: float | None = None
    latency_ratio: float | None = None
    comparison_enforced = True
    for _, facts in events:
        for rule in rules_of(facts):
            if isinstance(rule, ErrorRateResult):
                error_rate = rule.numbers.threshold
                enforced = rule.enforced
                confidence = rule.numbers.confidence or confidence
            elif isinstance(rule, LatencyResult):
                latency_ms = rule.numbers.latency_ms
                quantile = rule.numbers.quantile
            elif isinstance(rule, GaugeResult):
                gauges[rule.rule] = rule.numbers.limit
                consecutive = rule.numbers.consecutive
            elif isinstance(rule, ErrorComparisonResult):
                error_ratio = rule.numbers.allowed
                error_floor = rule.numbers.floor
                comparison_enforced = rule.enforced
            elif isinstance(rule, LatencyComparisonResult):
                latency_ratio = rule.numbers.allowed
    return Thresholds(
        error_rate=error_rate,
        error_rate_enforced=enforced,
        latency_ms=latency_ms,
        latency_quantile=quantile,
        confidence=confidence,
        gauges=gauges,
        gauge_consecutive=consecutive,
        error_ratio=error_ratio,
        error_floor=error_floor,
        latency_ratio=latency_ratio,
        comparison_enforced=comparison_enforced,
    )


def pooled(windows: Sequence[Window], cohort: str, start: float, end: float) -> Pooled | None:
    """One cohort's windows ending within ``start``..``end`` pooled: requests and errors
    summed, each gauge's highest and its samples' mean (the quantiles are not pooled)."""
    inside = [w for w in windows if start < w.end <= end + 1e-6]
    cohorts = [w.canary if cohort == "canary" else w.baseline for w in inside]
    if not cohorts:
        return None
    requests = sum(c.requests for c in cohorts)
    errors = sum(c.errors for c in cohorts)
    gauges: dict[str, GaugeSpread] = {}
    for name in GAUGE_RESULTS:
        spreads = [c.gauges[name] for c in cohorts if name in c.gauges]
        samples = sum(g.samples for g in spreads)
        if samples:
            gauges[name] = GaugeSpread(
                hosts=max(g.hosts for g in spreads),
                samples=samples,
                mean=sum(g.mean * g.samples for g in spreads) / samples,
                max=max(g.max for g in spreads),
            )
    return Pooled(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        gauges=gauges,
    )


def steps_of(deployment: DeploymentView) -> list[StepRow]:
    phase = deployment.phase
    current = deployment.step
    rows: list[StepRow] = []
    for index, step in enumerate(deployment.steps):
        if index < current or phase in (Phase.COMPLETED, Phase.VERIFYING):
            outcome = "passed"
        elif index > current:
            outcome = "not reached"
        elif phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK):
            outcome = "rolled back here"
        elif phase is Phase.FAILED:
            outcome = "failed here"
        elif phase is Phase.REFUSED:
            outcome = "refused"
        else:
            outcome = STATE_WORDS[phase]
        rows.append(
            StepRow(
                index=index,
                name=step.name,
                percent=step.percent,
                hosts=[o.host for o in step.orders],
                bake=step.bake,
                approval=step.approval,
                outcome=outcome,
            )
        )
    return rows


def spans_of(deployment: DeploymentView, events: Sequence[Logged], end: float) -> list[Span]:
    """The phases the deployment went through, from its recorded transitions."""
    names = step_names(deployment)
    marks: list[tuple[float, Phase, str | None]] = []
    for event, facts in events:
        moved = transition_of(facts)
        if moved is None or not event.kind.startswith("deployment."):
            continue
        phase, step = moved
        name = names[step] if step is not None and 0 <= step < len(names) else None
        marks.append((event.time, phase, None if phase in TERMINAL else name))
    marks.sort(key=lambda m: m[0])
    spans: list[Span] = []
    for index, (when, phase, step_name) in enumerate(marks):
        if phase in TERMINAL:
            continue
        until = marks[index + 1][0] if index + 1 < len(marks) else end
        spans.append(Span(start=when, end=max(when, until), phase=phase.value, step=step_name))
    return spans


def _command_words(command: CommandView) -> str:
    target = command.version or command.slot or ""
    detail = command.detail.strip()
    words = f"{command.action} {target}".strip() + f": {command.state}"
    return f"{words} ({detail})" if detail else words


def hosts_of(deployment: DeploymentView, hosts: Sequence[HostView]) -> list[HostRow]:
    names = step_names(deployment)
    phase = deployment.phase
    expected: str | None = None
    if phase is Phase.COMPLETED:
        expected = deployment.version
    elif phase is Phase.ROLLED_BACK:
        expected = deployment.stable_version
    seen = {h.host: h for h in hosts}
    commands = sorted(deployment.commands.values(), key=lambda c: (c.issued, c.id))
    rows: list[HostRow] = []
    for name in sorted(deployment.targets):
        target = deployment.targets[name]
        mine = [c for c in commands if c.host == name]
        rollout = [c for c in mine if c.purpose == "rollout"]
        rollback = [c for c in mine if c.purpose == "rollback"]
        end_version = target.from_version
        for command in mine:
            if command.state == "succeeded" and command.version:
                end_version = command.version
        step_index = rollout[-1].step if rollout else None
        view = seen.get(name)
        now_version = view.version if view is not None else None
        rows.append(
            HostRow(
                host=name,
                labels=dict(target.labels),
                from_version=target.from_version,
                step=(
                    names[step_index]
                    if step_index is not None and 0 <= step_index < len(names)
                    else None
                ),
                rollout=_command_words(rollout[-1]) if rollout else None,
                rollback=_command_words(rollback[-1]) if rollback else None,
                end_version=end_version,
                now_version=now_version,
                online=view.online if view is not None else None,
                expected=expected,
                ok=None if expected is None or view is None else now_version == expected,
            )
        )
    return rows


def _outcome(deployment: DeploymentView, events: Sequence[EventView]) -> str:
    d = deployment
    took = f" after {duration(d.finished - d.created)}" if d.finished is not None else ""
    steps = step_names(d)
    step = d.step
    where = f" at step {steps[step]} ({step + 1} of {len(steps)})" if 0 <= step < len(steps) else ""
    if d.phase is Phase.COMPLETED:
        return f"Completed{took}: every host ({len(d.targets)}) runs {d.version}."
    if d.phase is Phase.ROLLED_BACK:
        starter = next(
            (e for e in reversed(events) if e.kind in ("deployment.fail", "deployment.rollback")),
            None,
        )
        who = f"by {starter.actor}" if starter is not None and starter.actor else "automatically"
        reason = d.rollback_reason or "no reason recorded"
        return f"Rolled back to {d.stable_version} {who}{took}{where}: {reason}."
    if d.phase is Phase.FAILED:
        return f"Failed{took}{where}: {d.summary or 'see the timeline'}."
    if d.phase is Phase.REFUSED:
        return f"Refused before any host changed: {d.summary or '-'}."
    return f"In progress ({STATE_WORDS[d.phase]}){where}: {d.summary or '-'}."


def build_report(
    deployment: DeploymentView,
    events: Sequence[EventView],
    hosts: Sequence[HostView],
    *,
    generated: float,
) -> Report:
    """The report of one deployment from the API's deployment view, its stored events
    and the hosts list; ``generated`` is the time to print as the report's date."""
    d = deployment
    names = step_names(d)
    stored = logged(events)
    windows = windows_of(stored)
    # A finished deployment's axis ends when it finished; a running one's now.
    end = d.finished if d.finished is not None else generated
    end = max([end, d.created, *(w.end for w in windows[-1:])])
    summary = Summary(
        id=d.id,
        version=d.version,
        from_version=d.from_version,
        environment=d.environment,
        strategy=d.strategy,
        state=d.phase.value,
        state_words=STATE_WORDS[d.phase],
        actor=d.actor,
        reason=d.reason,
        created=d.created,
        finished=d.finished,
        duration=(d.finished - d.created) if d.finished is not None else None,
        step=names[d.step] if 0 <= d.step < len(names) else None,
        step_number=d.step + 1,
        steps_total=len(names),
        rollback_version=d.rollback_version,
        rollback_reason=d.rollback_reason,
        outcome=_outcome(d, events),
        last_decision=d.summary,
    )
    timeline = timeline_of(d, stored)
    return Report(
        format=REPORT_FORMAT,
        generated=generated,
        summary=summary,
        thresholds=thresholds_of(stored),
        steps=steps_of(d),
        start=d.created,
        end=end,
        spans=spans_of(d, stored, end),
        windows=windows,
        judged=judged_of(stored, timeline),
        timeline=timeline,
        hosts=hosts_of(d, hosts),
        verdicts=verdicts_of(
            stored,
            {entry.seq: (entry.number, entry.label) for entry in timeline},
            lambda cohort, start, end: pooled(windows, cohort, start, end),
        ),
        compared=compared_of(stored, {entry.seq: entry.number for entry in timeline}),
    )


def report_json(report: Report) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(report)
    return data


__all__ = [
    "Cohort",
    "CohortJudged",
    "Compared",
    "Entry",
    "HostRow",
    "Report",
    "RuleLine",
    "Span",
    "StepRow",
    "Summary",
    "Thresholds",
    "VerdictRow",
    "Verdicts",
    "Window",
    "build_report",
    "clock",
    "report_json",
]
