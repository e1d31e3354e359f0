"""A local webhook receiver for the notification tests: an aiohttp server on an event
loop of its own (the tests block on processes), recording every POST. ``fail_first``
names paths whose first POST is answered 500, to see the notifier retry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from coordinator.devfleet.broker import free_port


@dataclass
class Delivery:
    path: str
    status: int
    key: str
    body: dict[str, Any]


@dataclass
class Receiver:
    fail_first: frozenset[str] = frozenset()
    port: int = field(default_factory=free_port)
    deliveries: list[Delivery] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """What every POST to ``path`` carried, whatever it was answered."""
        return [d.body for d in self.deliveries if d.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        first = not any(d.path == path for d in self.deliveries)
        status = 500 if path in self.fail_first and first else 200
        self.deliveries.append(
            Delivery(path, status, request.headers["Idempotency-Key"], await request.json())
        )
        return web.Response(status=status)


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` until the block ends; the loop and its sockets are closed."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = web.Application()
    app.router.add_post("/{path}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", receiver.port).start()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(5)
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
