"""What a deployment report says, built from what the API returns: the deployment, its
stored events and the hosts. Pure: no IO, no clock (``generated`` is passed in), and
tolerant of fields an older coordinator did not record.

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
)

TERMINAL: Final = frozenset({"completed", "rolled_back", "failed", "refused"})
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


def windows_of(events: Sequence[Mapping[str, Any]]) -> list[Window]:
    """The ``analysis.window`` events as windows, in time order."""
    out: list[Window] = []
    for event in events:
        if event.get("kind") != WINDOW_KIND:
            continue
        evidence = as_map(event.get("evidence"))
        cohorts = as_map(evidence.get("cohorts"))
        end = _float(evidence.get("end")) or _float(event.get("time"))
        if end is None:
            continue
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


def step_names(deployment: Mapping[str, Any]) -> list[str]:
    return [str(s.get("name", f"step {i}")) for i, s in enumerate(deployment.get("steps") or [])]


def timeline_of(deployment: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Entry]:
    """Every stored event but the analysis windows, numbered in order."""
    names = step_names(deployment)
    rows: list[Entry] = []
    ordered = sorted(
        (e for e in events if e.get("kind") != WINDOW_KIND),
        key=lambda e: (_float(e.get("time")) or 0.0, _int(e.get("seq"))),
    )
    for number, event in enumerate(ordered, start=1):
        kind = str(event.get("kind", ""))
        evidence = as_map(event.get("evidence"))
        label = marker_label(kind, evidence, event.get("actor"), names)
        rows.append(
            Entry(
                number=number,
                seq=_int(event.get("seq")),
                time=_float(event.get("time")) or 0.0,
                kind=kind,
                category=category_of(kind, evidence),
                message=str(event.get("message", "")),
                actor=event.get("actor"),
                host=event.get("host"),
                marked=label is not None,
                label=label or "",
                details=[
                    d
                    for d in details(kind, evidence, names)
                    if not (d.startswith("reason: ") and d[8:] in str(event.get("message", "")))
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


def judged_of(events: Sequence[Mapping[str, Any]], timeline: Sequence[Entry]) -> list[Judged]:
    """The rate rules every decision judged, per cohort (the baseline's only where the
    engine consulted it), once per window."""
    numbers = {entry.seq: entry.number for entry in timeline}
    out: list[Judged] = []
    seen: set[tuple[str, float | None, float | None]] = set()
    for event in events:
        evidence = as_map(event.get("evidence"))
        number = numbers.get(_int(event.get("seq")))
        when = _float(event.get("time"))
        if number is None or when is None or not str(event.get("kind")).startswith("deployment."):
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


def thresholds_of(events: Sequence[Mapping[str, Any]]) -> Thresholds:
    """The limits from the latest decision that judged the rates."""
    error_rate: float | None = None
    enforced = True
    latency_ms: float | None = None
    quantile: float | None = None
    confidence: float | None = None
    for event in events:
        for rule in as_list(as_map(event.get("evidence")).get("rules")):
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


def steps_of(deployment: Mapping[str, Any]) -> list[StepRow]:
    state = str(deployment.get("state", ""))
    current = _int(deployment.get("step"))
    rows: list[StepRow] = []
    for index, step in enumerate(deployment.get("steps") or []):
        if index < current or state in ("completed", "verifying"):
            outcome = "passed"
        elif index > current:
            outcome = "not reached"
        elif state in ("rolled_back", "rolling_back", "failed"):
            outcome = "rolled back here" if state != "failed" else "failed here"
        elif state == "refused":
            outcome = "refused"
        else:
            outcome = STATE_WORDS.get(state, state)
        rows.append(
            StepRow(
                index=index,
                name=str(step.get("name", f"step {index}")),
                percent=_float(step.get("percent")) or 0.0,
                hosts=[str(o.get("host")) for o in step.get("orders") or []],
                bake=_float(step.get("bake")) or 0.0,
                approval=bool(step.get("approval")),
                outcome=outcome,
            )
        )
    return rows


def spans_of(
    deployment: Mapping[str, Any], events: Sequence[Mapping[str, Any]], end: float
) -> list[Span]:
    """The phases the deployment went through, from its recorded transitions."""
    names = step_names(deployment)
    marks: list[tuple[float, str, str | None]] = []
    for event in events:
        evidence = as_map(event.get("evidence"))
        phase = evidence.get("to")
        when = _float(event.get("time"))
        if not str(event.get("kind", "")).startswith("deployment.") or not phase or when is None:
            continue
        step = evidence.get("step")
        name = names[step] if isinstance(step, int) and 0 <= step < len(names) else None
        marks.append((when, str(phase), None if phase in TERMINAL else name))
    marks.sort(key=lambda m: m[0])
    spans: list[Span] = []
    for index, (when, phase, step) in enumerate(marks):
        if phase in TERMINAL:
            continue
        until = marks[index + 1][0] if index + 1 < len(marks) else end
        spans.append(Span(start=when, end=max(when, until), phase=phase, step=step))
    return spans


def _command_words(command: Mapping[str, Any]) -> str:
    action = command.get("action", "command")
    target = command.get("version") or command.get("slot") or ""
    detail = str(command.get("detail") or "").strip()
    words = f"{action} {target}".strip() + f": {command.get('state', '?')}"
    return f"{words} ({detail})" if detail else words


def hosts_of(deployment: Mapping[str, Any], hosts: Sequence[Mapping[str, Any]]) -> list[HostRow]:
    names = step_names(deployment)
    state = str(deployment.get("state", ""))
    if state == "completed":
        expected: str | None = deployment.get("version")
    elif state == "rolled_back":
        expected = deployment.get("rollback_version") or deployment.get("from_version")
    else:
        expected = None
    seen = {str(h.get("host")): h for h in hosts}
    commands = sorted(
        (c for c in (deployment.get("commands") or {}).values() if isinstance(c, Mapping)),
        key=lambda c: (_float(c.get("issued")) or 0.0, str(c.get("id", ""))),
    )
    rows: list[HostRow] = []
    targets = deployment.get("targets") or {}
    for name in sorted(targets):
        target = targets[name] or {}
        mine = [c for c in commands if c.get("host") == name]
        rollout = [c for c in mine if c.get("purpose") == "rollout"]
        rollback = [c for c in mine if c.get("purpose") == "rollback"]
        end_version = target.get("from_version")
        for command in mine:
            if command.get("state") == "succeeded" and command.get("version"):
                end_version = command.get("version")
        step_index = _int(rollout[-1].get("step")) if rollout else None
        view = seen.get(name)
        now_version = view.get("version") if view is not None else None
        online = bool(view.get("online")) if view is not None else None
        rows.append(
            HostRow(
                host=name,
                labels={str(k): str(v) for k, v in (target.get("labels") or {}).items()},
                from_version=target.get("from_version"),
                step=(
                    names[step_index]
                    if step_index is not None and 0 <= step_index < len(names)
                    else None
                ),
                rollout=_command_words(rollout[-1]) if rollout else None,
                rollback=_command_words(rollback[-1]) if rollback else None,
                end_version=end_version,
                now_version=now_version,
                online=online,
                expected=expected,
                ok=None if expected is None or view is None else now_version == expected,
            )
        )
    return rows


def _outcome(deployment: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    state = str(deployment.get("state", ""))
    version = deployment.get("version")
    created = _float(deployment.get("created")) or 0.0
    finished = _float(deployment.get("finished"))
    took = f" after {duration(finished - created)}" if finished is not None else ""
    steps = step_names(deployment)
    step = _int(deployment.get("step"))
    where = f" at step {steps[step]} ({step + 1} of {len(steps)})" if 0 <= step < len(steps) else ""
    targets = len(deployment.get("targets") or {})
    if state == "completed":
        return f"Completed{took}: every host ({targets}) runs {version}."
    if state == "rolled_back":
        stable = deployment.get("rollback_version") or deployment.get("from_version")
        starter = next(
            (
                e
                for e in reversed(events)
                if e.get("kind") in ("deployment.fail", "deployment.rollback")
            ),
            None,
        )
        who = (
            f"by {starter.get('actor')}"
            if starter is not None and starter.get("actor")
            else "automatically"
        )
        reason = deployment.get("rollback_reason") or "no reason recorded"
        return f"Rolled back to {stable} {who}{took}{where}: {reason}."
    if state == "failed":
        return f"Failed{took}{where}: {deployment.get('summary') or 'see the timeline'}."
    if state == "refused":
        return f"Refused before any host changed: {deployment.get('summary') or '-'}."
    return (
        f"In progress ({STATE_WORDS.get(state, state)}){where}: {deployment.get('summary') or '-'}."
    )


def build_report(
    deployment: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    hosts: Sequence[Mapping[str, Any]],
    *,
    generated: float,
) -> Report:
    """The report of one deployment from the API's deployment view, its stored events
    and the hosts list; ``generated`` is the time to print as the report's date."""
    state = str(deployment.get("state") or deployment.get("phase") or "")
    created = _float(deployment.get("created")) or 0.0
    finished = _float(deployment.get("finished"))
    names = step_names(deployment)
    step = _int(deployment.get("step"))
    windows = windows_of(events)
    # A finished deployment's axis ends when it finished; a running one's now.
    end = finished if finished is not None else generated
    end = max([end, created, *(w.end for w in windows[-1:])])
    summary = Summary(
        id=str(deployment.get("id", "")),
        version=str(deployment.get("version", "")),
        from_version=deployment.get("from_version"),
        environment=str(deployment.get("environment", "")),
        strategy=str(deployment.get("strategy", "")),
        state=state,
        state_words=STATE_WORDS.get(state, state),
        actor=str(deployment.get("actor", "")),
        reason=str(deployment.get("reason") or ""),
        created=created,
        finished=finished,
        duration=(finished - created) if finished is not None else None,
        step=names[step] if 0 <= step < len(names) else None,
        step_number=step + 1,
        steps_total=len(names),
        rollback_version=deployment.get("rollback_version"),
        rollback_reason=deployment.get("rollback_reason"),
        outcome=_outcome({**deployment, "state": state}, events),
        last_decision=str(deployment.get("summary") or ""),
    )
    timeline = timeline_of(deployment, events)
    return Report(
        format=REPORT_FORMAT,
        generated=generated,
        summary=summary,
        thresholds=thresholds_of(events),
        steps=steps_of({**deployment, "state": state}),
        start=created,
        end=end,
        spans=spans_of(deployment, events, end),
        windows=windows,
        judged=judged_of(events, timeline),
        timeline=timeline,
        hosts=hosts_of({**deployment, "state": state}, hosts),
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
