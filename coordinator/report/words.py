"""Events and evidence in words: shared by the report, ``rollguard deploy --wait``,
``rollguard status`` and the demo's narration, so a decision reads the same everywhere.

Pure functions of the API's JSON (plain dicts); unknown shapes degrade to less detail,
never to an exception.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from shared.phases import Phase
from shared.views import EventView, HoldReason

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


def transition_to(event: EventView) -> str | None:
    """The phase a transition event moved the deployment to; None for other events."""
    if not event.kind.startswith("deployment."):
        return None
    to = event.evidence.get("to")
    return str(to) if to else None


def as_map(value: Any) -> Mapping[str, Any]:
    """A JSON object, or an empty one for anything else: evidence is free-form."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def cohort_words(name: str, cohort: Mapping[str, Any] | None) -> str:
    """``canary (1 host): 0.05% errors of 4,210 requests, p95 38 ms``."""
    if not cohort or not cohort.get("hosts"):
        return f"{name}: no hosts"
    hosts = _plural(int(cohort.get("hosts") or 0), "host")
    requests = int(cohort.get("requests") or 0)
    if requests == 0:
        return f"{name} ({hosts}): no requests yet"
    text = f"{name} ({hosts}): {rate(cohort.get('error_rate'))} errors of {requests:,} requests"
    if cohort.get("p95_ms") is not None:
        text += f", p95 {millis(cohort.get('p95_ms'))}"
    return text


def window_words(evidence: Mapping[str, Any]) -> str:
    cohorts = as_map(evidence.get("cohorts"))
    parts = [cohort_words("canary", as_map(cohorts.get("canary")))]
    if as_map(cohorts.get("baseline")).get("hosts"):
        parts.append(cohort_words("baseline", cohorts.get("baseline")))
    return " · ".join(parts)


# -- events -------------------------------------------------------------------------


def category_of(kind: str, evidence: Mapping[str, Any]) -> str:
    if kind.startswith("command."):
        return "command"
    if kind.startswith("operator."):
        return "operator" if evidence.get("accepted", True) else "failed"
    if kind.startswith("alert."):
        return "hold"
    return _CATEGORIES.get(kind, "info")


def _step_name(evidence: Mapping[str, Any], names: Sequence[str]) -> str:
    step = evidence.get("step")
    if isinstance(step, int) and 0 <= step < len(names):
        return names[step]
    return "the step"


def marker_label(
    kind: str, evidence: Mapping[str, Any], actor: str | None, names: Sequence[str]
) -> str | None:
    """A short label for a decision drawn on the chart; None for what is not drawn."""
    step = _step_name(evidence, names)
    who = actor or "an operator"
    trigger = kind.removeprefix("deployment.")
    if not kind.startswith("deployment."):
        return None
    labels: dict[str, str] = {
        "bake_passed": f"{step} passed",
        "promote": f"{step} promoted by {who}",
        "approve": f"approved by {who}",
        "verified": "completed",
        "extend": f"{step} extended",
        "hold": "held"
        + (
            f": {HOLD_WORDS.get(str(evidence.get('reason')), evidence.get('reason'))}"
            if evidence.get("reason") in HOLD_WORDS
            else ""
        ),
        "cleared": "hold cleared",
        "pause": f"paused by {who}",
        "resume": f"resumed by {who}",
        "approval_required": "awaits approval",
        "fail": "rollback: " + ", ".join(_failed_rules(evidence)),
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


def _failed_rules(evidence: Mapping[str, Any]) -> list[str]:
    failed = evidence.get("failed")
    if isinstance(failed, list) and failed:
        return [str(rule) for rule in failed]
    rule = evidence.get("rule")
    return [str(rule)] if rule else ["a rule failed"]


def rule_lines(evidence: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rules a decision judged, failures first."""
    lines: list[dict[str, Any]] = []
    for rule in as_list(evidence.get("rules")):
        if not isinstance(rule, Mapping):
            continue
        lines.append(
            {
                "rule": str(rule.get("rule", "?")),
                "verdict": str(rule.get("verdict", "?")),
                "cohort": str(rule.get("cohort", "")),
                "enforced": bool(rule.get("enforced", True)),
                "message": str(rule.get("message", "")),
                "numbers": dict(as_map(rule.get("numbers"))),
            }
        )
    lines.sort(key=lambda line: VERDICT_ORDER.get(line["verdict"], 9))
    return lines


def _judged_window(evidence: Mapping[str, Any]) -> str | None:
    for rule in as_list(evidence.get("rules")):
        if isinstance(rule, Mapping):
            start, end = rule.get("window_start"), rule.get("window_end")
            if isinstance(start, int | float) and isinstance(end, int | float):
                return f"judged window {clock(start)} to {clock(end)} ({duration(end - start)})"
    return None


def _baseline_words(rule: str, shown: Mapping[str, Any]) -> str:
    same = bool(shown.get("same_breach"))
    verdict = (
        "the same breach: fleet-wide, not this version"
        if same
        else "not the same breach, so the new version is blamed"
    )
    inner = shown.get("rule")
    if isinstance(inner, Mapping):
        return f"baseline for {rule}: {inner.get('message', '')} — {verdict}"
    showing = shown.get("showing") or []
    reporting = shown.get("reporting", 0)
    return (
        f"baseline for {rule}: {len(showing)} of {reporting} reporting baseline hosts show it"
        + (f" ({', '.join(map(str, showing))})" if showing else "")
        + f" — {verdict}"
    )


def _command_line(command: Mapping[str, Any]) -> str:
    text = f"{command.get('host', '?')}: {command.get('action', 'command')} {command.get('state')}"
    reported = command.get("reported_version")
    if reported:
        text += f", reports {reported}"
    expected = command.get("expected_version")
    if expected and reported and expected != reported:
        text += f" (expected {expected})"
    return text


def details(kind: str, evidence: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The evidence of one event in words and numbers, rule lines aside."""
    out: list[str] = []
    if kind.startswith("operator."):
        if evidence.get("accepted") is False:
            out.append("refused")
        elif evidence.get("changed") is False:
            out.append("accepted; nothing to change")
        else:
            out.append("accepted")
        if evidence.get("reason"):
            out.append(f"reason: {evidence['reason']}")
        out.extend(f"reason refused: {r}" for r in as_list(evidence.get("reasons")))
        return out
    before, after = evidence.get("from"), evidence.get("to")
    if before and after:
        out.append(
            f"step {_step_name(evidence, names)}: "
            f"{phase_words(str(before))} → {phase_words(str(after))}"
        )
    elapsed, length = evidence.get("bake_elapsed"), evidence.get("bake_length")
    trigger = kind.removeprefix("deployment.")
    if (
        trigger in ("fail", "bake_passed", "extend", "hold", "promote", "pause", "rollback")
        and isinstance(elapsed, int | float)
        and isinstance(length, int | float)
        and length > 0
    ):
        out.append(f"after {duration(elapsed)} of a {duration(length)} bake")
    window = _judged_window(evidence)
    if window:
        out.append(window)
    reason = evidence.get("reason")
    if trigger == "hold" and reason in HOLD_WORDS:
        out.append(f"hold reason: {HOLD_WORDS[str(reason)]}")
    elif isinstance(reason, str) and reason:
        out.append(f"reason: {reason}")
    if isinstance(evidence.get("extension"), int | float):
        out.append(f"bake extended by {duration(float(evidence['extension']))}")
    hosts = evidence.get("hosts")
    if isinstance(hosts, list) and hosts:
        out.append("hosts: " + ", ".join(map(str, hosts)))
    for rule, shown in as_map(evidence.get("baseline")).items():
        if isinstance(shown, Mapping):
            out.append(_baseline_words(str(rule), shown))
    for host, missing in as_map(evidence.get("missing")).items():
        why = missing.get("why") if isinstance(missing, Mapping) else missing
        out.append(f"no data from {host}: {why}")
    for command in as_list(evidence.get("commands")):
        if isinstance(command, Mapping):
            out.append(_command_line(command))
    not_on_stable = evidence.get("not_on_stable")
    if isinstance(not_on_stable, Mapping) and not_on_stable:
        out.append(
            "not on the stable version: "
            + ", ".join(f"{h} ({v})" for h, v in sorted(not_on_stable.items()))
        )
    unhealthy = evidence.get("unhealthy")
    if isinstance(unhealthy, list) and unhealthy:
        out.append("unhealthy: " + ", ".join(map(str, unhealthy)))
    out.extend(f"reason: {r}" for r in as_list(evidence.get("reasons")))
    steps = evidence.get("steps")
    if kind == "deployment.created" and isinstance(steps, list) and steps:
        out.append("plan: " + " → ".join(_plan_step(s) for s in steps if isinstance(s, Mapping)))
    for check in as_list(evidence.get("preflight")):
        if isinstance(check, Mapping):
            out.append(f"preflight {check.get('name')}: {'ok' if check.get('ok') else 'failed'}")
    pending = evidence.get("pending")
    if isinstance(pending, list) and pending:
        out.append("preflight not reported: " + ", ".join(map(str, pending)))
    tail = evidence.get("output_tail")
    if isinstance(tail, str) and tail.strip():
        out.append("output: " + tail.strip()[-300:])
    return out


def _plan_step(step: Mapping[str, Any]) -> str:
    hosts = step.get("hosts") or []
    bake = step.get("bake")
    text = f"{step.get('name')} ({_plural(len(hosts), 'host')}"
    if isinstance(bake, int | float) and bake > 0:
        text += f", bake {duration(bake)}"
    if step.get("approval"):
        text += ", needs approval"
    return text + ")"
