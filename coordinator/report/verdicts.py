"""The report's verdict table: every rule of the judgement that decided, with the
canary's number, the baseline's over the same window, the threshold and the verdict;
and the canary-versus-baseline comparisons each decision judged.

Pure functions of the typed evidence (:mod:`shared.evidence`); what the analysis
windows add up to over a judged window (the gauges' spread, the baseline's requests)
is asked of the caller through ``pool``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import msgspec

from coordinator.report.words import VERDICT_ORDER, baseline_of, duration, millis, rate, rules_of
from shared.evidence import (
    BaselineShown,
    ComparisonNumbers,
    CoverageResult,
    ErrorComparisonResult,
    ErrorRateResult,
    Evidence,
    GaugeResult,
    GaugeSpread,
    HealthResult,
    Judged,
    Judgement,
    LatencyComparisonResult,
    LatencyResult,
    MissingDataResult,
    RuleResult,
)
from shared.views import EventView


class Pooled(msgspec.Struct, frozen=True, kw_only=True):
    """One cohort's analysis windows over a judged window, added up: requests and
    errors, and each gauge's spread."""

    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    gauges: dict[str, GaugeSpread] = {}


# (cohort, start, end) -> what that cohort's windows ending in start..end add up to.
Pool = Callable[[str, float, float], Pooled | None]


class Compared(msgspec.Struct, frozen=True, kw_only=True):
    """What one decision's canary-versus-baseline rule compared (entry ``number``): the
    two cohorts' rates over the span both had data for, their ratio, the ratio the
    confidence sequence shows at least, and the ratio allowed."""

    number: int
    time: float
    rule: str
    verdict: str
    enforced: bool
    window_start: float
    span_end: float
    canary_events: int
    canary_trials: int
    baseline_events: int
    baseline_trials: int
    canary_rate: float
    baseline_rate: float
    ratio: float | None
    lower: float
    allowed: float
    # latency_vs_baseline: the baseline's quantile the requests are counted against.
    slower_than_ms: float | None = None


class VerdictRow(msgspec.Struct, frozen=True, kw_only=True):
    """One rule of the deciding judgement: the canary's number, the baseline's over
    the same window, the threshold and the verdict, in words and as numbers (rates as
    fractions, gauges in percent, latency in ms, comparisons as ratios)."""

    rule: str
    verdict: str
    enforced: bool
    canary: str
    baseline: str
    threshold: str
    message: str
    canary_value: float | None = None
    baseline_value: float | None = None
    threshold_value: float | None = None

    @classmethod
    def of(
        cls,
        rule: RuleResult,
        *,
        canary: str,
        baseline: str,
        threshold: str,
        canary_value: float | None = None,
        baseline_value: float | None = None,
        threshold_value: float | None = None,
    ) -> VerdictRow:
        """``rule``'s row: its name, verdict, enforcement and message, with the cells."""
        return cls(
            rule=rule.rule,
            verdict=rule.verdict.value,
            enforced=rule.enforced,
            canary=canary,
            baseline=baseline,
            threshold=threshold,
            message=rule.message,
            canary_value=canary_value,
            baseline_value=baseline_value,
            threshold_value=threshold_value,
        )


class Verdicts(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict table: every rule of the judgement that decided (the latest one
    recorded), failures first. ``number`` is its entry in the timeline."""

    number: int
    time: float
    kind: str
    label: str
    outcome: str | None
    rows: list[VerdictRow]


def compared_of(
    events: Sequence[tuple[EventView, Evidence]], numbers: Mapping[int, int]
) -> list[Compared]:
    """The canary-versus-baseline comparisons every decision judged, once per span
    (``numbers``: an event's seq -> its number in the timeline)."""
    out: list[Compared] = []
    seen: set[tuple[str, float, float]] = set()
    for event, facts in events:
        number = numbers.get(event.seq)
        if number is None or not event.kind.startswith("deployment."):
            continue
        for rule in rules_of(facts):
            if not isinstance(rule, ErrorComparisonResult | LatencyComparisonResult):
                continue
            n = rule.numbers
            key = (rule.rule, rule.window_start, n.span_end)
            if key in seen or n.canary_trials == 0 or n.baseline_trials == 0:
                continue
            seen.add(key)
            out.append(
                Compared(
                    number=number,
                    time=event.time,
                    rule=rule.rule,
                    verdict=rule.verdict.value,
                    enforced=rule.enforced,
                    window_start=rule.window_start,
                    span_end=n.span_end,
                    canary_events=n.canary_events,
                    canary_trials=n.canary_trials,
                    baseline_events=n.baseline_events,
                    baseline_trials=n.baseline_trials,
                    canary_rate=n.canary_rate,
                    baseline_rate=n.baseline_rate,
                    ratio=n.ratio,
                    lower=n.lower,
                    allowed=n.allowed,
                    slower_than_ms=n.slower_than_ms,
                )
            )
    return out


def _counts(events: int, trials: int) -> str:
    return f"{events:,}/{trials:,}"


def _shown_words(shown: BaselineShown | None) -> str:
    if shown is None:
        return ""
    return "; same breach: fleet-wide" if shown.same_breach else "; not the same breach"


def _rate_row(
    rule: ErrorRateResult | LatencyResult, facts: Evidence, pooled: Pooled | None
) -> VerdictRow:
    n = rule.numbers
    shown = baseline_of(facts).get(rule.rule)
    base = shown.rule if shown is not None and not isinstance(shown.rule, str) else None
    if isinstance(rule, LatencyResult):
        q = f"p{rule.numbers.quantile * 100:g}"
        canary = f"{q} {millis(rule.numbers.quantile_ms)}; {_counts(n.events, n.trials)} slower"
        baseline = "-"
        baseline_value: float | None = None
        compared = [r for r in rules_of(facts) if isinstance(r, LatencyComparisonResult)]
        if isinstance(base, LatencyResult):
            baseline_value = base.numbers.quantile_ms
            baseline = f"{q} {millis(baseline_value)}"
        elif compared and compared[0].numbers.slower_than_ms is not None:
            # The edge the comparison counted the canary against: the baseline's quantile.
            baseline_value = compared[0].numbers.slower_than_ms
            baseline = f"{q} {millis(baseline_value)} (compared span)"
        return VerdictRow.of(
            rule,
            canary=canary,
            baseline=baseline + _shown_words(shown),
            threshold=f"{q} under {millis(rule.numbers.latency_ms)}",
            canary_value=rule.numbers.quantile_ms,
            baseline_value=baseline_value,
            threshold_value=rule.numbers.latency_ms,
        )
    canary = f"{rate(n.estimate)} ({_counts(n.events, n.trials)})"
    if n.trials:
        canary += f", at least {rate(n.lower)}"
    if isinstance(base, ErrorRateResult) and base.numbers.trials:
        baseline_value = base.numbers.estimate
        baseline = f"{rate(baseline_value)} ({_counts(base.numbers.events, base.numbers.trials)})"
    elif pooled is not None and pooled.requests:
        baseline_value = pooled.error_rate
        baseline = f"{rate(baseline_value)} ({_counts(pooled.errors, pooled.requests)})"
    else:
        baseline_value, baseline = None, "-"
    return VerdictRow.of(
        rule,
        canary=canary,
        baseline=baseline + _shown_words(shown),
        threshold=f"{rate(n.threshold)} at {n.confidence:.1%} confidence",
        canary_value=n.estimate if n.trials else None,
        baseline_value=baseline_value,
        threshold_value=n.threshold,
    )


def _gauge_row(
    rule: GaugeResult, facts: Evidence, canary: Pooled | None, baseline: Pooled | None
) -> VerdictRow:
    n = rule.numbers
    name = rule.rule

    def spread(cohort: Pooled | None) -> tuple[str, float | None]:
        g = cohort.gauges.get(name) if cohort is not None else None
        if g is None:
            return "-", None
        return f"peak {g.max:.1f} %, mean {g.mean:.1f} %", g.max

    canary_text, canary_value = spread(canary)
    if n.peaks:
        worst = max(n.peaks, key=lambda h: n.peaks[h])
        canary_value = max(n.peaks.values())
        canary_text = f"{worst} peaked at {canary_value:.1f} %" + (
            f" (+{len(n.peaks) - 1} more hosts)" if len(n.peaks) > 1 else ""
        )
    elif canary_text == "-":
        # No analysis window ended inside the judged one (a deployment shorter than a
        # window): what the rule itself counted.
        canary_text = f"no host over ({n.reporting} reporting)" if n.reporting else "no samples"
    baseline_text, baseline_value = spread(baseline)
    shown = baseline_of(facts).get(name)
    if shown is not None and shown.showing is not None:
        baseline_text = f"{len(shown.showing)} of {shown.reporting or 0} hosts over" + (
            f"; {baseline_text}" if baseline_value is not None else ""
        )
    return VerdictRow.of(
        rule,
        canary=canary_text,
        baseline=baseline_text + _shown_words(shown),
        threshold=f"{n.limit:g} % for {n.consecutive} samples in a row",
        canary_value=canary_value,
        baseline_value=baseline_value,
        threshold_value=n.limit,
    )


def _comparison_row(rule: ErrorComparisonResult | LatencyComparisonResult) -> VerdictRow:
    n: ComparisonNumbers = rule.numbers
    what = "errors" if isinstance(rule, ErrorComparisonResult) else "slower"
    if isinstance(rule, LatencyComparisonResult) and n.slower_than_ms is not None:
        what = f"slower than {millis(n.slower_than_ms)}"
    if n.canary_trials == 0 or n.baseline_trials == 0:
        empty = "canary" if n.canary_trials == 0 else "baseline"
        return VerdictRow.of(
            rule,
            canary=f"no {empty} requests in the compared span"
            if empty == "canary"
            else f"{rate(n.canary_rate)} {what} ({_counts(n.canary_events, n.canary_trials)})",
            baseline=f"no {empty} requests in the compared span"
            if empty == "baseline"
            else f"{rate(n.baseline_rate)} ({_counts(n.baseline_events, n.baseline_trials)})",
            threshold=f"at most {n.allowed:g}x the baseline's at {n.confidence:.0%} confidence",
            threshold_value=n.allowed,
        )
    ratio = f", {n.ratio:.2f}x" if n.ratio is not None else ""
    shown = f", at least {n.lower:.2f}x" if n.lower > 0 else ""
    threshold = f"at most {n.allowed:g}x the baseline's"
    if n.floor is not None:
        threshold += f" or under {rate(n.floor)}"
    return VerdictRow.of(
        rule,
        canary=(
            f"{rate(n.canary_rate)} {what} ({_counts(n.canary_events, n.canary_trials)})"
            f"{ratio}{shown}"
        ),
        baseline=f"{rate(n.baseline_rate)} ({_counts(n.baseline_events, n.baseline_trials)})",
        threshold=f"{threshold} at {n.confidence:.0%} confidence",
        canary_value=n.ratio,
        baseline_value=1.0 if n.baseline_trials else None,
        threshold_value=n.allowed,
    )


def _other_row(
    rule: HealthResult | CoverageResult | MissingDataResult, facts: Evidence
) -> VerdictRow:
    shown = baseline_of(facts).get(rule.rule)
    baseline = "-"
    if shown is not None and shown.showing is not None:
        baseline = f"{len(shown.showing)} of {shown.reporting or 0} hosts show it"
    if isinstance(rule, HealthResult):
        failing = rule.numbers.failing
        canary = (
            "; ".join(f"{h}: {', '.join(c)}" for h, c in sorted(failing.items()))
            if failing
            else "no check failing"
        )
        threshold = f"{rule.numbers.consecutive} failures in a row"
    elif isinstance(rule, CoverageResult):
        lacking = rule.numbers.lacking
        canary = (
            "; ".join(f"{h} lacks {', '.join(c)}" for h, c in sorted(lacking.items()))
            if lacking
            else "every host reported"
        )
        threshold = "required: " + (", ".join(rule.numbers.required) or "none")
    else:
        missing = rule.numbers.missing
        canary = (
            "; ".join(f"{h}: {a.why}" for h, a in sorted(missing.items()))
            if missing
            else "every host reporting"
        )
        threshold = f"silent at most {duration(rule.numbers.grace)}"
    return VerdictRow.of(
        rule,
        canary=canary,
        baseline=baseline + _shown_words(shown),
        threshold=threshold,
    )


def verdict_row(rule: RuleResult, facts: Evidence, pool: Pool) -> VerdictRow:
    """One rule of a judgement as a row of the verdict table."""
    start, end = rule.window_start, rule.window_end
    if isinstance(rule, ErrorRateResult | LatencyResult):
        return _rate_row(rule, facts, pool("baseline", start, end))
    if isinstance(rule, GaugeResult):
        return _gauge_row(rule, facts, pool("canary", start, end), pool("baseline", start, end))
    if isinstance(rule, ErrorComparisonResult | LatencyComparisonResult):
        return _comparison_row(rule)
    return _other_row(rule, facts)


def verdicts_of(
    events: Sequence[tuple[EventView, Evidence]],
    marks: Mapping[int, tuple[int, str]],
    pool: Pool,
) -> Verdicts | None:
    """The latest judgement of the canary recorded, as the verdict table (``marks``: an
    event's seq -> its number in the timeline and its label)."""
    for event, facts in sorted(events, key=lambda e: (e[0].time, e[0].seq), reverse=True):
        mark = marks.get(event.seq)
        if mark is None or not event.kind.startswith("deployment."):
            continue
        rules = [r for r in rules_of(facts) if r.cohort == "canary"]
        if not rules:
            continue
        rows = [verdict_row(rule, facts, pool) for rule in rules]
        rows.sort(key=lambda row: VERDICT_ORDER.get(row.verdict, 9))
        outcome = facts.outcome if isinstance(facts, Judged | Judgement) else None
        number, label = mark
        return Verdicts(
            number=number,
            time=event.time,
            kind=event.kind,
            label=label or event.message,
            outcome=outcome.value if outcome is not None else None,
            rows=rows,
        )
    return None


__all__ = [
    "Compared",
    "Pool",
    "Pooled",
    "VerdictRow",
    "Verdicts",
    "compared_of",
    "verdict_row",
    "verdicts_of",
]
