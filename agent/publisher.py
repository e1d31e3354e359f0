"""The agent's MQTT side: birth and Will, the buffer's drain, the command subscription.

Every connect raises the persisted session counter first; the Will is the birth status
of that session with ``online=false``, so a late Will from an old connection can never
mark a reborn agent offline. After CONNACK the retained birth status goes out, then the
``cmd`` subscription (a persistent MQTT session keeps commands sent during a short
disconnect), then the pump: command results first, then metric batches oldest first,
each published at QoS 1 and deleted from the store only after the broker's PUBACK.
A batch in flight when the connection drops stays in the store and is sent again
after the reconnect, with its original sequence number and sample times.

On shutdown the pump drains what it can within ``publish.flush_timeout``, publishes
the offline status (same session, retained) and returns; the MQTT loop then
disconnects cleanly, which tells the broker not to send the Will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

import aiomqtt

from agent import __version__
from agent.events import wait_event
from agent.store import Store
from agent.watchdog import Heartbeat
from shared import topics
from shared.config.agent import AgentConfig
from shared.messages import HostStatus, Slot, encode
from shared.mqtt import QOS, make_client, offline_copy, run_forever, will_for

log = logging.getLogger(__name__)
# Commands sent while the agent is briefly away wait at the broker this long.
COMMAND_SESSION_EXPIRY: Final = 3600
# With nothing to send the loop waits this long at a time (parked for the watchdog),
# or until wake(), status_changed() or finish().
IDLE_WAIT: Final = 3600.0
OFFLINE_TIMEOUT: Final = 0.8


class Publisher:
    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        *,
        heartbeat: Heartbeat,
        active: Callable[[], tuple[str | None, Slot | None]],
        on_command: Callable[[bytes], None],
    ) -> None:
        self.config = config
        self.host = config.host
        self.store = store
        self.heartbeat = heartbeat
        self._active = active
        self._on_command = on_command
        self.session = store.session
        self.connected = False
        self.published = 0
        self._wake = asyncio.Event()
        self._finishing = asyncio.Event()
        self._finish_by = 0.0
        self._status_dirty = False
        self._status_topic = topics.status(self.host)
        self._metrics_topic = topics.metrics(self.host)
        self._cmd_topic = topics.cmd(self.host)
        self._result_topic = topics.cmd_result(self.host)
        self._publish_timeout = config.mqtt.connect_timeout

    # -- called by the rest of the agent --------------------------------------------

    def wake(self) -> None:
        """New batches or results are in the store."""
        self._wake.set()

    def status_changed(self) -> None:
        """The active version or slot changed: re-publish the retained status."""
        self._status_dirty = True
        self._wake.set()

    def finish(self, *, by: float) -> None:
        """Drain until monotonic time ``by`` at most, go offline, end the session."""
        self._finish_by = by
        self._finishing.set()
        self._wake.set()

    def status(self, *, online: bool = True) -> HostStatus:
        version, slot = self._active()
        return HostStatus(
            host=self.host,
            online=online,
            session=self.session,
            environment=self.config.environment,
            version=version,
            slot=slot,
            labels=dict(self.config.labels),
            agent_version=__version__,
            time=time.time(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and reconnect until the session ends after :meth:`finish`, or ``stop``."""
        await run_forever(self.config.mqtt, self._client, self._session, stop=stop, name="agent")

    # -- the connection -------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        self.heartbeat.beat("mqtt")
        self.session = self.store.next_session()
        will = will_for(self._status_topic, offline_copy(self.status(), time.time()))
        return make_client(
            self.config.mqtt,
            identifier=f"rollguard-agent-{self.host}",
            will=will,
            session_expiry=COMMAND_SESSION_EXPIRY,
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        self.connected = True
        try:
            await self._publish(client, self._status_topic, encode(self.status()), retain=True)
            self._status_dirty = False
            await client.subscribe(self._cmd_topic, qos=QOS, timeout=self._publish_timeout)
            log.info("session %d: birth status published, subscribed to %s",
                     self.session, self._cmd_topic)
            receiver = asyncio.create_task(self._receive(client), name="mqtt-receive")
            pump = asyncio.create_task(self._pump(client), name="mqtt-pump")
            try:
                done, _ = await asyncio.wait({receiver, pump}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (receiver, pump):
                    task.cancel()
                await asyncio.gather(receiver, pump, return_exceptions=True)
            for task in done:
                task.result()  # a dropped connection surfaces here as MqttError
        finally:
            self.connected = False

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                self._on_command(bytes(payload))
            else:
                self._on_command(str(payload).encode())

    async def _pump(self, client: aiomqtt.Client) -> None:
        try:
            await self._drain(client)
        except aiomqtt.MqttError:
            if not self._finishing.is_set():
                raise
            log.warning("broker connection failed while flushing on shutdown")
            return
        if (left := self.store.batch_count()) > 0:
            log.warning("stopping with %d batches still buffered; they go out after restart",
                        left)
        offline = offline_copy(self.status(), time.time())
        with contextlib.suppress(aiomqtt.MqttError):
            await self._publish(client, self._status_topic, encode(offline), retain=True,
                                ack_within=OFFLINE_TIMEOUT)
            log.info("session %d: offline status published", self.session)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Send until the store is empty, then wait for more; return when finishing and
        the store is empty or the flush time is up."""
        while True:
            self.heartbeat.beat("mqtt")
            self._wake.clear()
            finishing = self._finishing.is_set()
            if finishing and time.monotonic() >= self._finish_by:
                return
            if self._status_dirty:
                self._status_dirty = False
                await self._publish(client, self._status_topic, encode(self.status()),
                                    retain=True)
                continue
            result = self.store.oldest_result()
            if result is not None:
                await self._publish(client, self._result_topic, result[1])
                self.store.ack_result(result[0])
                continue
            batch = self.store.oldest_batch()
            if batch is not None:
                await self._publish(client, self._metrics_topic, batch[1])
                self.store.ack_batch(batch[0])
                self.published += 1
                continue
            if finishing:
                return
            self.heartbeat.park("mqtt")
            await wait_event(self._wake, IDLE_WAIT)

    async def _publish(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        ack_within: float | None = None,
    ) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it."""
        if ack_within is None:
            ack_within = self._publish_timeout
            if self._finishing.is_set():
                ack_within = max(0.1, min(ack_within, self._finish_by - time.monotonic()))
        await client.publish(topic, payload, qos=QOS, retain=retain, timeout=ack_within)
