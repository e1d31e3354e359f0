"""Following a deployment as it runs, for ``rollguard deploy --wait``, ``rollguard status``
and the demo: its state polled from the API, its events streamed (server-sent events,
resumed from the last seq after a dropped connection), and both in words.

On a terminal the progress line is redrawn in place under the decisions as they
happen; otherwise plain lines are printed, and only when something changed.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO
from urllib.parse import quote, urlencode

from coordinator.cli.client import EXIT_USAGE, TERMINAL, Client, CliError
from coordinator.report.words import (
    HOLD_WORDS,
    STATE_WORDS,
    as_map,
    clock,
    duration,
    millis,
    offset,
    rate,
    window_words,
)

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
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollguard-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
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
                event = json.loads("\n".join(data))
                data = []
                if "seq" not in event:
                    # The coordinator's own ``error`` event before it ends the stream.
                    self.error = str(event.get("error", event))
                    continue
                seq = int(event["seq"])
                if seq > self.after:
                    self.after = seq
                    self.events.put(event)


@dataclass
class Update:
    """What changed since the last update: the deployment now, and its new events."""

    deployment: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    # Set while the coordinator cannot be reached (the deployment is the last one seen).
    error: str | None = None


def follow(
    client: Client,
    deployment_id: str,
    *,
    poll: float = 1.0,
    after: int = 0,
    initial: dict[str, Any] | None = None,
    deadline: float | None = None,
    patience: float = PATIENCE,
) -> Iterator[Update]:
    """Updates about one deployment every ``poll`` seconds until it is over (then with
    its last events); raise TimeoutError past ``deadline`` (monotonic) and CliError when
    the coordinator stays unreachable for ``patience`` seconds. ``initial`` is the
    deployment as last seen, if known."""
    stream = EventStream(client, deployment_id, after)
    stream.start()
    last: dict[str, Any] | None = initial
    path = f"/api/v1/deployments/{quote(deployment_id, safe='')}"
    last_ok = time.monotonic()
    over_since: float | None = None
    try:
        while True:
            try:
                reply = client.request("GET", path)
                last, last_ok = reply["deployment"], time.monotonic()
                error = None
            except CliError as exc:
                if exc.code == EXIT_USAGE or last is None:
                    raise
                if time.monotonic() - last_ok > patience:
                    raise CliError(f"lost the coordinator for over {patience:g} s: {exc}") from exc
                error = str(exc)
            assert last is not None
            events = stream.drain()
            over = last["state"] in TERMINAL
            if over and over_since is None:
                over_since = time.monotonic()
            settled = over_since is not None and (
                _has_final(events, str(last["state"])) or time.monotonic() - over_since > SETTLE
            )
            yield Update(last, events, error)
            if settled:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(deployment_id)
            time.sleep(0.2 if over else poll)
    finally:
        stream.stop()


def _has_final(events: Sequence[Mapping[str, Any]], state: str) -> bool:
    return any((e.get("evidence") or {}).get("to") == state for e in events) or any(
        e.get("kind") == "deployment.refused" for e in events
    )


# -- words ------------------------------------------------------------------------------


def bake_words(deployment: Mapping[str, Any]) -> str:
    """``3 s of 10 s bake left`` while a bake clock runs or is stopped part way."""
    length = float(deployment.get("bake_length") or 0.0)
    remaining = deployment.get("bake_remaining")
    state = deployment.get("state")
    if length <= 0 or remaining is None or state not in ("baking", "held", "paused"):
        return ""
    left = duration(float(remaining))
    if state == "baking":
        return f"{left} of {duration(length)} bake left"
    return f"bake stopped with {left} of {duration(length)} left"


def state_words(deployment: Mapping[str, Any]) -> str:
    state = str(deployment.get("state", ""))
    words = STATE_WORDS.get(state, state)
    if state == "held" and deployment.get("hold_reason"):
        words += f" ({HOLD_WORDS.get(str(deployment['hold_reason']), deployment['hold_reason'])})"
    if state == "paused" and deployment.get("paused_from"):
        words += f" (from {STATE_WORDS.get(str(deployment['paused_from']), '?')})"
    return words


def step_words(deployment: Mapping[str, Any]) -> str:
    total = int(deployment.get("steps_total") or len(deployment.get("steps") or []))
    index = int(deployment.get("step") or 0)
    name = deployment.get("step_name")
    if not total or name is None:
        return ""
    steps = deployment.get("steps") or []
    hosts = len(steps[index].get("orders") or []) if 0 <= index < len(steps) else None
    text = f"step {index + 1}/{total} ({name}"
    return text + (f", {hosts} host{'s' if hosts != 1 else ''})" if hosts is not None else ")")


def numbers_words(window: Mapping[str, Any]) -> str:
    """``canary 0.48% errors, p95 70 ms · baseline 0.24%, p95 70 ms``: short enough for
    the progress line; empty before the canary has any requests."""
    cohorts = as_map(window.get("cohorts"))
    parts: list[str] = []
    for name, label in (("canary", "canary {rate} errors"), ("baseline", "baseline {rate}")):
        cohort = as_map(cohorts.get(name))
        if not cohort.get("requests"):
            continue
        text = label.format(rate=rate(cohort.get("error_rate")))
        if cohort.get("p95_ms") is not None:
            text += f", p95 {millis(cohort.get('p95_ms'))}"
        parts.append(text)
    return " · ".join(parts)


def progress_line(deployment: Mapping[str, Any], window: Mapping[str, Any] | None) -> str:
    """One line: state, step, bake time left, canary vs baseline."""
    parts = [state_words(deployment)]
    if deployment.get("state") not in TERMINAL:
        parts += [p for p in (step_words(deployment), bake_words(deployment)) if p]
        if window:
            parts.append(numbers_words(window))
    return " · ".join(p for p in parts if p)


def event_line(event: Mapping[str, Any], start: float) -> str:
    """``20:44:12 +0:05  rolling back to 1.0.0: error_rate ...``; commands indented."""
    when = float(event.get("time") or start)
    message = str(event.get("message", ""))
    kind = str(event.get("kind", ""))
    actor = event.get("actor")
    if kind.startswith("command."):
        message = f"  {message}"
    elif kind.startswith("operator.") and actor and not message.startswith(str(actor)):
        message = f"{actor}: {message}"
    return f"{clock(when)} {offset(when, start):>7}  {message}"


def hint(deployment: Mapping[str, Any]) -> str | None:
    """What an operator can do now, when the deployment waits for one."""
    state, ident = deployment.get("state"), deployment.get("id")
    if state == "held":
        return (
            f"waiting for an operator: rollguard promote {ident} | rollguard resume {ident} | "
            f"rollguard rollback {ident}"
        )
    if state == "awaiting_approval":
        return f"waiting for an operator: rollguard approve {ident} | rollguard rollback {ident}"
    if state == "paused":
        return f"paused: rollguard resume {ident} | rollguard rollback {ident}"
    return None


class Progress:
    """Prints updates: on a terminal, decisions as lines and a progress line redrawn in
    place under them; otherwise plain lines, the progress line only when it changed."""

    def __init__(self, out: TextIO, *, tty: bool, start: float) -> None:
        self.out = out
        self.tty = tty
        self.start = start
        self.window: Mapping[str, Any] | None = None
        self.drawn = False
        self.last_key: tuple[Any, ...] | None = None
        self.last_hint: str | None = None
        self.error: str | None = None

    def update(self, update: Update) -> None:
        for event in update.events:
            if event.get("kind") == WINDOW:
                self.window = event.get("evidence") or None
            elif event.get("kind") not in QUIET_KINDS:
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
        key = (
            deployment.get("state"),
            deployment.get("step"),
            deployment.get("hold_reason"),
        )
        if key != self.last_key and deployment.get("state") not in TERMINAL:
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


def status_text(
    deployment: Mapping[str, Any], events: Sequence[Mapping[str, Any]], *, now: float
) -> str:
    """``rollguard status ID``: the deployment, its latest numbers and recent decisions."""
    start = float(deployment.get("created") or now)
    lines = [
        f"deployment  {deployment.get('id')}",
        f"version     {deployment.get('from_version') or '-'} -> {deployment.get('version')} "
        f"in {deployment.get('environment')} by {deployment.get('strategy')}",
        f"state       {progress_line(deployment, None)}",
        f"started     {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(start))} by "
        f"{deployment.get('actor')}"
        + (f": {deployment['reason']}" if deployment.get("reason") else ""),
    ]
    finished = deployment.get("finished")
    if finished:
        lines.append(f"finished    after {duration(float(finished) - start)}")
    else:
        lines.append(f"running for {duration(now - start)}")
    if deployment.get("summary"):
        lines.append(f"decision    {deployment['summary']}")
    if deployment.get("rollback_reason"):
        lines.append(f"rollback    {deployment['rollback_reason']}")
    windows = [e for e in events if e.get("kind") == WINDOW]
    if windows and deployment.get("state") not in TERMINAL:
        latest = windows[-1]
        lines.append(f"numbers     {window_words(latest.get('evidence') or {})}")
    advice = hint(deployment)
    if advice:
        lines.append(advice)
    recent = [e for e in events if e.get("kind") not in QUIET_KINDS][-12:]
    if recent:
        lines.append("")
        lines.append("recent events:")
        lines += [f"  {event_line(e, start)}" for e in recent]
    return "\n".join(lines)
