"""Commands on their way to agents: signed once, stored before the first publish,
re-published with the same id and bytes until the agent answers.

The agent is idempotent by id: a re-publish after a lost PUBACK, a reconnect or a
coordinator restart is answered from the agent's memory and runs nothing twice.
"""

from __future__ import annotations

import heapq
import logging
import random
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.messages import Action, Command, Slot, encode
from shared.signing import sign

log = logging.getLogger("rollguard.outbox")


def signed_command(
    key: Ed25519PrivateKey,
    *,
    command_id: str,
    host: str,
    deployment: str,
    action: Action,
    version: str | None,
    slot: Slot | None,
    now: float,
    ttl: float,
    fencing: int,
) -> Command:
    return sign(
        Command(
            id=command_id,
            host=host,
            deployment=deployment,
            action=action,
            version=version,
            slot=slot,
            issued=now,
            expires=now + ttl,
            fencing=fencing,
        ),
        key,
    )


@dataclass(order=True)
class _Pending:
    due: float
    command_id: str = field(compare=False)
    host: str = field(compare=False)
    payload: bytes = field(compare=False)
    expires: float = field(compare=False)
    first_sent: float = field(compare=False)
    attempts: int = field(default=0, compare=False)
    accepted: bool = field(default=False, compare=False)


class Outbox:
    """Which commands await an answer, and when each is next due for a re-publish.

    Pure bookkeeping: the daemon publishes what :meth:`due` returns. A command stops
    being re-published once the agent accepted it (a long deploy then runs without
    duplicates) and is forgotten at its final result or its expiry.
    """

    def __init__(
        self,
        *,
        first_retry: float = 1.0,
        max_retry: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._first = first_retry
        self._max = max_retry
        self._rng = rng or random.Random()  # noqa: S311 - jitter only
        self._pending: dict[str, _Pending] = {}
        self._heap: list[_Pending] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, command_id: str, host: str, payload: bytes, *, expires: float, now: float
    ) -> None:
        """Track a command that is being published now (attempt 1)."""
        if command_id in self._pending:
            return
        entry = _Pending(now, command_id, host, payload, expires, now)
        self._schedule(entry, now)
        self._pending[command_id] = entry

    def add_command(self, command: Command, now: float) -> bytes:
        payload = encode(command)
        self.add(command.id, command.host, payload, expires=command.expires, now=now)
        return payload

    def _schedule(self, entry: _Pending, now: float) -> None:
        entry.attempts += 1
        delay = min(self._first * 2 ** (entry.attempts - 1), self._max)
        entry.due = now + delay * self._rng.uniform(0.8, 1.2)
        heapq.heappush(self._heap, entry)

    def accepted(self, command_id: str) -> None:
        entry = self._pending.get(command_id)
        if entry is not None:
            entry.accepted = True

    def finished(self, command_id: str) -> float | None:
        """Forget a command at its final result; return when it was first sent."""
        entry = self._pending.pop(command_id, None)
        return entry.first_sent if entry is not None else None

    def due(self, now: float) -> list[tuple[str, str, bytes]]:
        """``(command_id, host, payload)`` to re-publish now; reschedules each."""
        out: list[tuple[str, str, bytes]] = []
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            if self._pending.get(entry.command_id) is not entry or entry.accepted:
                continue
            if now >= entry.expires:
                log.warning("command %s to %s expired unanswered", entry.command_id, entry.host)
                del self._pending[entry.command_id]
                continue
            out.append((entry.command_id, entry.host, entry.payload))
            self._schedule(entry, now)
        return out

    def unanswered(self, now: float) -> list[tuple[str, str, bytes]]:
        """``(command_id, host, payload)`` of every command still awaiting its final
        result, to publish once more after a (re)connect: what was published while
        disconnected went nowhere, and an accepted command's result may have been lost
        with the old session. Agents answer a repeat from memory; schedules are kept."""
        return [
            (entry.command_id, entry.host, entry.payload)
            for entry in self._pending.values()
            if now < entry.expires
        ]

    def next_due(self) -> float | None:
        while self._heap and (
            self._pending.get(self._heap[0].command_id) is not self._heap[0]
            or self._heap[0].accepted
        ):
            heapq.heappop(self._heap)
        return self._heap[0].due if self._heap else None
