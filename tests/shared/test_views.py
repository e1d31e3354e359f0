"""The API's views: what the daemon encodes is what the CLI decodes, the JSON keeps its
shape, and anything the other side does not know is refused instead of ignored."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import msgspec
import pytest

from shared.evidence import AnalysisWindow, Judged, RollbackStarted
from shared.kinds import EventKind
from shared.phases import Phase
from shared.views import (
    AlertList,
    AlertView,
    DeploymentList,
    DeploymentReply,
    ErrorView,
    EventList,
    EventView,
    HostView,
    OperatorReplyView,
)
from tests.cli.samples import bad_canary, good_rollout


def _json(value: object) -> Any:
    return json.loads(msgspec.json.encode(value))


def test_a_deployment_round_trips_and_keeps_the_api_shape() -> None:
    view = bad_canary().deployment
    data = _json(DeploymentReply(deployment=view))
    assert msgspec.json.decode(msgspec.json.encode(data), type=DeploymentReply).deployment == view
    shown = data["deployment"]
    # What the CLI's users and the daemon tests have read since the API's first version.
    assert shown["state"] == "rolled_back" and "phase" not in shown
    assert shown["steps"][0]["orders"][0]["host"] == view.steps[0].orders[0].host
    assert [s["percent"] for s in shown["steps"]] == [10.0, 25.0, 50.0, 100.0]
    assert sorted(shown["targets"]) == sorted(view.targets)
    assert (shown["step_name"], shown["steps_total"], shown["percent"]) == ("10%", 4, 10.0)
    for key in ("bake_elapsed", "bake_remaining", "finished", "summary", "from_version"):
        assert key in shown
    # The engine's bookkeeping stays inside the engine.
    for internal in ("counter", "bake_since", "window_start", "rollback_hosts", "approved"):
        assert internal not in shown


def test_the_phase_is_the_enum_and_the_stable_version_is_derived() -> None:
    done, rolled = good_rollout().deployment, bad_canary().deployment
    assert done.phase is Phase.COMPLETED and rolled.phase is Phase.ROLLED_BACK
    assert rolled.stable_version == "1.0.0"
    assert done.current is not None and done.current.name == "100%"


def test_views_refuse_fields_they_do_not_know() -> None:
    data = _json(DeploymentList(deployments=[bad_canary().deployment]))
    data["deployments"][0]["surprise"] = 1
    with pytest.raises(msgspec.ValidationError, match=r"surprise.*\$\.deployments\[0\]"):
        msgspec.json.decode(json.dumps(data), type=DeploymentList)
    data = _json(DeploymentList(deployments=[bad_canary().deployment]))
    data["deployments"][0]["state"] = "exploded"
    with pytest.raises(msgspec.ValidationError, match=r"\$\.deployments\[0\]\.state"):
        msgspec.json.decode(json.dumps(data), type=DeploymentList)


def test_every_event_the_engine_recorded_has_evidence_of_its_kind() -> None:
    for run in (bad_canary(), good_rollout()):
        decoded = msgspec.json.decode(
            msgspec.json.encode(EventList(events=run.events)), type=EventList
        )
        assert decoded.events == run.events
        for event in decoded.events:
            event.facts()  # strict: raises if the evidence is not of the kind's type
    kinds = {e.kind: e.facts() for e in bad_canary().events}
    assert isinstance(kinds[EventKind.ANALYSIS_WINDOW], AnalysisWindow)
    assert isinstance(kinds[EventKind.DEPLOYMENT_FAIL], RollbackStarted)
    assert isinstance(kinds[EventKind.DEPLOYMENT_FAIL], Judged)


def test_evidence_of_the_wrong_type_is_refused() -> None:
    event = EventView(
        seq=1, time=1.0, kind=EventKind.DEPLOYMENT_FAIL, message="m", evidence={"start": 1.0}
    )
    with pytest.raises(msgspec.ValidationError):
        event.facts()
    with pytest.raises(msgspec.ValidationError, match=r"\$\.kind"):
        msgspec.json.decode(
            b'{"seq": 1, "time": 1.0, "kind": "deployment.x", "message": "m"}', type=EventView
        )


def test_replies_and_errors() -> None:
    reply = OperatorReplyView(
        accepted=True, changed=False, message="nothing", deployment=bad_canary().deployment
    )
    assert msgspec.json.decode(msgspec.json.encode(reply), type=OperatorReplyView) == reply
    # An error without reasons says only the error, as before the views.
    assert _json(ErrorView(error="no deployment 'd9'")) == {"error": "no deployment 'd9'"}
    assert _json(ErrorView(error="refused", reasons=["a"])) == {
        "error": "refused",
        "reasons": ["a"],
    }


def test_an_alert_carries_the_evidence_it_fired_on() -> None:
    wire = (
        b'{"alerts": [{"key": "cpu:web-1", "host": "web-1", "rule": "cpu", "started": 5.0,'
        b' "message": "web-1: cpu 93% over 90%",'
        b' "evidence": {"rule": "cpu", "value": 93.0, "threshold": 90.0}}]}'
    )
    (alert,) = msgspec.json.decode(wire, type=AlertList).alerts
    assert alert.resolved is None and alert.evidence.value == 93.0
    assert msgspec.json.decode(msgspec.json.encode(alert), type=AlertView) == alert
    with pytest.raises(msgspec.ValidationError, match=r"\$\.alerts\[0\]\.evidence"):
        msgspec.json.decode(wire.replace(b'"value"', b'"valeur"'), type=AlertList)


def test_a_host_reads_its_latest_values() -> None:
    host = msgspec.convert(
        {
            "host": "web-1",
            "online": True,
            "session": 3,
            "environment": "production",
            "version": "1.0.0",
            "slot": None,
            "labels": {"zone": "a"},
            "agent_version": "0.1",
            "last_seen": 10.0,
            "checks": {"cpu": {"ok": True, "time": 9.0, "values": {"percent": 12.5}}},
        },
        HostView,
    )
    assert host.value("cpu", "percent") == 12.5
    assert host.value("cpu", "load") is None and host.value("disk", "percent") is None


def test_shared_views_import_nothing_of_the_coordinator() -> None:
    code = (
        "import sys, shared.views; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('coordinator', 'agent')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
