"""Following a deployment as it runs, for ``rollguard deploy --wait``, ``rollguard status``
and the demo: its state polled from the API, its events streamed (server-sent events,
resumed from the last seq after a dropped connection), and both in words.

On a terminal the progress line is redrawn in place under the decisions as they
happen; otherwise plain lines are printed, and only when something changed.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO
from urllib.parse import urlencode

import msgspec

from coordinator.cli.client import EXIT_USAGE, Client, CliError, get_deployment
from coordinator.report.words import (
    HOLD_WORDS,
    STATE_WORDS,
    clock,
    duration,
    millis,
    offset,
    rate,
    transition_of,
    window_words,
)
from shared.evidence import AnalysisWindow, Evidence, NoEvidence
from shared.phases import TERMINAL, Phase
from shared.views import DeploymentView, EventView, StreamError

WINDOW: Final = "analysis.window"
# How long the coordinator may be unreachable before following gives up.
PATIENCE: Final = 60.0
# After the deployment is over, how long to wait for its last events to arrive.
SETTLE: Final = 3.0
# The stream's read timeout: a quiet deployment is reconnected after this.
STREAM_TIMEOUT: Final = 30.0
# Events that only restate another one (operator.start repeats deployment.created).
QUIET_KINDS: Final = frozenset({"operator.start", WINDOW})


class EventStream:
    """A thread reading ``/api/v1/events?deployment=ID&after=SEQ`` into a queue; after a
    dropped connection it reconnects from the last seq it saw, so nothing is lost or
    repeated."""

    def __init__(self, client: Client, deployment_id: str, after: int = 0) -> None:
        self.client = client
        self.deployment_id = deployment_id
        self.after = after
        self.events: queue.Queue[EventView] = queue.Queue()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollguard-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> list[EventView]:
        out: list[EventView] = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.events.get_nowait())
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            query = urlencode({"deployment": self.deployment_id, "after": self.after})
            path = f"/api/v1/events?{query}"
            try:
                response = self.client.stream(path, timeout=STREAM_TIMEOUT)
                with response:
                    self.error = None
                    self._read(response)
            except (CliError, OSError, ValueError) as exc:
                self.error = str(exc)
            self._stop.wait(1.0)

    def _read(self, response: Any) -> None:
        data: list[str] = []
        for raw in response:
            if self._stop.is_set():
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                payload = "\n".join(data).encode()
                data = []
                try:
                    event = _event_decoder.decode(payload)
                except msgspec.ValidationError:
                    # The coordinator's own ``error`` event before it ends the stream.
                    self.error = _error_decoder.decode(payload).error
                    continue
                if event.seq > self.after:
                    self.after = event.seq
                    self.events.put(event)


_event_decoder = msgspec.json.Decoder(EventView)
_error_decoder = msgspec.json.Decoder(StreamError)


@dataclass
class Update:
    """What changed since the last update: the deployment now, and its new events."""

    deployment: DeploymentView
    events: list[EventView] = field(default_factory=list)
    # Set while the coordinator cannot be reached (the deployment is the last one seen).
    error: str | None = None


def follow(
    client: Client,
    deployment_id: str,
    *,
    poll: float = 1.0,
    after: int = 0,
    initial: DeploymentView | None = None,
    deadline: float | None = None,
    patience: float = PATIENCE,
) -> Iterator[Update]:
    """Updates about one deployment every ``poll`` seconds until it is over (then with
    its last events); raise TimeoutError past ``deadline`` (monotonic) and CliError when
    the coordinator stays unreachable for ``patience`` seconds. ``initial`` is the
    deployment as last seen, if known."""
    stream = EventStream(client, deployment_id, after)
    stream.start()
    last: DeploymentView | None = initial
    last_ok = time.monotonic()
    over_since: float | None = None
    try:
        while True:
            try:
                last, last_ok = get_deployment(client, deployment_id), time.monotonic()
                error = None
            except CliError as exc:
                if exc.code == EXIT_USAGE or last is None:
                    raise
                if time.monotonic() - last_ok > patience:
                    raise CliError(f"lost the coordinator for over {patience:g} s: {exc}") from exc
                error = str(exc)
            assert last is not None
            events = stream.drain()
            over = last.phase in TERMINAL
            if over and over_since is None:
                over_since = time.monotonic()
            settled = over_since is not None and (
                _has_final(events, last.phase) or time.monotonic() - over_since > SETTLE
            )
            yield Update(last, events, error)
            if settled:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(deployment_id)
            time.sleep(0.2 if over else poll)
    finally:
        stream.stop()


def _has_final(events: Sequence[EventView], phase: Phase) -> bool:
    for event in events:
        if event.kind == "deployment.refused":
            return True
        moved = transition_of(_facts(event)) if event.kind.startswith("deployment.") else None
        if moved is not None and moved[0] is phase:
            return True
    return False


def _facts(event: EventView) -> Evidence:
    """The event's typed evidence; none if it is not of its kind's type (a coordinator
    of another version): following never stops on a detail."""
    try:
        return event.facts()
    except msgspec.ValidationError:
        return NoEvidence()


def _window(event: EventView) -> AnalysisWindow | None:
    facts = _facts(event)
    return facts if isinstance(facts, AnalysisWindow) else None


# -- words ------------------------------------------------------------------------------


def bake_words(deployment: DeploymentView) -> str:
    """``3 s of 10 s bake left`` while a bake clock runs or is stopped part way."""
    length = deployment.bake_length
    phase = deployment.phase
    if length <= 0 or phase not in (Phase.BAKING, Phase.HELD, Phase.PAUSED):
        return ""
    left = duration(deployment.bake_remaining)
    if phase is Phase.BAKING:
        return f"{left} of {duration(length)} bake left"
    return f"bake stopped with {left} of {duration(length)} left"


def state_words(deployment: DeploymentView) -> str:
    phase = deployment.phase
    words = STATE_WORDS[phase]
    if phase is Phase.HELD and deployment.hold_reason:
        words += f" ({HOLD_WORDS[deployment.hold_reason]})"
    if phase is Phase.PAUSED and deployment.paused_from:
        words += f" (from {STATE_WORDS[deployment.paused_from]})"
    return words


def step_words(deployment: DeploymentView) -> str:
    step = deployment.current
    if step is None:
        return ""
    hosts = len(step.orders)
    return (
        f"step {deployment.step + 1}/{len(deployment.steps)} ({step.name}, "
        f"{hosts} host{'s' if hosts != 1 else ''})"
    )


def numbers_words(window: AnalysisWindow) -> str:
    """``canary 0.48% errors, p95 70 ms · baseline 0.24%, p95 70 ms``: short enough for
    the progress line; empty before the canary has any requests."""
    parts: list[str] = []
    for name, label in (("canary", "canary {rate} errors"), ("baseline", "baseline {rate}")):
        cohort = window.cohorts.get(name)
        if cohort is None or not cohort.requests:
            continue
        text = label.format(rate=rate(cohort.error_rate))
        if cohort.p95_ms is not None:
            text += f", p95 {millis(cohort.p95_ms)}"
        parts.append(text)
    return " · ".join(parts)


def progress_line(deployment: DeploymentView, window: AnalysisWindow | None) -> str:
    """One line: state, step, bake time left, canary vs baseline."""
    parts = [state_words(deployment)]
    if deployment.phase not in TERMINAL:
        parts += [p for p in (step_words(deployment), bake_words(deployment)) if p]
        if window:
            parts.append(numbers_words(window))
    return " · ".join(p for p in parts if p)


def event_line(event: EventView, start: float) -> str:
    """``20:44:12 +0:05  rolling back to 1.0.0: error_rate ...``; commands indented."""
    when = event.time or start
    message, kind, actor = event.message, event.kind, event.actor
    if kind.startswith("command."):
        message = f"  {message}"
    elif kind.startswith("operator.") and actor and not message.startswith(actor):
        message = f"{actor}: {message}"
    return f"{clock(when)} {offset(when, start):>7}  {message}"


def hint(deployment: DeploymentView) -> str | None:
    """What an operator can do now, when the deployment waits for one."""
    phase, ident = deployment.phase, deployment.id
    if phase is Phase.HELD:
        return (
            f"waiting for an operator: rollguard promote {ident} | rollguard resume {ident} | "
            f"rollguard rollback {ident}"
        )
    if phase is Phase.AWAITING_APPROVAL:
        return f"waiting for an operator: rollguard approve {ident} | rollguard rollback {ident}"
    if phase is Phase.PAUSED:
        return f"paused: rollguard resume {ident} | rollguard rollback {ident}"
    return None


class Progress:
    """Prints updates: on a terminal, decisions as lines and a progress line redrawn in
    place under them; otherwise plain lines, the progress line only when it changed."""

    def __init__(self, out: TextIO, *, tty: bool, start: float) -> None:
        self.out = out
        self.tty = tty
        self.start = start
        self.window: AnalysisWindow | None = None
        self.drawn = False
        self.last_key: tuple[Any, ...] | None = None
        self.last_hint: str | None = None
        self.error: str | None = None

    def update(self, update: Update) -> None:
        for event in update.events:
            if event.kind == WINDOW:
                self.window = _window(event)
            elif event.kind not in QUIET_KINDS:
                self._line(event_line(event, self.start))
        if update.error != self.error:
            self.error = update.error
            if update.error:
                self._line(f"cannot reach the coordinator, retrying: {update.error}")
        deployment = update.deployment
        advice = hint(deployment)
        if advice and advice != self.last_hint:
            self._line(advice)
        self.last_hint = advice
        line = progress_line(deployment, self.window)
        if self.tty:
            self._draw(line)
            return
        key = (deployment.phase, deployment.step, deployment.hold_reason)
        if key != self.last_key and deployment.phase not in TERMINAL:
            self.out.write(f"{clock(time.time())} {'':>7}  [{line}]\n")
            self.out.flush()
        self.last_key = key

    def _line(self, text: str) -> None:
        if self.tty and self.drawn:
            self.out.write("\r\x1b[K")
            self.drawn = False
        self.out.write(text + "\n")
        self.out.flush()

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        if len(line) > width - 1:
            line = line[: max(10, width - 2)] + "…"
        self.out.write("\r\x1b[K" + line)
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.tty and self.drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.drawn = False


def status_text(deployment: DeploymentView, events: Sequence[EventView], *, now: float) -> str:
    """``rollguard status ID``: the deployment, its latest numbers and recent decisions."""
    d = deployment
    start = d.created or now
    lines = [
        f"deployment  {d.id}",
        f"version     {d.from_version or '-'} -> {d.version} in {d.environment} by {d.strategy}",
        f"state       {progress_line(d, None)}",
        f"started     {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(start))} by "
        f"{d.actor}" + (f": {d.reason}" if d.reason else ""),
    ]
    if d.finished:
        lines.append(f"finished    after {duration(d.finished - start)}")
    else:
        lines.append(f"running for {duration(now - start)}")
    if d.summary:
        lines.append(f"decision    {d.summary}")
    if d.rollback_reason:
        lines.append(f"rollback    {d.rollback_reason}")
    windows = [w for e in events if e.kind == WINDOW and (w := _window(e)) is not None]
    if windows and d.phase not in TERMINAL:
        lines.append(f"numbers     {window_words(windows[-1])}")
    advice = hint(d)
    if advice:
        lines.append(advice)
    recent = [e for e in events if e.kind not in QUIET_KINDS][-12:]
    if recent:
        lines.append("")
        lines.append("recent events:")
        lines += [f"  {event_line(e, start)}" for e in recent]
    return "\n".join(lines)
