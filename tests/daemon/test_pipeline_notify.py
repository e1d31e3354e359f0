"""Every notification the engine makes reaches webhooks under a kind the notifier
knows (coordinator/pipeline.py's NOTIFY_KINDS)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

import coordinator.engine
from coordinator.daemon.notify import Kind, headline
from coordinator.daemon.pipeline import NOTIFY_KINDS, _notification
from coordinator.engine import Notify

ENGINE = Path(coordinator.engine.__file__).parent


def engine_notify_kinds() -> set[str]:
    """The kinds the engine's sources name: ``notify=("x", ...)`` on a transition
    (``deployment.x``) and the literal kinds passed to ``out.notify`` or ``Notify``."""
    found: set[str] = set()
    for path in ENGINE.glob("*.py"):
        text = path.read_text()
        found |= {f"deployment.{k}" for k in re.findall(r'notify=\("(\w+)"', text)}
        found |= set(re.findall(r'(?:notify|Notify)\(\s*now,\s*"([a-z_]+\.[a-z_]+)"', text))
        found |= set(re.findall(r'kind, severity, text = "([a-z_]+\.[a-z_]+)"', text))
    return found


def test_every_engine_notify_kind_is_mapped_to_a_notifier_kind() -> None:
    kinds = engine_notify_kinds()
    assert {"deployment.started", "deployment.rolling_back", "alert.fired"} <= kinds
    assert kinds <= set(NOTIFY_KINDS), sorted(kinds - set(NOTIFY_KINDS))
    valid = set(typing.get_args(Kind))
    assert {k for k in NOTIFY_KINDS.values() if k is not None} <= valid


def notify(kind: str) -> Notify:
    return Notify(
        time=100.0,
        kind=kind,
        severity="critical",
        message="d1 (production, 2.1.0): rolling back to 1.0.0: error_rate: 9/40 over 1.00%",
        environment="production",
        deployment="d1",
        evidence={"rule": "error_rate"},
    )


def test_a_rollback_is_told_once_when_decided_with_its_reason() -> None:
    told = _notification(notify("deployment.rolling_back"), {"d1": "2.1.0"})
    assert told is not None
    assert (told.kind, told.version) == ("rolled_back", "2.1.0")
    assert told.evidence == {"rule": "error_rate"}
    assert "rolled back" in headline(told) and "error_rate" in headline(told)
    assert _notification(notify("deployment.rolled_back"), {}) is None


def test_an_unknown_kind_is_logged_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    assert _notification(notify("deployment.exploded"), {}) is None
    assert "deployment.exploded" in caplog.text
