"""Agent test helpers: a recording sink, a local HTTP app with injected errors and
latency, a closed port, a listener that never answers, and one that never accepts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from coordinator.devfleet.broker import free_port
from shared.config import AgentConfig
from shared.messages import Sample


class RecordingSink:
    """What checks emitted, in order; asserts read it back precisely."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def emit(self, sample: Sample) -> None:
        self.samples.append(sample)

    def only(self, check: str) -> Sample:
        matching = [s for s in self.samples if s.check == check]
        assert len(matching) == 1, f"expected one {check} sample, got {self.samples}"
        # Every sample a check emits must pass the wire's own validation.
        msgspec.json.decode(msgspec.json.encode(matching[0]), type=Sample)
        return matching[0]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def agent_config(**data: Any) -> AgentConfig:
    """An AgentConfig from keyword sections, validated like a TOML file."""
    data.setdefault("host", "host-a")
    return msgspec.convert(data, AgentConfig)


@dataclass
class App:
    """A local aiohttp app: ``statuses`` are served in turn (then ``status``), each after
    ``delay`` seconds; ``metrics`` is the Prometheus text at /metrics."""

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    metrics: str = ""
    hits: int = 0

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def serving(state: App) -> AsyncIterator[App]:
    """Serve ``state`` on a free local port until the block ends."""
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        state.hits += 1
        status = state.statuses.pop(0) if state.statuses else state.status
        if state.delay:
            await asyncio.sleep(state.delay)
        return web.Response(status=status, text="ok" if status < 400 else "boom")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=state.metrics, content_type="text/plain")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"hello ", b"chunked ", b"world"):
            await response.write(part)
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_get("/health", health)
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/chunked", chunked)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    state.port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", state.port)
    await site.start()
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    async with serving(App()) as state:
        yield state


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """Accepts connections and never answers, never closes."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        server.close()


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A listener whose accept queue is full: a new TCP connect hangs until timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


class Listener:
    """Messages seen by a subscriber, with a way to wait for one."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._changed = asyncio.Event()

    def add(self, topic: str, payload: bytes, retain: bool) -> None:
        self.messages.append((topic, payload, retain))
        self._changed.set()

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.messages if t == topic]

    async def wait(self, predicate: Any, within: float = 10.0) -> Any:
        async with asyncio.timeout(within):
            while True:
                found = predicate()
                if found:
                    return found
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def listening(
    mqtt: Any, topic_filters: list[str], identifier: str = "test-listener"
) -> AsyncIterator[Listener]:
    """A subscriber (operator or coordinator credential) collecting in the background."""
    from shared.mqtt import make_client

    listener = Listener()
    async with make_client(mqtt, identifier=identifier) as client:
        for topic_filter in topic_filters:
            await client.subscribe(topic_filter, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                listener.add(str(message.topic), payload, bool(message.retain))

        task = asyncio.create_task(collect())
        try:
            yield listener
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
