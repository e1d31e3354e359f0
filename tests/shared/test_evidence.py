"""Evidence decodes into its kind's type: what the engine wrote before the types existed
(tests/shared/fixtures/evidence_v1.jsonl: every record and notification the engine and
the shell produced in the engine's test scenarios, one of each shape, written by the
engine of commit 51478f3) and what it writes now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.evidence import (
    EVIDENCE_TYPES,
    CpuResult,
    ErrorRateResult,
    Held,
    Judged,
    RollbackStarted,
    Transition,
    Verdict,
    decode_evidence,
    encode_evidence,
)
from shared.kinds import EventKind
from shared.phases import Phase

FIXTURE = Path(__file__).parent / "fixtures" / "evidence_v1.jsonl"


def stored() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return rows


def test_every_kind_has_one_evidence_type() -> None:
    assert set(EVIDENCE_TYPES) == set(EventKind)


def test_the_fixture_covers_every_kind() -> None:
    assert {EventKind(row["kind"]) for row in stored()} == set(EventKind)


@pytest.mark.parametrize("row", stored(), ids=lambda row: f"{row['type']}:{row['kind']}")
def test_evidence_written_before_the_types_decodes_and_keeps_its_values(
    row: dict[str, Any],
) -> None:
    kind = EventKind(row["kind"])
    evidence = decode_evidence(kind, row["evidence"], notice=row["type"] == "notify")
    # From JSON text too, as the store and the API hand it over.
    again = decode_evidence(
        kind, msgspec.json.encode(row["evidence"]), notice=row["type"] == "notify"
    )
    assert again == evidence
    # Encoding keeps every value that was there (only empty optional keys may go).
    encoded = encode_evidence(evidence)
    for key, value in row["evidence"].items():
        if key in encoded:
            assert encoded[key] == value, key
        else:
            assert value in (None, [], {}), key


def test_a_judgement_decodes_into_rules_tagged_by_name() -> None:
    fails = [
        row for row in stored() if row["kind"] == "deployment.fail" and "outcome" in row["evidence"]
    ]
    assert fails
    evidence = decode_evidence(EventKind.DEPLOYMENT_FAIL, fails[0]["evidence"])
    assert isinstance(evidence, RollbackStarted)
    assert evidence.from_ in set(Phase) and evidence.to is Phase.ROLLING_BACK
    names = [r.rule for r in evidence.rules]
    assert {"error_rate", "latency", "cpu", "memory", "disk", "health", "missing_data"} <= set(
        names
    )
    rates = [r for r in evidence.rules if isinstance(r, ErrorRateResult)]
    assert rates and rates[0].numbers.trials >= rates[0].numbers.events >= 0
    assert all(isinstance(r.verdict, Verdict) for r in evidence.rules)
    assert evidence.failed and set(evidence.failed) <= set(names)


def test_a_hold_that_changes_its_reason_decodes_without_a_transition() -> None:
    holds = [
        decode_evidence(EventKind.DEPLOYMENT_HOLD, row["evidence"])
        for row in stored()
        if row["kind"] == "deployment.hold"
    ]
    assert holds and all(isinstance(h, Held) for h in holds)


def test_unknown_fields_and_wrong_rule_numbers_are_refused() -> None:
    bake_passed = next(row for row in stored() if row["kind"] == "deployment.bake_passed")
    with pytest.raises(msgspec.ValidationError, match="unknown field `surprise`"):
        decode_evidence(
            EventKind.DEPLOYMENT_BAKE_PASSED, {**bake_passed["evidence"], "surprise": 1}
        )
    evidence = decode_evidence(EventKind.DEPLOYMENT_BAKE_PASSED, bake_passed["evidence"])
    assert isinstance(evidence, Judged)
    cpu = next(r for r in evidence.rules if isinstance(r, CpuResult))
    wrong = {**msgspec.to_builtins(cpu), "numbers": {"events": 1}}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(wrong, CpuResult)


def test_a_transition_keeps_the_key_from() -> None:
    transition = Transition(
        trigger="pause",
        from_=Phase.BAKING,
        to=Phase.PAUSED,
        step=0,
        bake_elapsed=1.0,
        bake_length=2.0,
    )
    assert encode_evidence(transition)["from"] == "baking"
