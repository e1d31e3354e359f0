"""Following a deployment: the progress printer on a terminal and in a log, the words,
and the event stream's resume after a dropped connection (against a small local
server that speaks server-sent events like the coordinator)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from coordinator.cli.client import Client
from coordinator.cli.follow import (
    EventStream,
    Progress,
    Update,
    bake_words,
    event_line,
    hint,
    progress_line,
    status_text,
)
from shared.evidence import AnalysisWindow
from shared.kinds import EventKind
from shared.phases import Phase
from shared.views import DeploymentView, EventView
from tests.cli.samples import START, bad_canary

T0 = START


def baking(step: int = 0, remaining: float = 4.0, **extra: Any) -> DeploymentView:
    """The bad canary's deployment as it was while baking (numbers chosen for the words)."""
    fields: dict[str, Any] = {
        "phase": Phase.BAKING,
        "step": step,
        "step_name": ["10%", "25%", "50%", "100%"][step],
        "bake_length": 10.0,
        "bake_remaining": remaining,
        "finished": None,
        **extra,
    }
    return msgspec.structs.replace(bad_canary().deployment, **fields)


def _cohort(hosts: int, requests: int, errors: int, p95: float) -> dict[str, Any]:
    return {
        "hosts": hosts,
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "p50_ms": p95 / 2,
        "p95_ms": p95,
        "p99_ms": p95 * 1.2,
    }


WINDOW = EventView(
    seq=1,
    kind=EventKind.ANALYSIS_WINDOW,
    time=T0 + 2,
    message="numbers",
    evidence={
        "start": T0,
        "end": T0 + 2,
        "cohorts": {"canary": _cohort(1, 210, 0, 38.0), "baseline": _cohort(3, 630, 1, 41.0)},
    },
)
NUMBERS = WINDOW.facts()
DECISION = EventView(
    seq=2, kind=EventKind.DEPLOYMENT_BAKE_PASSED, time=T0 + 10, message="step 10% passed"
)
COMMAND = EventView(
    seq=3, kind=EventKind.COMMAND_SUCCEEDED, time=T0 + 10.1, message="web-2: deploy ok"
)


def test_progress_line_has_step_bake_and_both_cohorts() -> None:
    assert isinstance(NUMBERS, AnalysisWindow)
    line = progress_line(baking(), NUMBERS)
    assert line == (
        "baking · step 1/4 (10%, 1 host) · 4.0 s of 10 s bake left · "
        "canary 0% errors, p95 38 ms · baseline 0.16%, p95 41 ms"
    )
    held = baking(phase=Phase.HELD, hold_reason="inconclusive")
    assert progress_line(held, None).startswith(
        "held (inconclusive) · step 1/4 (10%, 1 host) · bake stopped with 4.0 s of 10 s left"
    )
    assert hint(held) == (
        "waiting for an operator: rollguard promote d1 | rollguard resume d1 | "
        "rollguard rollback d1"
    )
    assert bake_words(baking(phase=Phase.DEPLOYING)) == ""


def test_plain_output_prints_lines_only_when_something_changes() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=False, start=T0)
    progress.update(Update(baking(remaining=8.0), [WINDOW]))
    progress.update(Update(baking(remaining=6.0)))
    progress.update(Update(baking(remaining=4.0)))
    progress.update(Update(baking(step=1, remaining=5.0), [DECISION, COMMAND]))
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert "[baking · step 1/4 (10%, 1 host) · 8.0 s of 10 s bake left · canary" in lines[0]
    assert lines[1].endswith("+0:10  step 10% passed")
    assert lines[2].endswith("+0:10    web-2: deploy ok")
    assert "[baking · step 2/4 (25%, 2 hosts)" in lines[3]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_terminal_output_redraws_the_progress_line_in_place() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True, start=T0)
    progress.update(Update(baking(remaining=8.0), [WINDOW]))
    progress.update(Update(baking(remaining=6.0), [DECISION]))
    progress.close()
    text = out.getvalue()
    frames = text.split("\r\x1b[K")
    assert frames[0] == ""
    assert frames[1].startswith("baking · step 1/4 (10%, 1 host) · 8.0 s of 10 s")
    assert frames[2].endswith("step 10% passed\n")  # the line replaces the progress line
    assert frames[3].startswith("baking · step 1/4 (10%, 1 host) · 6.0 s")  # redrawn under it
    assert frames[-1] == ""  # closed: the progress line is cleared


def test_an_unreachable_coordinator_is_said_once() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=False, start=T0)
    for _ in range(3):
        progress.update(Update(baking(), [], error="cannot reach the coordinator"))
    progress.update(Update(baking()))
    assert out.getvalue().count("cannot reach the coordinator, retrying") == 1


def test_event_lines_and_status_text() -> None:
    run = bad_canary()
    deployment, events = run.deployment, run.events
    command = next(e for e in events if e.kind == "command.succeeded")
    canary = deployment.steps[0].orders[0].host
    assert event_line(command, T0).endswith(f"+0:02    {canary}: deploy 2.1.0 succeeded")
    refused = events[-1]
    expected = "bob: pause d1: refused: cannot pause while rolled_back"
    assert event_line(refused, T0).endswith(expected)
    text = status_text(deployment, events, now=run.now + 100)
    assert "deployment  d1" in text
    assert "version     1.0.0 -> 2.1.0 in production by canary" in text
    assert "state       rolled back" in text
    assert "started     1970-01-01 00:02:00 UTC by alice: CHG-1" in text
    assert "finished    after 2 min 32 s" in text
    assert f"rollback    {deployment.rollback_reason}" in text
    assert "operator.start" not in text and "numbers" not in text
    assert "recent events:" in text and "rolling back to 1.0.0: error_rate: " in text


class _Sse(BaseHTTPRequestHandler):
    """Events 1..5; the first connection drops after two of them."""

    calls: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).calls.append(self.path)
        query = parse_qs(urlsplit(self.path).query)
        after = int(query["after"][0])
        assert self.headers["Authorization"] == "Bearer secret-token"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for sent, seq in enumerate(range(after + 1, 6), start=1):
            event = {"seq": seq, "time": T0 + seq, "kind": "command.late", "message": f"m{seq}"}
            data = json.dumps(event)
            self.wfile.write(f"id: {seq}\nevent: deployment.x\ndata: {data}\n\n".encode())
            self.wfile.flush()
            if len(type(self).calls) == 1 and sent == 2:
                return  # the connection drops
        time.sleep(0.5)


@pytest.fixture
def sse_server() -> Iterator[str]:
    _Sse.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_event_stream_resumes_after_the_last_seq(sse_server: str) -> None:
    stream = EventStream(Client(sse_server, "secret-token"), "d1", after=0)
    stream.start()
    seen: list[EventView] = []
    deadline = time.monotonic() + 10
    while len(seen) < 5 and time.monotonic() < deadline:
        seen += stream.drain()
        time.sleep(0.05)
    stream.stop()
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5]
    assert "after=0" in _Sse.calls[0] and "deployment=d1" in _Sse.calls[0]
    assert "after=2" in _Sse.calls[1]
