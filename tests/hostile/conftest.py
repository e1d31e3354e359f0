"""A real coordinator (in this process, on a loop of its own) behind a private broker
from the project's config, and a host publishing to it with its own credential.

Every check follows one pattern: publish what is under test, then a *sentinel* (the
host's own retained birth status again, unchanged) from the same connection. The broker
delivers one publisher's QoS 1 messages in order, so once the coordinator counted the
sentinel it has handled everything before it: no sleeps, no timing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import msgspec
import pytest

from coordinator.daemon.service import Coordinator
from coordinator.devfleet.broker import BrokerError, LocalBroker, free_port, mosquitto_binary
from coordinator.engine.state import encode_saved
from coordinator.setup.credentials import COORDINATOR_USER, OPERATOR_USER
from shared import topics
from shared.config import CoordinatorConfig
from shared.config.common import MqttConfig
from shared.messages import HostStatus, encode
from shared.mqtt import make_client
from tests.conftest import service_missing

T = TypeVar("T")
HOST = "host-a"
OTHER = "host-b"
WAIT = 20.0


def mqtt(server: LocalBroker, user: str) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1",
        port=server.port,
        username=user,
        password_file=str(server.password_file(user)),
        keepalive=5,
        reconnect_min=0.1,
        reconnect_max=1.0,
    )


def birth(host: str = HOST, *, seq: int = 1, time_: float | None = None) -> HostStatus:
    return HostStatus(
        host=host,
        online=True,
        session=1,
        seq=seq,
        environment="production",
        version="1.0.0",
        labels={"zone": "a"},
        time=time.time() if time_ is None else time_,
    )


class Live:
    """The running coordinator, driven from the test's thread."""

    def __init__(self, server: LocalBroker, directory: Path, *, sentinel_host: str = HOST) -> None:
        self.server = server
        self.sentinel_host = sentinel_host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config = msgspec.convert(
            {
                "node": "hostile",
                "state_dir": str(directory / "state"),
                "mqtt": msgspec.to_builtins(mqtt(server, COORDINATOR_USER)),
                "http": {"listen": "127.0.0.1", "port": free_port()},
                "engine": {"housekeeping": 0.5},
            },
            CoordinatorConfig,
        )
        self.coordinator: Coordinator = self.call(self._make)
        self.host: aiomqtt.Client = self.call(lambda: self._connect(sentinel_host))
        self.status = birth(sentinel_host)
        self._sentinel = encode(self.status)
        self.call(lambda: self._publish(topics.status(sentinel_host), self._sentinel, retain=True))
        self.wait(
            lambda: self.coordinator.hosts.get(sentinel_host) is not None, "the sentinel's birth"
        )
        self.wait(lambda: self.coordinator.session.connected, "the coordinator's session")
        self.connection = self.inside(lambda: self.coordinator.session._client)

    # -- the loop --------------------------------------------------------------

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(WAIT)

    def inside(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self.call(run)

    async def _make(self) -> Coordinator:
        coordinator = Coordinator(self.config)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(coordinator.run(self._stop))
        return coordinator

    async def _connect(self, host: str) -> aiomqtt.Client:
        client = make_client(mqtt(self.server, host), identifier=host)
        await client.__aenter__()
        return client

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.host.publish(topic, payload, qos=1, retain=retain, timeout=10)

    def wait(self, condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.inside(lambda: bool(condition())):
                return
            time.sleep(0.02)
        raise TimeoutError(f"timed out waiting for {what}")

    # -- what the tests use ----------------------------------------------------

    def counter(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.coordinator.telemetry.registry.get_sample_value(name, labels or {})
        return value or 0.0

    def rejected(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in self.coordinator.telemetry.rejected.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
        return out

    def handler_errors(self) -> float:
        return sum(
            s.value
            for m in self.coordinator.telemetry.handler_errors.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )

    def state(self) -> bytes:
        """Everything a message could change: the registry's hosts (but when they were
        last seen) and the engine's snapshot (but its clock)."""

        def read() -> bytes:
            entries = [
                (e.record, e.activity.checks, e.activity.batches, e.activity.last_seq)
                for e in self.coordinator.hosts.entries()
            ]
            engine = self.coordinator.engine
            snapshot = b""
            if engine is not None:
                snapshot = encode_saved(msgspec.structs.replace(engine.saved(), time=0.0))
            return msgspec.json.encode(entries) + snapshot

        return self.inside(read)

    def send(self, messages: list[tuple[str, bytes, bool]]) -> None:
        """Publish ``(topic, payload, retain)`` from host-a, then the sentinel, and
        return once the coordinator has handled the sentinel."""
        before = self.counter("rollguard_messages_ingested_total", {"kind": "status"})

        async def publish_all() -> None:
            for topic, payload, retain in messages:
                await self._publish(topic, payload, retain=retain)
            await self._publish(topics.status(self.sentinel_host), self._sentinel, retain=True)

        self.call(publish_all)
        self.wait(
            lambda: self.counter("rollguard_messages_ingested_total", {"kind": "status"}) > before,
            "the sentinel",
        )

    def still_connected(self) -> bool:
        """The coordinator's MQTT connection is the very one it opened at the start."""
        return self.inside(
            lambda: (
                self.coordinator.session.connected
                and self.coordinator.session._client is self.connection
            )
        )

    async def retained(self, topic: str) -> bytes | None:
        """What a new subscriber gets as the retained message on ``topic`` (None: none).
        The host's own status follows as a sentinel: the broker sends retained
        messages in subscription order."""
        client = make_client(mqtt(self.server, OPERATOR_USER), identifier="probe")
        async with client:
            await client.subscribe(topic, qos=1)
            sentinel = topics.COORDINATOR_STATUS
            await client.subscribe(sentinel, qos=1)
            async with asyncio.timeout(WAIT):
                async for message in client.messages:
                    if message.topic.value == sentinel:
                        return None
                    if message.topic.value == topic:
                        return bytes(message.payload)
        return None

    def close(self) -> None:
        async def stop() -> None:
            self._stop.set()
            await asyncio.wait_for(self._task, WAIT)
            await self.host.__aexit__(None, None, None)

        try:
            self.call(stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    directory = tmp_path_factory.mktemp("hostile")
    server = LocalBroker(directory / "broker", [HOST, OTHER])
    try:
        server.start()
    except BrokerError as exc:
        service_missing(f"a private mosquitto ({exc})")
    try:
        running = Live(server, directory)
    except BaseException:
        server.stop()
        raise
    try:
        running.wait(lambda: running.coordinator.active, "the engine")
        yield running
    finally:
        running.close()
        server.stop()
