"""The coordinator's one MQTT session: subscribe, hand every inbound message to the
service as paho reads it, publish commands, events and the retained coordinator status.

The session reconnects with backoff (``shared.mqtt.run_forever``); while it is down
nothing is published and the outbox re-publishes unanswered commands once it is back.
The broker keeps the session (``clean_start`` false, ``SESSION_EXPIRY``; with the
broker's persistence, across a broker restart too), so batches published while the
coordinator is away wait for it at the broker. The client id is the coordinator's
broker username (the broker enforces it: ``use_username_as_clientid``), which is why
each coordinator of an HA pair has its own. Subscriptions are ``no_local``: what the
coordinator itself publishes on a host topic (restoring a retained status a host
spoiled, clearing a retained batch) never comes back to it as a host's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Final

import aiomqtt
import msgspec
from paho.mqtt.subscribeoptions import SubscribeOptions

from coordinator.daemon.pipeline import PUBLISH_WINDOW
from shared import topics
from shared.config import CoordinatorConfig
from shared.messages import MAX_PAYLOAD, CoordinatorStatus, Event, encode
from shared.mqtt import QOS, make_client, run_forever, will_for

log = logging.getLogger("rollguard.coordinator")
# Keep our broker session (and QoS 1 results addressed to us) across a short outage.
SESSION_EXPIRY: Final = 300
PUBLISH_TIMEOUT: Final = 5.0


class BrokerSession:
    """The MQTT side of the daemon.

    ``receive(topic, payload)`` is called for every inbound message, in the order paho
    reads them; ``unanswered()`` gives the commands to publish again on every connect;
    ``leading()`` says what the retained status tells the fleet.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        *,
        clock: Callable[[], float],
        receive: Callable[[str, bytes, bool], None],
        unanswered: Callable[[], Iterable[tuple[str, bytes]]],
        leading: Callable[[], bool],
    ) -> None:
        self._config = config
        self._clock = clock
        self._receive = receive
        self._unanswered = unanswered
        self._leading = leading
        self._client: aiomqtt.Client | None = None
        self.connected = False

    async def run(self, stop: asyncio.Event) -> None:
        await run_forever(
            self._config.mqtt, self._make_client, self._serve, stop=stop, name="coordinator"
        )

    def _status(self, online: bool) -> CoordinatorStatus:
        return CoordinatorStatus(
            online=online,
            node=self._config.node,
            leader=online and self._leading(),
            time=self._clock(),
        )

    def _make_client(self) -> aiomqtt.Client:
        client = make_client(
            self._config.mqtt,
            identifier=self._config.mqtt.username or f"rollguard-coordinator-{self._config.node}",
            will=will_for(topics.COORDINATOR_STATUS, self._status(False)),
            session_expiry=SESSION_EXPIRY,
            queue_type=_inbox(self._deliver),
        )
        # The pipeline publishes a step's commands PUBLISH_WINDOW at a time; aiomqtt's
        # default threshold (10) logged a warning for each of them.
        client.pending_calls_threshold = 4 * PUBLISH_WINDOW
        return client

    def _deliver(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        self._receive(message.topic.value, bytes(payload), bool(message.retain))

    async def publish_command(self, host: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            return  # the outbox re-publishes once we are connected again
        try:
            await client.publish(topics.cmd(host), payload, qos=QOS, timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish a command to %s (will retry): %s", host, exc)

    async def publish_event(self, event: Event) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.publish(topics.EVENTS, wire_event(event), qos=QOS, timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish event %d: %s", event.seq, exc)

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """Replace (or, with an empty payload, clear) the retained message on a topic."""
        client = self._client
        if client is None:
            return
        try:
            await client.publish(topic, payload, qos=QOS, retain=True, timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            log.warning("could not replace the retained message on %s: %s", topic, exc)

    async def publish_status(self) -> None:
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    topics.COORDINATOR_STATUS,
                    encode(self._status(True)),
                    qos=QOS,
                    retain=True,
                    timeout=PUBLISH_TIMEOUT,
                )

    async def _serve(self, client: aiomqtt.Client) -> None:
        options = SubscribeOptions(qos=QOS, noLocal=True)
        for topic in (topics.ALL_STATUS, topics.ALL_METRICS, topics.ALL_RESULTS):
            await client.subscribe(topic, options=options, timeout=PUBLISH_TIMEOUT)
        self._client = client
        self.connected = True
        await self.publish_status()
        for host, payload in self._unanswered():
            await self.publish_command(host, payload)
        try:
            # Messages are handled as paho reads them (see _inbox); iterating only
            # waits for the connection to drop.
            async for _ in client.messages:
                pass
        except asyncio.CancelledError:
            # Graceful stop: say we are offline before the Will would.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(
                    topics.COORDINATOR_STATUS,
                    encode(self._status(False)),
                    qos=QOS,
                    retain=True,
                    timeout=PUBLISH_TIMEOUT,
                )
            raise
        finally:
            self.connected = False
            self._client = None


def _inbox(deliver: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's queue of incoming messages, replaced by handling each one as paho
    reads it.

    Through aiomqtt's iterator every message cost a task and several turns of the event
    loop, in each of which paho read one more: offered 6,000 messages a second, the
    queue grew without bound (memory, and decisions on ever older data) while ingest
    fell under 1,000 a second. Handled as read, the coordinator keeps up with 6,000, and
    a burst waits in the socket and at the broker (TCP backpressure). A ``receive`` that
    raises leaves its message unacknowledged and drops the connection (the session loop
    reconnects); before, it ended the daemon.
    """

    class Inbox(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            deliver(item)

    return Inbox


def wire_event(event: Event) -> bytes:
    """The event as published on ``rollguard/v1/events``, within the 64 KiB every
    receiver enforces: a decision over a large fleet can carry more evidence than that,
    so its evidence is then left out and pointed at (the API serves it whole)."""
    payload = encode(event)
    if len(payload) <= MAX_PAYLOAD:
        return payload
    return encode(
        msgspec.structs.replace(
            event,
            evidence={
                "truncated": True,
                "bytes": len(payload),
                "see": f"/api/v1/deployments/{event.deployment}/events"
                if event.deployment
                else "/api/v1/events",
            },
        )
    )
