"""The store's errors: one root under RollguardError and one subclass for fencing."""

from __future__ import annotations

from shared.errors import RollguardError


class StoreError(RollguardError):
    """The store is unreachable, timed out, refused a write or was used wrongly."""


class StaleLeaderError(StoreError):
    """A write carried a fencing token lower than one the store has already seen."""

    def __init__(self, token: int, current: int) -> None:
        self.token = token
        self.current = current
        super().__init__(
            f"fencing token {token} is stale: the store has seen {current}; "
            "another coordinator leads now and nothing of this write was applied"
        )
