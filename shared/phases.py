"""The phases of a deployment, as every side names them: the engine moves through them
(coordinator/engine/phases.py holds the one table of transitions), the API reports
them, the CLI and the report read them. The terminal set is derived here, once.
"""

from __future__ import annotations

import enum
from typing import Final


class Phase(enum.Enum):
    PREFLIGHT = "preflight"
    DEPLOYING = "deploying"
    BAKING = "baking"
    HELD = "held"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTING = "promoting"
    VERIFYING = "verifying"
    ROLLING_BACK = "rolling_back"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REFUSED = "refused"


# A deployment in one of these phases is over: nothing more will happen to it on its own
# (an operator may still roll back a completed or failed one, which starts a new cycle).
TERMINAL: Final[frozenset[Phase]] = frozenset(
    {Phase.COMPLETED, Phase.ROLLED_BACK, Phase.FAILED, Phase.REFUSED}
)
