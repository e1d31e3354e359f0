"""Commands from the coordinator: trust nothing, run each at most once, answer always.

Checks, in order, each answered ``rejected`` with the reason and running nothing:
the payload decodes strictly (``shared.messages.decode``); a public key is configured;
the Ed25519 signature verifies; the command is for this host; its fencing token is not
older than one already obeyed; it has not expired. Only a command that passed the
signature and host checks is remembered by id, so nobody can poison an id with a
forgery. An id seen before is answered with its first final result and runs nothing
(a retry of the same command); an id reused for different content is rejected.

A command that passes is remembered as running and answered ``accepted`` in one
transaction, then executed, then answered ``succeeded`` or ``failed`` with the detail
(the output tail of what ran). Results go through the durable outbox, so a broker
outage during a deploy delays the answer but never loses it. Commands run one at a
time in arrival order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Final

import msgspec

from agent.deploy import Deployer, Outcome
from agent.signature import verify
from agent.store import Store
from shared.errors import MessageError, SignatureError
from shared.messages import MAX_PAYLOAD, Command, CommandResult, ResultState, decode, encode
from shared.signing import canonical_bytes

log = logging.getLogger(__name__)
QUEUE_LIMIT: Final = 100
FENCING_KEY: Final = "fencing"
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")


class _Envelope(msgspec.Struct):
    """Just the id of a command that failed to decode, to address the rejection."""

    id: str = ""


class Executor:
    def __init__(
        self,
        *,
        host: str,
        store: Store,
        deployer: Deployer,
        public_key: bytes | None,
        on_result: Callable[[], None],
        on_state_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.store = store
        self.deployer = deployer
        self.public_key = public_key
        self._on_result = on_result
        self._on_state_change = on_state_change
        self._clock = clock
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        self.rejected = 0
        self._fail_interrupted()

    def submit(self, payload: bytes) -> None:
        """Queue a raw payload from the ``cmd`` topic (called by the MQTT receiver)."""
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.error("command queue full (%d); dropping a command payload", QUEUE_LIMIT)

    async def run(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self.handle(payload)
            except Exception:
                log.exception("command handling failed")

    async def handle(self, payload: bytes) -> None:
        try:
            command = decode(Command, payload)
        except MessageError as exc:
            self._reject(_loose_id(payload), f"malformed command: {exc}")
            return
        if self.public_key is None:
            self._reject(
                command.id,
                "no public key configured (public_key_file); this agent refuses every command",
            )
            return
        try:
            verify(command, self.public_key)
        except SignatureError as exc:
            self._reject(command.id, str(exc))
            return
        if command.host != self.host:
            self._reject(command.id, f"command is for host {command.host}, this is {self.host}")
            return
        digest = hashlib.sha256(canonical_bytes(command)).hexdigest()
        known = self.store.command(command.id)
        if known is not None:
            known_digest, first = known
            if known_digest != digest:
                self._reject(
                    command.id, f"command id {command.id} was already used for a different command"
                )
            elif first is None:
                log.info("command %s is still running; not starting it again", command.id)
            else:
                log.info("command %s seen before: answering its first result", command.id)
                self.store.enqueue_result(first)
                self._on_result()
            return
        fencing = int(self.store.get(FENCING_KEY) or b"0")
        if command.fencing < fencing:
            self._reject(
                command.id,
                f"stale fencing token {command.fencing} "
                f"(already obeyed {fencing}): not from the current leader",
            )
            return
        current = self._clock()
        if command.expires <= current:
            reason = f"expired {current - command.expires:.1f}s ago"
            log.warning(
                "rejected command %s (%s %s for deployment %s): %s",
                command.id,
                command.action,
                command.version or command.slot or "",
                command.deployment,
                reason,
            )
            result = self._result(command.id, "rejected", reason)
            self.store.remember_command(command.id, digest, encode(result))
            self.rejected += 1
            self._on_result()
            return
        self.store.put(FENCING_KEY, str(command.fencing).encode())
        await self._execute(command, digest)

    async def _execute(self, command: Command, digest: str) -> None:
        self.store.begin_command(command.id, digest, encode(self._result(command.id, "accepted")))
        self._on_result()
        log.warning(
            "executing %s %s for deployment %s (command %s)",
            command.action,
            command.version or command.slot or "",
            command.deployment,
            command.id,
        )
        try:
            if command.action == "deploy":
                outcome = await self.deployer.deploy(command)
            elif command.action == "switch":
                outcome = await self.deployer.switch(command)
            else:
                outcome = await self.deployer.rollback(command)
        except Exception as exc:
            log.exception("command %s crashed", command.id)
            outcome = Outcome(False, f"agent error: {type(exc).__name__}: {exc}")
        state: ResultState = "succeeded" if outcome.ok else "failed"
        log.warning("command %s %s: %s", command.id, state, outcome.detail)
        self.store.remember_command(
            command.id, digest, encode(self._result(command.id, state, outcome.detail))
        )
        self._on_result()
        self._on_state_change()

    def _result(self, command_id: str, state: ResultState, detail: str = "") -> CommandResult:
        current = self.deployer.current
        return CommandResult(
            id=command_id[:64],
            host=self.host,
            state=state,
            detail=_clip(detail),
            version=current.version if state != "rejected" else None,
            slot=current.slot if state != "rejected" else None,
            time=self._clock(),
        )

    def _reject(self, command_id: str | None, reason: str) -> None:
        self.rejected += 1
        log.warning("rejected command %s: %s", command_id or "(no id)", reason)
        if not command_id:
            return  # nothing to address an answer to
        self.store.enqueue_result(encode(self._result(command_id, "rejected", reason)))
        self._on_result()

    def _fail_interrupted(self) -> None:
        for command_id, digest in self.store.unfinished_commands():
            log.error(
                "command %s was running when the agent stopped; reporting it failed", command_id
            )
            self.store.remember_command(
                command_id,
                digest,
                encode(
                    self._result(
                        command_id,
                        "failed",
                        "the agent stopped while this command was running; "
                        "the host may be between versions",
                    )
                ),
            )


def _loose_id(payload: bytes) -> str | None:
    """The id of an undecodable command, if it has a usable one.

    A nested value deeper than msgspec's recursion limit (or a payload over the size
    limit) is scanned without recursion instead, so a hostile unknown field never keeps
    a command from being answered."""
    if len(payload) <= MAX_PAYLOAD:
        try:
            envelope = msgspec.json.decode(payload, type=_Envelope)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        except RecursionError:
            return _scan_top_level_id(payload)
        return envelope.id if _ID_RE.fullmatch(envelope.id) else None
    return _scan_top_level_id(payload[:MAX_PAYLOAD])


_TOP_ID: Final = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_-]{8,64})"')
_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_OPEN: Final = frozenset(b"{[")
_CLOSE: Final = frozenset(b"}]")


def _scan_top_level_id(payload: bytes) -> str | None:
    """The top-level ``"id": "..."`` of a JSON object, found by one pass that tracks
    nesting depth and skips strings (no recursion, linear in the payload)."""
    depth = 0
    i = 0
    n = len(payload)
    while i < n:
        c = payload[i]
        if c == _QUOTE:
            if depth == 1 and (m := _TOP_ID.match(payload, i)) is not None:
                return m.group(1).decode()
            i += 1
            while i < n and payload[i] != _QUOTE:
                i += 2 if payload[i] == _BACKSLASH else 1
        elif c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        i += 1
    return None


def _clip(detail: str, limit: int = 4096) -> str:
    return detail if len(detail) <= limit else "…" + detail[-(limit - 1) :]
