"""What a deployment report says, built from what the API returns: the deployment, its
stored events and the hosts, as the typed views of :mod:`shared.views`. Pure: no IO, no
clock (``generated`` is passed in).

Every renderer (HTML, Markdown, JSON) reads the same :class:`Report`, so the three forms
carry the same content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from coordinator.report.words import (
    STATE_WORDS,
    as_list,
    as_map,
    category_of,
    clock,
    details,
    duration,
    marker_label,
    rule_lines,
    stamp,
    transition_to,
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


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One ``analysis.window``: each cohort's pooled numbers over ``start``..``end``."""

    start: float
    end: float
    canary: Cohort
    baseline: Cohort


class RuleLine(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    verdict: str
    cohort: str
    enforced: bool
    message: str
    numbers: dict[str, Any] = {}


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


class Judged(msgspec.Struct, frozen=True, kw_only=True):
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
    judged: list[Judged]
    timeline: list[Entry]
    hosts: list[HostRow]


REPORT_FORMAT: Final = 1


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _cohort(data: Any) -> Cohort:
    if not isinstance(data, Mapping):
        return Cohort()
    return Cohort(
        hosts=_int(data.get("hosts")),
        requests=_int(data.get("requests")),
        errors=_int(data.get("errors")),
        error_rate=_float(data.get("error_rate")),
        p50_ms=_float(data.get("p50_ms")),
        p95_ms=_float(data.get("p95_ms")),
        p99_ms=_float(data.get("p99_ms")),
    )


def windows_of(events: Sequence[EventView]) -> list[Window]:
    """The ``analysis.window`` events as windows, in time order."""
    out: list[Window] = []
    for event in events:
        if event.kind != WINDOW_KIND:
            continue
        evidence = event.evidence
        cohorts = as_map(evidence.get("cohorts"))
        end = _float(evidence.get("end")) or event.time
        start = _float(evidence.get("start")) or end
        out.append(
            Window(
                start=start,
                end=end,
                canary=_cohort(cohorts.get("canary")),
                baseline=_cohort(cohorts.get("baseline")),
            )
        )
    out.sort(key=lambda w: w.end)
    return out


def step_names(deployment: DeploymentView) -> list[str]:
    return [s.name for s in deployment.steps]


def timeline_of(deployment: DeploymentView, events: Sequence[EventView]) -> list[Entry]:
    """Every stored event but the analysis windows, numbered in order."""
    names = step_names(deployment)
    rows: list[Entry] = []
    ordered = sorted((e for e in events if e.kind != WINDOW_KIND), key=lambda e: (e.time, e.seq))
    for number, event in enumerate(ordered, start=1):
        kind = event.kind
        evidence = event.evidence
        label = marker_label(kind, evidence, event.actor, names)
        rows.append(
            Entry(
                number=number,
                seq=event.seq,
                time=event.time,
                kind=kind,
                category=category_of(kind, evidence),
                message=event.message,
                actor=event.actor,
                host=event.host,
                marked=label is not None,
                label=label or "",
                details=[
                    d
                    for d in details(kind, evidence, names)
                    if not (d.startswith("reason: ") and d[8:] in event.message)
                ],
                rules=[RuleLine(**line) for line in rule_lines(evidence)],
            )
        )
    return rows


def _judged(
    number: int, time: float, cohort: str, rates: Mapping[str, Any], latency: Any
) -> Judged:
    numbers = as_map(rates.get("numbers"))
    lat_numbers = as_map(as_map(latency).get("numbers"))
    start = _float(rates.get("window_start")) or time
    return Judged(
        number=number,
        time=time,
        cohort=cohort,
        window_start=start,
        window_end=_float(rates.get("window_end")) or time,
        verdict=str(rates.get("verdict", "")),
        errors=_int(numbers.get("events")),
        requests=_int(numbers.get("trials")),
        error_rate=_float(numbers.get("estimate")) if _int(numbers.get("trials")) else None,
        lower=_float(numbers.get("lower")) if _int(numbers.get("trials")) else None,
        upper=_float(numbers.get("upper")) if _int(numbers.get("trials")) else None,
        latency_ms=_float(lat_numbers.get("quantile_ms")),
        latency_verdict=str(latency.get("verdict")) if isinstance(latency, Mapping) else None,
    )


def judged_of(events: Sequence[EventView], timeline: Sequence[Entry]) -> list[Judged]:
    """The rate rules every decision judged, per cohort (the baseline's only where the
    engine consulted it), once per window."""
    numbers = {entry.seq: entry.number for entry in timeline}
    out: list[Judged] = []
    seen: set[tuple[str, float | None, float | None]] = set()
    for event in events:
        evidence = event.evidence
        number = numbers.get(event.seq)
        when = event.time
        if number is None or not event.kind.startswith("deployment."):
            continue
        by_rule = {
            (r.get("cohort"), r.get("rule")): r
            for r in as_list(evidence.get("rules"))
            if isinstance(r, Mapping)
        }
        for (cohort, rule), result in by_rule.items():
            if rule != "error_rate":
                continue
            key = (
                str(cohort),
                _float(result.get("window_start")),
                _float(result.get("window_end")),
            )
            if key in seen:
                continue
            seen.add(key)
            out.append(_judged(number, when, str(cohort), result, by_rule.get((cohort, "latency"))))
        shown = as_map(evidence.get("baseline")).get("error_rate")
        if isinstance(shown, Mapping) and isinstance(shown.get("rule"), Mapping):
            out.append(_judged(number, when, "baseline", shown["rule"], None))
    return out


def thresholds_of(events: Sequence[EventView]) -> Thresholds:
    """The limits from the latest decision that judged the rates."""
    error_rate: float | None = None
    enforced = True
    latency_ms: float | None = None
    quantile: float | None = None
    confidence: float | None = None
    for event in events:
        for rule in as_list(event.evidence.get("rules")):
            if not isinstance(rule, Mapping):
                continue
            numbers = as_map(rule.get("numbers"))
            if rule.get("rule") == "error_rate" and _float(numbers.get("threshold")) is not None:
                error_rate = _float(numbers.get("threshold"))
                enforced = bool(rule.get("enforced", True))
                confidence = _float(numbers.get("confidence")) or confidence
            elif rule.get("rule") == "latency" and _float(numbers.get("latency_ms")) is not None:
                latency_ms = _float(numbers.get("latency_ms"))
                quantile = _float(numbers.get("quantile"))
    return Thresholds(
        error_rate=error_rate,
        error_rate_enforced=enforced,
        latency_ms=latency_ms,
        latency_quantile=quantile,
        confidence=confidence,
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


_TERMINAL_NAMES: Final = frozenset(p.value for p in TERMINAL)


def spans_of(deployment: DeploymentView, events: Sequence[EventView], end: float) -> list[Span]:
    """The phases the deployment went through, from its recorded transitions."""
    names = step_names(deployment)
    marks: list[tuple[float, str, str | None]] = []
    for event in events:
        phase = transition_to(event)
        if phase is None:
            continue
        step = event.evidence.get("step")
        name = names[step] if isinstance(step, int) and 0 <= step < len(names) else None
        marks.append((event.time, phase, None if phase in _TERMINAL_NAMES else name))
    marks.sort(key=lambda m: m[0])
    spans: list[Span] = []
    for index, (when, phase, step) in enumerate(marks):
        if phase in _TERMINAL_NAMES:
            continue
        until = marks[index + 1][0] if index + 1 < len(marks) else end
        spans.append(Span(start=when, end=max(when, until), phase=phase, step=step))
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
    windows = windows_of(events)
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
    timeline = timeline_of(d, events)
    return Report(
        format=REPORT_FORMAT,
        generated=generated,
        summary=summary,
        thresholds=thresholds_of(events),
        steps=steps_of(d),
        start=d.created,
        end=end,
        spans=spans_of(d, events, end),
        windows=windows,
        judged=judged_of(events, timeline),
        timeline=timeline,
        hosts=hosts_of(d, hosts),
    )


def report_json(report: Report) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(report)
    return data


__all__ = [
    "Cohort",
    "Entry",
    "HostRow",
    "Judged",
    "Report",
    "RuleLine",
    "Span",
    "StepRow",
    "Summary",
    "Thresholds",
    "Window",
    "build_report",
    "clock",
    "report_json",
]
