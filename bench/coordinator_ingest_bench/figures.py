"""What the bench measures against (design section 6), and how it summarises runs."""

from __future__ import annotations

from typing import Final

from agent.checks.base import quantile as _nearest_rank

TARGET_RATIO: Final = 0.8
TARGET_ROLLBACK_P99_MS: Final = 50.0
TARGET_ACK_P99_S: Final = 1.0
TARGET_FLEET: Final = 10_000
# A fleet level holds while the coordinator's ingest lags the acknowledged publishes by
# less than this many seconds of traffic, and its process stays under this much of a core.
LAG_LIMIT_S: Final = 2.0
CPU_LIMIT_PCT: Final = 85.0
# The alerts' rate window in the rollback phase: short, so a breached host's alert
# resolves soon after it reports healthy again and the next deployment can start.
ALERT_WINDOW: Final = 0.5


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (p99 of 40 values is the largest but none); None if empty."""
    return _nearest_rank(sorted(values), q) if values else None


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
