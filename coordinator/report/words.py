"""Events and evidence in words: shared by the report, ``rollguard deploy --wait``,
``rollguard status`` and the demo's narration, so a decision reads the same everywhere.

Pure functions of the API's views and the typed evidence of :mod:`shared.evidence`
(``EventView.facts()``): each kind of evidence says what it has, nothing is guessed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.evidence import (
    AnalysisWindow,
    BaselineShown,
    CohortNumbers,
    CommandState,
    ComparisonNumbers,
    Created,
    ErrorComparisonResult,
    Evidence,
    Extended,
    GateRefusal,
    Held,
    HoldReason,
    Judged,
    Judgement,
    LatencyComparisonResult,
    OperatorAnswer,
    Paused,
    PlannedStep,
    PreflightFailed,
    PreflightPassed,
    PreflightReport,
    Promoted,
    Resumed,
    RollbackEnded,
    RollbackStarted,
    RuleResult,
    StepAdvanced,
    StepConfirmed,
    Transition,
)
from shared.phases import Phase

STATE_WORDS: Final[Mapping[Phase, str]] = {
    Phase.PREFLIGHT: "running preflight checks",
    Phase.DEPLOYING: "deploying",
    Phase.BAKING: "baking",
    Phase.HELD: "held",
    Phase.PAUSED: "paused",
    Phase.AWAITING_APPROVAL: "awaiting approval",
    Phase.PROMOTING: "promoting",
    Phase.VERIFYING: "verifying",
    Phase.ROLLING_BACK: "rolling back",
    Phase.COMPLETED: "completed",
    Phase.ROLLED_BACK: "rolled back",
    Phase.FAILED: "failed",
    Phase.REFUSED: "refused",
}
HOLD_WORDS: Final[Mapping[HoldReason | str, str]] = {
    "inconclusive": "inconclusive",
    "missing_data": "missing data",
    "fleet_incident": "fleet-wide incident",
    "unreachable": "too many hosts unreachable",
}
VERDICT_ORDER: Final = {"fail": 0, "inconclusive": 1, "no_data": 2, "pass": 3}

_CATEGORIES: Final = {
    "deployment.created": "start",
    "deployment.started": "start",
    "deployment.preflight_passed": "start",
    "deployment.acked": "step",
    "deployment.next_step": "step",
    "deployment.steps_done": "step",
    "deployment.bake_passed": "promote",
    "deployment.promote": "promote",
    "deployment.approve": "promote",
    "deployment.verified": "promote",
    "deployment.extend": "hold",
    "deployment.hold": "hold",
    "deployment.pause": "hold",
    "deployment.approval_required": "hold",
    "deployment.missing": "hold",
    "deployment.fleet": "hold",
    "deployment.cleared": "resume",
    "deployment.resume": "resume",
    "deployment.resumed_after_restart": "resume",
    "deployment.fail": "rollback",
    "deployment.rollback": "rollback",
    "deployment.rollback_done": "done",
    "deployment.rollback_failed": "failed",
    "deployment.preflight_failed": "failed",
    "deployment.refused": "failed",
}


def phase_words(phase: Phase | str) -> str:
    """A phase in words; a name no phase has (a newer coordinator's) as it is."""
    try:
        return STATE_WORDS[Phase(phase)]
    except ValueError:
        return str(phase)


# -- what kinds of evidence carry --------------------------------------------------------


class RuleLine(msgspec.Struct, frozen=True, kw_only=True):
    """One rule a decision judged, in the report's words and numbers."""

    rule: str
    verdict: str
    cohort: str
    enforced: bool
    message: str
    numbers: dict[str, Any] = {}


def transition_of(facts: Evidence) -> tuple[Phase, int | None] | None:
    """The phase a transition moved the deployment to, and the step it was at; None for
    evidence of anything else."""
    if isinstance(facts, Transition):
        return facts.to, facts.step
    if isinstance(facts, Held) and facts.to is not None:
        return facts.to, facts.step
    return None


def rules_of(facts: Evidence) -> list[RuleResult]:
    """The rules a decision judged, in the engine's order; none for other evidence."""
    return facts.rules if isinstance(facts, Judged | Judgement) else []


def baseline_of(facts: Evidence) -> dict[str, BaselineShown]:
    """What the baseline showed of each failed rule, where the engine consulted it."""
    return facts.baseline if isinstance(facts, Judged | Judgement) else {}


def _reason_of(facts: Evidence) -> str | None:
    if isinstance(
        facts, Created | Promoted | Paused | Resumed | RollbackStarted | RollbackEnded | Held
    ):
        return facts.reason
    return None


def _hosts_of(facts: Evidence) -> list[str]:
    if isinstance(facts, StepConfirmed | StepAdvanced | RollbackStarted):
        return facts.hosts
    return []


def _commands_of(facts: Evidence) -> list[CommandState]:
    if isinstance(facts, RollbackStarted | RollbackEnded):
        return facts.commands or []
    return []


# -- numbers ------------------------------------------------------------------------


def clock(t: float) -> str:
    """UTC wall-clock time of day."""
    return time.strftime("%H:%M:%S", time.gmtime(t))


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def offset(t: float, start: float) -> str:
    """``+m:ss`` (or ``+h:mm:ss``) since the deployment started."""
    total = max(0, round(t - start))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"+{hours}:{minutes:02d}:{secs:02d}" if hours else f"+{minutes}:{secs:02d}"


def rate(value: float | None) -> str:
    if value is None:
        return "-"
    pct = value * 100
    if pct < 0.0005:
        return "0%"
    if pct < 0.1:
        return f"{pct:.3f}%"
    return f"{pct:.2f}%"


def millis(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"


# The canary-versus-baseline comparisons (coordinator/engine/compare.py), by rule.
COMPARISON_WORDS: Final[Mapping[str, str]] = {
    "error_vs_baseline": "error rate versus the baseline",
    "latency_vs_baseline": "slow requests versus the baseline",
}


def comparison_words(rule: str, numbers: ComparisonNumbers) -> str:
    """``canary 0.41% vs baseline 0.20% of 72,118 requests; at 99% confidence at least
    1.6x worse; over the allowed 1.3x`` (latency: of the requests slower than the
    baseline's p95)."""
    what = ""
    if numbers.slower_than_ms is not None:
        what = f" slower than the baseline's {millis(numbers.slower_than_ms)}"
    text = (
        f"canary {rate(numbers.canary_rate)} vs baseline {rate(numbers.baseline_rate)}{what} "
        f"of {numbers.canary_trials:,} requests"
    )
    confidence = f"{numbers.confidence * 100:g}%"
    if numbers.lower > numbers.allowed and numbers.floor_shown:
        return (
            f"{text}; at {confidence} confidence at least {numbers.lower:.1f}x worse; "
            f"over the allowed {numbers.allowed:g}x"
        )
    if numbers.lower > numbers.allowed:
        return (
            f"{text}; at {confidence} confidence at least {numbers.lower:.1f}x worse, but "
            f"not shown over the floor of {rate(numbers.floor)}"
        )
    return f"{text}; not shown worse than the allowed {numbers.allowed:g}x"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def cohort_words(name: str, cohort: CohortNumbers | None) -> str:
    """``canary (1 host): 0.05% errors of 4,210 requests, p95 38 ms``."""
    if cohort is None or not cohort.hosts:
        return f"{name}: no hosts"
    hosts = _plural(cohort.hosts, "host")
    if cohort.requests == 0:
        return f"{name} ({hosts}): no requests yet"
    text = f"{name} ({hosts}): {rate(cohort.error_rate)} errors of {cohort.requests:,} requests"
    if cohort.p95_ms is not None:
        text += f", p95 {millis(cohort.p95_ms)}"
    return text


def window_words(window: AnalysisWindow) -> str:
    canary, baseline = window.cohorts.get("canary"), window.cohorts.get("baseline")
    parts = [cohort_words("canary", canary)]
    if baseline is not None and baseline.hosts:
        parts.append(cohort_words("baseline", baseline))
    return " · ".join(parts)


# -- events -------------------------------------------------------------------------


def category_of(kind: str, facts: Evidence) -> str:
    if kind.startswith("command."):
        return "command"
    if kind.startswith("operator."):
        accepted = facts.accepted if isinstance(facts, OperatorAnswer) else True
        return "operator" if accepted else "failed"
    if kind.startswith("alert."):
        return "hold"
    return _CATEGORIES.get(kind, "info")


def _step_name(facts: Evidence, names: Sequence[str]) -> str:
    moved = transition_of(facts)
    step = moved[1] if moved is not None else None
    if step is not None and 0 <= step < len(names):
        return names[step]
    return "the step"


def marker_label(kind: str, facts: Evidence, actor: str | None, names: Sequence[str]) -> str | None:
    """A short label for a decision drawn on the chart; None for what is not drawn."""
    step = _step_name(facts, names)
    who = actor or "an operator"
    trigger = kind.removeprefix("deployment.")
    if not kind.startswith("deployment."):
        return None
    hold = facts.reason if isinstance(facts, Held) else None
    labels: dict[str, str] = {
        "bake_passed": f"{step} passed",
        "promote": f"{step} promoted by {who}",
        "approve": f"approved by {who}",
        "verified": "completed",
        "extend": f"{step} extended",
        "hold": "held" + (f": {HOLD_WORDS[hold]}" if hold is not None else ""),
        "cleared": "hold cleared",
        "pause": f"paused by {who}",
        "resume": f"resumed by {who}",
        "approval_required": "awaits approval",
        "fail": "rollback: " + ", ".join(_failed_rules(facts)),
        "rollback": f"rollback by {who}",
        "rollback_done": "rolled back",
        "rollback_failed": "rollback failed",
        "preflight_failed": "refused",
        "refused": "refused",
        "missing": "missing data",
        "fleet": "fleet-wide breach",
        "resumed_after_restart": "coordinator restarted",
    }
    return labels.get(trigger)


def _failed_rules(facts: Evidence) -> list[str]:
    if isinstance(facts, Judged | Judgement) and facts.failed:
        return list(facts.failed)
    if isinstance(facts, RollbackStarted) and facts.rule:
        return [facts.rule]
    return ["a rule failed"]


def rule_lines(facts: Evidence) -> list[RuleLine]:
    """The rules a decision judged, failures first."""
    lines = [
        RuleLine(
            rule=result.rule,
            verdict=result.verdict.value,
            cohort=result.cohort,
            enforced=result.enforced,
            message=result.message,
            numbers=msgspec.to_builtins(result.numbers),
        )
        for result in rules_of(facts)
    ]
    lines.sort(key=lambda line: VERDICT_ORDER.get(line.verdict, 9))
    return lines


def _judged_window(facts: Evidence) -> str | None:
    for result in rules_of(facts):
        start, end = result.window_start, result.window_end
        return f"judged window {clock(start)} to {clock(end)} ({duration(end - start)})"
    return None


def _baseline_words(rule: str, shown: BaselineShown) -> str:
    verdict = (
        "the same breach: fleet-wide, not this version"
        if shown.same_breach
        else "not the same breach, so the new version is blamed"
    )
    if not isinstance(shown.rule, str):
        return f"baseline for {rule}: {shown.rule.message} — {verdict}"
    showing = shown.showing or []
    return (
        f"baseline for {rule}: {len(showing)} of {shown.reporting or 0} reporting baseline "
        "hosts show it" + (f" ({', '.join(showing)})" if showing else "") + f" — {verdict}"
    )


def _command_line(command: CommandState) -> str:
    text = f"{command.host}: {command.action} {command.state}"
    reported, expected = command.reported_version, command.expected_version
    if reported:
        text += f", reports {reported}"
    if expected and reported and expected != reported:
        text += f" (expected {expected})"
    return text


_BAKE_TRIGGERS: Final = frozenset(
    {"fail", "bake_passed", "extend", "hold", "promote", "pause", "rollback"}
)


def _operator_details(facts: Evidence) -> list[str]:
    if not isinstance(facts, OperatorAnswer):
        return []
    out = [
        "refused"
        if not facts.accepted
        else "accepted; nothing to change"
        if not facts.changed
        else "accepted"
    ]
    if facts.reason:
        out.append(f"reason: {facts.reason}")
    out.extend(f"reason refused: {r}" for r in facts.reasons)
    return out


def details(kind: str, facts: Evidence, names: Sequence[str]) -> list[str]:
    """The evidence of one event in words and numbers, rule lines aside."""
    if kind.startswith("operator."):
        return _operator_details(facts)
    out: list[str] = []
    trigger = kind.removeprefix("deployment.")
    before = facts.from_ if isinstance(facts, Transition | Held) else None
    moved = transition_of(facts)
    if before is not None and moved is not None:
        out.append(
            f"step {_step_name(facts, names)}: {STATE_WORDS[before]} → {STATE_WORDS[moved[0]]}"
        )
    if isinstance(facts, Transition | Held) and trigger in _BAKE_TRIGGERS:
        elapsed, length = facts.bake_elapsed, facts.bake_length
        if elapsed is not None and length is not None and length > 0:
            out.append(f"after {duration(elapsed)} of a {duration(length)} bake")
    window = _judged_window(facts)
    if window:
        out.append(window)
    reason = _reason_of(facts)
    if trigger == "hold" and reason is not None and reason in HOLD_WORDS:
        out.append(f"hold reason: {HOLD_WORDS[reason]}")
    elif reason:
        out.append(f"reason: {reason}")
    if isinstance(facts, Extended):
        out.append(f"bake extended by {duration(facts.extension)}")
    hosts = _hosts_of(facts)
    if hosts:
        out.append("hosts: " + ", ".join(hosts))
    for rule, shown in baseline_of(facts).items():
        out.append(_baseline_words(rule, shown))
    for result in rules_of(facts):
        if isinstance(result, ErrorComparisonResult | LatencyComparisonResult):
            words = comparison_words(result.rule, result.numbers)
            out.append(f"{COMPARISON_WORDS[result.rule]}: {words}")
    if isinstance(facts, Judged | Judgement):
        out.extend(f"no data from {host}: {absent.why}" for host, absent in facts.missing.items())
    out.extend(_command_line(command) for command in _commands_of(facts))
    if isinstance(facts, RollbackEnded):
        if facts.not_on_stable:
            out.append(
                "not on the stable version: "
                + ", ".join(
                    f"{h} ({r.version or 'no version'})"
                    for h, r in sorted(facts.not_on_stable.items())
                )
            )
        if facts.unhealthy:
            out.append("unhealthy: " + ", ".join(facts.unhealthy))
    if isinstance(facts, PreflightFailed | GateRefusal):
        out.extend(f"reason: {r}" for r in facts.reasons or [])
    if kind == "deployment.created" and isinstance(facts, Created) and facts.steps:
        out.append("plan: " + " → ".join(_plan_step(s) for s in facts.steps))
    if isinstance(facts, PreflightPassed):
        out.extend(f"preflight {c.name}: {'ok' if c.ok else 'failed'}" for c in facts.preflight)
    if isinstance(facts, PreflightFailed) and facts.pending:
        out.append("preflight not reported: " + ", ".join(facts.pending))
    tail = facts.output_tail if isinstance(facts, PreflightFailed | PreflightReport) else None
    if tail and tail.strip():
        out.append("output: " + tail.strip()[-300:])
    return out


def _plan_step(step: PlannedStep) -> str:
    text = f"{step.name} ({_plural(len(step.hosts), 'host')}"
    if step.bake > 0:
        text += f", bake {duration(step.bake)}"
    if step.approval:
        text += ", needs approval"
    return text + ")"
