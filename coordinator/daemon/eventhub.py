"""Fan-out of stored events to live listeners (the API's server-sent events stream).

A slow listener never slows the coordinator: each has a bounded queue, and one that
falls behind is cut off (it reconnects with ``?after=SEQ`` and replays from the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.messages import Event

log = logging.getLogger("rollguard.events")


class ListenerLagged(Exception):
    """The listener's queue overflowed; it must resubscribe from its last seq."""


class _Listener:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(size)
        self.lagged = False


class EventHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._size = queue_size
        self._listeners: set[_Listener] = set()

    def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener.queue.put_nowait(event)
            except asyncio.QueueFull:
                listener.lagged = True
                self._listeners.discard(listener)
                log.warning("an event listener fell behind and was disconnected")

    def close(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):
                listener.queue.put_nowait(None)
        self._listeners.clear()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Event]]:
        listener = _Listener(self._size)
        self._listeners.add(listener)

        async def iterate() -> AsyncIterator[Event]:
            while True:
                if listener.lagged and listener.queue.empty():
                    raise ListenerLagged
                event = await listener.queue.get()
                if event is None:
                    return
                yield event

        try:
            yield iterate()
        finally:
            self._listeners.discard(listener)

    def __len__(self) -> int:
        return len(self._listeners)
