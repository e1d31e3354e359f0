"""rollguard's decision engine: pure, deterministic, driven by the shell.

``Engine(config).handle(event, now)`` returns actions; ``next_wakeup()`` says when to
send the next Tick; ``snapshot()`` / ``Engine.restore(config, snapshot)`` persist and
resume. No IO, no clock, no randomness (tests/engine/test_purity.py keeps it so).
"""

from coordinator.engine.actions import (
    CancelCommand,
    DeploymentChanged,
    EngineAction,
    Notify,
    OperatorReply,
    Record,
    RunPreflight,
    RunVerification,
    SendCommand,
)
from coordinator.engine.alerts import FiringAlert
from coordinator.engine.deployment import CommandRecord, Deployment, HistoryEntry, Step
from coordinator.engine.engine import Engine
from coordinator.engine.errors import EngineError, SnapshotError
from coordinator.engine.events import (
    BrokerConnectivity,
    CommandResultReceived,
    EngineEvent,
    HostStatusReceived,
    MetricsReceived,
    OperatorRequest,
    PreflightReported,
    Tick,
    VerificationReported,
)
from coordinator.engine.fleet import HostRecord
from coordinator.engine.phases import TRANSITIONS, IllegalTransition, Phase, Trigger
from coordinator.engine.state import EngineSnapshot, decode_snapshot, encode_snapshot

__all__ = [
    "TRANSITIONS",
    "BrokerConnectivity",
    "CancelCommand",
    "CommandRecord",
    "CommandResultReceived",
    "Deployment",
    "DeploymentChanged",
    "Engine",
    "EngineAction",
    "EngineError",
    "EngineEvent",
    "EngineSnapshot",
    "FiringAlert",
    "HistoryEntry",
    "HostRecord",
    "HostStatusReceived",
    "IllegalTransition",
    "MetricsReceived",
    "Notify",
    "OperatorReply",
    "OperatorRequest",
    "Phase",
    "PreflightReported",
    "Record",
    "RunPreflight",
    "RunVerification",
    "SendCommand",
    "SnapshotError",
    "Step",
    "Tick",
    "Trigger",
    "VerificationReported",
    "decode_snapshot",
    "encode_snapshot",
]
