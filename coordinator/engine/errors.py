"""The engine's errors: few, each with its data as attributes (IllegalTransition lives
with the transition table, in phases.py)."""

from __future__ import annotations

from shared.errors import RollguardError


class EngineError(RollguardError):
    """The decision engine was asked for something its state does not allow."""


class SnapshotError(EngineError):
    """A snapshot cannot be restored (unknown format version or inconsistent data)."""
