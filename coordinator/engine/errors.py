"""The engine's errors: few, each with its data as attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.errors import RollguardError

if TYPE_CHECKING:
    from coordinator.engine.phases import Phase, Trigger


class EngineError(RollguardError):
    """The decision engine was asked for something its state does not allow."""


class IllegalTransition(EngineError):
    """A deployment in ``phase`` cannot take ``trigger``; nothing was changed."""

    def __init__(self, deployment: str, phase: Phase, trigger: Trigger) -> None:
        self.deployment = deployment
        self.phase = phase
        self.trigger = trigger
        super().__init__(
            f"deployment {deployment}: no transition from {phase.value} on {trigger.value}"
        )


class SnapshotError(EngineError):
    """A snapshot cannot be restored (unknown format version or inconsistent data)."""
