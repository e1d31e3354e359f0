"""The evidence behind every entry of the event log, as typed Structs.

The engine builds these; the event log stores them as JSON objects (the field names
are the log's since its first version: flat, a transition's facts next to the
judgement that moved it); the API serves them; the CLI and the report decode them with
``decode_evidence(kind, data)``. ``EVIDENCE_TYPES`` gives the one type of each
``EventKind``, so a stored event's evidence decodes from its kind alone.

A judgement's rules are a tagged union on ``rule`` (``error_rate``, ``latency``,
``cpu``, ``memory``, ``disk``, ``health``, ``coverage``, ``missing_data``, and the
canary-versus-baseline comparisons ``error_vs_baseline`` and ``latency_vs_baseline``),
each with its own typed ``numbers``. Every Struct refuses unknown fields, so evidence written by
one side and not known to the other fails loudly in the tests instead of vanishing.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import msgspec

from shared.kinds import EventKind
from shared.phases import Phase

# Why a deployment holds for an operator.
HoldReason = Literal["fleet_incident", "missing_data", "inconclusive", "unreachable"]


class Verdict(enum.Enum):
    """One rule's verdict on one cohort and window."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"


class Outcome(enum.Enum):
    """A judgement of the canary cohort, all rules and the baseline together."""

    FAIL = "fail"  # a failure blamed on the release: roll back
    FLEET = "fleet"  # every failure shared by the baseline: hold and alert
    MISSING = "missing"  # a host has no data, within the grace: hold and alert
    WAIT = "wait"  # inconclusive, or not enough fresh data yet
    PASS = "pass"  # every enforced rule passes on fresh data


class _Strict(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every evidence Struct: keyword-only, immutable, strict on decode."""


# -- the rules' results ---------------------------------------------------------------


class RateNumbers(_Strict, kw_only=True, frozen=True):
    """A rate judged from its counts: ``events`` out of ``trials`` with one-sided bounds
    at ``confidence``, against ``threshold``."""

    events: int
    trials: int
    estimate: float
    lower: float
    upper: float
    threshold: float
    confidence: float


class LatencyNumbers(RateNumbers, kw_only=True, frozen=True):
    """The share of requests slower than ``latency_ms`` against ``1 - quantile``
    (``events`` are the surely slow ones, ``slow_possible`` counts straddling buckets)."""

    quantile: float
    # Approximate (within 2 %), for people; the verdict uses the exact counts.
    quantile_ms: float | None
    latency_ms: float
    slow_possible: int


class GaugeNumbers(_Strict, kw_only=True, frozen=True):
    limit: float
    consecutive: int
    reporting: int
    # Host -> the highest value in the window, for the hosts over the limit.
    peaks: dict[str, float]


class HealthNumbers(_Strict, kw_only=True, frozen=True):
    consecutive: int
    # Host -> the checks failing ``consecutive`` times in a row.
    failing: dict[str, list[str]]
    # "host/check" -> the last error.
    errors: dict[str, str]


class CoverageNumbers(_Strict, kw_only=True, frozen=True):
    # Host -> the required checks without a sample in the window.
    lacking: dict[str, list[str]]
    required: list[str]


class Absence(_Strict, kw_only=True, frozen=True):
    """Since when a host has had no data, and why (offline, or a silent check)."""

    since: float
    why: str


class MissingDataNumbers(_Strict, kw_only=True, frozen=True):
    grace: float
    missing: dict[str, Absence]


class _Rule(_Strict, kw_only=True, frozen=True, tag_field="rule"):
    verdict: Verdict
    cohort: str
    window_start: float
    window_end: float
    # False for rules the environment only reports (development's error rate).
    enforced: bool = True
    hosts: list[str] = []
    message: str = ""

    @property
    def rule(self) -> str:
        """The rule this result is of: its tag (``error_rate``, ``cpu``, ...)."""
        tag = type(self).__struct_config__.tag
        assert isinstance(tag, str)
        return tag


class ErrorRateResult(_Rule, kw_only=True, frozen=True, tag="error_rate"):
    numbers: RateNumbers


class LatencyResult(_Rule, kw_only=True, frozen=True, tag="latency"):
    numbers: LatencyNumbers


class CpuResult(_Rule, kw_only=True, frozen=True, tag="cpu"):
    numbers: GaugeNumbers


class MemoryResult(_Rule, kw_only=True, frozen=True, tag="memory"):
    numbers: GaugeNumbers


class DiskResult(_Rule, kw_only=True, frozen=True, tag="disk"):
    numbers: GaugeNumbers


class HealthResult(_Rule, kw_only=True, frozen=True, tag="health"):
    numbers: HealthNumbers


class CoverageResult(_Rule, kw_only=True, frozen=True, tag="coverage"):
    numbers: CoverageNumbers


class MissingDataResult(_Rule, kw_only=True, frozen=True, tag="missing_data"):
    numbers: MissingDataNumbers


class ComparisonNumbers(_Strict, kw_only=True, frozen=True):
    """The canary's rate against the baseline's over the span both have data for: the
    ratio ``canary_rate / baseline_rate`` tested against ``allowed`` by an anytime-valid
    mixture test (``log_evalue``, rejecting at ``-log(1 - confidence)``), with the
    confidence sequence's lower end (``lower``). Errors also test the canary's rate
    against the absolute ``floor`` (``floor_shown``); latency counts the requests slower
    than the baseline's ``quantile`` (``slower_than_ms``, a sketch bucket's edge)."""

    canary_events: int
    canary_trials: int
    baseline_events: int
    baseline_trials: int
    canary_rate: float
    baseline_rate: float
    # None while the baseline has no events (the ratio is unbounded or undefined).
    ratio: float | None
    lower: float
    allowed: float
    floor: float | None
    floor_shown: bool
    confidence: float
    log_evalue: float
    span_end: float
    quantile: float | None = None
    slower_than_ms: float | None = None


class ErrorComparisonResult(_Rule, kw_only=True, frozen=True, tag="error_vs_baseline"):
    numbers: ComparisonNumbers


class LatencyComparisonResult(_Rule, kw_only=True, frozen=True, tag="latency_vs_baseline"):
    numbers: ComparisonNumbers


RateResult = ErrorRateResult | LatencyResult
ComparisonResult = ErrorComparisonResult | LatencyComparisonResult
GaugeResult = CpuResult | MemoryResult | DiskResult
RuleResult = (
    ErrorRateResult
    | LatencyResult
    | CpuResult
    | MemoryResult
    | DiskResult
    | HealthResult
    | CoverageResult
    | MissingDataResult
    | ErrorComparisonResult
    | LatencyComparisonResult
)
GAUGE_RESULTS: Final[dict[str, type[GaugeResult]]] = {
    "cpu": CpuResult,
    "memory": MemoryResult,
    "disk": DiskResult,
}


class BaselineShown(_Strict, kw_only=True, frozen=True, omit_defaults=True):
    """Whether the baseline shows the breach a canary rule failed on. For a rate, the
    baseline's own result of that rule (``rule``); for a host rule, the rule's name and
    the shares of hosts showing it."""

    same_breach: bool
    rule: RuleResult | str
    baseline_hosts: int | None = None
    reporting: int | None = None
    showing: list[str] | None = None
    baseline_share: float | None = None
    canary_share: float | None = None
    # Baseline hosts left out of a rate (the one pulling it up most, the one pulling it
    # down most), so that no one host excuses or blames a release.
    excluded: list[str] | None = None
    # The baseline has no data yet to confirm or refute the breach: judged by then.
    pending_until: float | None = None


# -- judgements and transitions -------------------------------------------------------


class Judgement(_Strict, kw_only=True, frozen=True):
    """Every rule on the canary cohort, and what the baseline showed of each failure."""

    outcome: Outcome
    rules: list[RuleResult]
    failed: list[str] = []
    baseline: dict[str, BaselineShown] = {}
    missing: dict[str, Absence] = {}


class Transition(_Strict, kw_only=True, frozen=True):
    """A transition of the table (``deployment.<trigger>``) and the bake clock then."""

    trigger: str
    from_: Phase = msgspec.field(name="from")
    to: Phase
    step: int
    bake_elapsed: float
    bake_length: float
    # Target hosts the deployment could not reach (offline or silent past the grace):
    # not commanded, not waited for, converged when they return.
    unreachable: list[str] = []


class Judged(Transition, kw_only=True, frozen=True):
    """A transition taken on a judgement, whose fields it carries alongside (a
    Judgement's, flat; absent when nothing was judged)."""

    outcome: Outcome | None = None
    rules: list[RuleResult] = []
    failed: list[str] = []
    baseline: dict[str, BaselineShown] = {}
    missing: dict[str, Absence] = {}


class PreflightCheck(_Strict, kw_only=True, frozen=True):
    name: str
    ok: bool | None


class PreflightPassed(Transition, kw_only=True, frozen=True):
    preflight: list[PreflightCheck]


class PreflightFailed(Transition, kw_only=True, frozen=True, omit_defaults=True):
    """Refused before any host changed: commands not reported in time (``pending``),
    one that failed (``name``, ``output_tail``), or the host gate (``reasons``)."""

    pending: list[str] | None = None
    name: str | None = None
    output_tail: str | None = None
    reasons: list[str] | None = None


class VerificationStarted(_Strict, kw_only=True, frozen=True):
    """Every host reports the new version: the post-deployment verification commands
    run, and must all have reported by ``deadline`` (engine time)."""

    commands: list[str]
    deadline: float


class VerificationFailure(_Strict, kw_only=True, frozen=True, omit_defaults=True):
    """Why a post-deployment verification failed: a command that failed or timed out
    (``name``, and its ``output_tail`` ending with how it ended), or commands not
    reported by the deadline (``pending``)."""

    name: str | None = None
    output_tail: str | None = None
    pending: list[str] | None = None


class Verified(Judged, kw_only=True, frozen=True):
    """A deployment completed: every host on the new version, healthy, and each
    post-deployment verification command passed (``verification``)."""

    verification: list[PreflightCheck] = []


class StepConfirmed(Transition, kw_only=True, frozen=True):
    """Every host of the step confirmed its command: the bake starts."""

    hosts: list[str]


class Extended(Judged, kw_only=True, frozen=True):
    """Inconclusive at the end of the bake: extended once by ``extension`` seconds."""

    extension: float


class Held(Judgement, kw_only=True, frozen=True, omit_defaults=True):
    """An automatic hold: the judgement, the transition's fields (as Transition's) and
    the hold's reason. A hold that changes its reason while held is recorded with the
    judgement only."""

    trigger: str | None = None
    from_: Phase | None = msgspec.field(default=None, name="from")
    to: Phase | None = None
    step: int | None = None
    bake_elapsed: float | None = None
    bake_length: float | None = None
    reason: HoldReason | None = None
    # A hold for unreachable hosts: those counted against the tolerated share. When no
    # judged host was reachable there is no judgement (``outcome`` None).
    unreachable: list[str] = []
    outcome: Outcome | None = None  # type: ignore[assignment]
    rules: list[RuleResult] = []


class Promoted(Judged, kw_only=True, frozen=True):
    """An operator skipped the rest of the bake, with the judgement that allowed it."""

    reason: str


class StepAdvanced(Judged, kw_only=True, frozen=True):
    """The next step's commands go out (after a passed bake, or an approve with the
    judgement that allowed it)."""

    hosts: list[str]
    percent: float
    next_step: int


class Paused(Transition, kw_only=True, frozen=True):
    reason: str


class Resumed(Judged, kw_only=True, frozen=True):
    """An operator's resume (its ``reason``; ``hold_reason`` when it ended a hold)."""

    reason: str = ""
    hold_reason: HoldReason | None = None


class CommandState(_Strict, kw_only=True, frozen=True):
    """One command, as a decision saw it: what was sent and what the host reports."""

    command: str
    host: str
    action: str
    state: str
    detail: str
    issued: float
    deadline: float
    reported_version: str | None
    reported_slot: str | None
    expected_version: str | None
    expected_slot: str | None


class RollbackStarted(Judged, kw_only=True, frozen=True, omit_defaults=True):
    """A rollback to ``stable_version`` of ``hosts``: on a judgement (its fields), a
    failed command (``rule`` "command", ``commands``) or an operator (``rule``
    "operator", ``actor``)."""

    stable_version: str | None
    from_version: str | None
    hosts: list[str]
    reason: str
    rule: Literal["command", "operator", "verification"] | None = None
    commands: list[CommandState] | None = None
    verification: VerificationFailure | None = None
    actor: str | None = None


class Reported(_Strict, kw_only=True, frozen=True):
    version: str | None
    slot: str | None


class RollbackEnded(Transition, kw_only=True, frozen=True):
    """A rollback verified (or not) on every target host."""

    stable_version: str | None
    reason: str | None
    commands: list[CommandState]
    not_on_stable: dict[str, Reported]
    unhealthy: list[str]


# -- other facts ----------------------------------------------------------------------


class PlannedStep(_Strict, kw_only=True, frozen=True):
    name: str
    hosts: list[str]
    bake: float
    approval: bool


class Created(_Strict, kw_only=True, frozen=True):
    version: str
    from_version: str | None
    strategy: str
    steps: list[PlannedStep]
    reason: str


class GateRefusal(_Strict, kw_only=True, frozen=True):
    """A start the host gate refused before creating the deployment."""

    reasons: list[str]
    version: str
    environment: str


class Restarted(_Strict, kw_only=True, frozen=True):
    """Resumed after a coordinator restart with this much of the bake done."""

    bake_elapsed: float
    bake_length: float


class Converging(_Strict, kw_only=True, frozen=True):
    """A host that came back is commanded to the version it should run now: the
    running deployment's target for it, the stable version after a rollback, the new
    one after a completion (``because`` says which)."""

    command: str
    action: str
    version: str | None
    reported_version: str | None
    because: Literal["deployment", "rolled_back", "completed"]
    session: int


class CommandAnswer(_Strict, kw_only=True, frozen=True):
    """An agent's answer to a command (for an unknown command: id, state and detail)."""

    command: str
    state: str
    detail: str
    version: str | None = None
    slot: str | None = None
    agent_time: float | None = None


class OperatorAnswer(_Strict, kw_only=True, frozen=True):
    """A person's request and the engine's answer to it."""

    accepted: bool
    changed: bool
    reason: str
    reasons: list[str]
    step: int | None


class PreflightReport(_Strict, kw_only=True, frozen=True):
    name: str
    ok: bool
    output_tail: str = ""


class AlertChange(_Strict, kw_only=True, frozen=True, omit_defaults=True):
    """An alert fired or resolved. ``rule`` is the alert's (``cpu``, ``error_rate``,
    ``health:<check>``, ``offline``, ``silent``, ...); the numbers are the rule's."""

    rule: str
    # Gauges.
    value: float | None = None
    threshold: float | None = None
    # Health checks.
    ok: bool | None = None
    error: str | None = None
    # Rates: errors (or slow requests) out of requests, with the lower bound.
    errors: int | None = None
    slow: int | None = None
    requests: int | None = None
    lower: float | None = None
    share: float | None = None
    latency_ms: float | None = None
    # The cache hit rate (``value``): the interval's hits and misses behind it.
    hits: int | None = None
    misses: int | None = None
    # The agent's Will, and silent checks.
    online: bool | None = None
    checks: list[str] | None = None
    breach_streak: int | None = None
    clear_streak: int | None = None
    # When resolved: when it fired and for how long.
    fired_at: float | None = None
    duration: float | None = None


class GaugeSpread(_Strict, kw_only=True, frozen=True):
    """One gauge (``cpu``, ``memory``, ``disk`` percent) over a cohort's hosts in one
    window: the mean of its samples and the highest (disk: a host's fullest mount)."""

    hosts: int
    samples: int
    mean: float
    max: float


class CohortNumbers(_Strict, kw_only=True, frozen=True, omit_defaults=True):
    hosts: int
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    # Gauge name -> its spread; empty in windows recorded before gauges were.
    gauges: dict[str, GaugeSpread] = {}


class AnalysisWindow(_Strict, kw_only=True, frozen=True):
    """Each cohort's pooled application numbers over ``start``..``end`` (recorded by the
    shell for people; no decision reads it)."""

    start: float
    end: float
    cohorts: dict[str, CohortNumbers]


class NoEvidence(_Strict, kw_only=True, frozen=True):
    """A notification with nothing more to say than its message."""


Evidence = (
    Transition
    | Judged
    | Judgement
    | PreflightPassed
    | PreflightFailed
    | VerificationStarted
    | Verified
    | StepConfirmed
    | Extended
    | Held
    | Promoted
    | StepAdvanced
    | Paused
    | Resumed
    | RollbackStarted
    | RollbackEnded
    | Created
    | GateRefusal
    | Restarted
    | Converging
    | CommandAnswer
    | OperatorAnswer
    | PreflightReport
    | AlertChange
    | AnalysisWindow
    | NoEvidence
)

_K = EventKind
# The evidence of each kind as stored in the event log. A notification-only kind (never
# stored) has the type of the transition it announces; deployment.refused is stored by
# the host gate (GateRefusal) while its notification carries the PreflightFailed.
EVIDENCE_TYPES: Final[dict[EventKind, type[Evidence]]] = {
    _K.DEPLOYMENT_PREFLIGHT_PASSED: PreflightPassed,
    _K.DEPLOYMENT_PREFLIGHT_FAILED: PreflightFailed,
    _K.DEPLOYMENT_ACKED: StepConfirmed,
    _K.DEPLOYMENT_BAKE_PASSED: Judged,
    _K.DEPLOYMENT_EXTEND: Extended,
    _K.DEPLOYMENT_HOLD: Held,
    _K.DEPLOYMENT_CLEARED: Judged,
    _K.DEPLOYMENT_PROMOTE: Promoted,
    _K.DEPLOYMENT_APPROVE: StepAdvanced,
    _K.DEPLOYMENT_NEXT_STEP: StepAdvanced,
    _K.DEPLOYMENT_APPROVAL_REQUIRED: Transition,
    _K.DEPLOYMENT_STEPS_DONE: Transition,
    _K.DEPLOYMENT_VERIFIED: Verified,
    _K.DEPLOYMENT_PAUSE: Paused,
    _K.DEPLOYMENT_RESUME: Resumed,
    _K.DEPLOYMENT_FAIL: RollbackStarted,
    _K.DEPLOYMENT_ROLLBACK: RollbackStarted,
    _K.DEPLOYMENT_ROLLBACK_DONE: RollbackEnded,
    _K.DEPLOYMENT_ROLLBACK_FAILED: RollbackEnded,
    _K.DEPLOYMENT_CREATED: Created,
    _K.DEPLOYMENT_REFUSED: GateRefusal,
    _K.DEPLOYMENT_MISSING: Judgement,
    _K.DEPLOYMENT_FLEET: Judgement,
    _K.DEPLOYMENT_RESUMED_AFTER_RESTART: Restarted,
    _K.DEPLOYMENT_STARTED: NoEvidence,
    _K.DEPLOYMENT_PROMOTED: StepAdvanced,
    _K.DEPLOYMENT_PAUSED: Paused,
    _K.DEPLOYMENT_HELD: Held,
    _K.DEPLOYMENT_RESUMED: Resumed,
    _K.DEPLOYMENT_APPROVAL_NEEDED: Transition,
    _K.DEPLOYMENT_ROLLING_BACK: RollbackStarted,
    _K.DEPLOYMENT_ROLLED_BACK: RollbackEnded,
    _K.DEPLOYMENT_COMPLETED: Verified,
    _K.HOST_CONVERGING: Converging,
    _K.COMMAND_SUCCEEDED: CommandAnswer,
    _K.COMMAND_FAILED: CommandAnswer,
    _K.COMMAND_REJECTED: CommandAnswer,
    _K.COMMAND_UNKNOWN: CommandAnswer,
    _K.COMMAND_HOST_MISMATCH: CommandAnswer,
    _K.COMMAND_LATE: CommandAnswer,
    _K.OPERATOR_START: OperatorAnswer,
    _K.OPERATOR_PROMOTE: OperatorAnswer,
    _K.OPERATOR_ROLLBACK: OperatorAnswer,
    _K.OPERATOR_PAUSE: OperatorAnswer,
    _K.OPERATOR_RESUME: OperatorAnswer,
    _K.OPERATOR_APPROVE: OperatorAnswer,
    _K.PREFLIGHT_REPORTED: PreflightReport,
    _K.PREFLIGHT_IGNORED: PreflightReport,
    _K.VERIFICATION_STARTED: VerificationStarted,
    _K.VERIFICATION_REPORTED: PreflightReport,
    _K.VERIFICATION_IGNORED: PreflightReport,
    _K.ALERT_FIRED: AlertChange,
    _K.ALERT_RESOLVED: AlertChange,
    _K.ANALYSIS_WINDOW: AnalysisWindow,
}
# Where a notification's evidence differs from the stored event of the same kind.
NOTICE_TYPES: Final[dict[EventKind, type[Evidence]]] = {
    _K.DEPLOYMENT_REFUSED: PreflightFailed,
}
del _K


def decode_evidence(
    kind: EventKind, data: bytes | str | dict[str, Any], *, notice: bool = False
) -> Evidence:
    """The evidence of a ``kind`` event (``notice``: of a notification), from its JSON
    (bytes or text) or from the object it decoded to; msgspec.ValidationError if it is
    not of that kind's type."""
    evidence_type = (NOTICE_TYPES if notice else EVIDENCE_TYPES).get(kind) or EVIDENCE_TYPES[kind]
    if isinstance(data, dict):
        return msgspec.convert(data, evidence_type)
    return msgspec.json.decode(data, type=evidence_type)


def encode_evidence(evidence: Evidence) -> dict[str, Any]:
    """The JSON object the event log stores for ``evidence``."""
    data: dict[str, Any] = msgspec.to_builtins(evidence)
    return data
