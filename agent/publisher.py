"""The agent's MQTT side: birth and Will, the buffer's drain, the command subscription.

Every connect raises the persisted session counter first; the Will is the birth status
of that session with ``online=false``, so a late Will from an old connection can never
mark a reborn agent offline. After CONNACK the retained birth status goes out, then the
``cmd`` subscription (a persistent MQTT session keeps commands sent during a short
disconnect), then the pump: command results first, then metric batches oldest first,
each published at QoS 1 and deleted from the store only after the broker's PUBACK.
A batch in flight when the connection drops stays in the store and is sent again
after the reconnect, with its original sequence number and sample times. A batch or
result the broker accepted with PUBACK reason 0x10 ("No matching subscribers": no
coordinator session exists yet, say right after a broker restart) reached nobody: it
stays in the store and is sent again after a backoff (``mqtt.reconnect_min`` doubling
to ``mqtt.reconnect_max``), ahead of everything newer.

Statuses carry ``seq``, rising within a session, so the coordinator orders them
without trusting this host's clock. The client id is the host's broker username (the
broker replaces it: ``use_username_as_clientid``).

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
from typing import Any, Final

import aiomqtt

from agent import __version__
from agent.events import wait_event
from agent.store import Store
from agent.watchdog import Heartbeat
from shared import topics
from shared.config.agent import AgentConfig
from shared.messages import HostStatus, Slot, encode
from shared.mqtt import QOS, Backoff, make_client, offline_copy, run_forever, will_for

log = logging.getLogger(__name__)
# Commands sent while the agent is briefly away wait at the broker this long.
COMMAND_SESSION_EXPIRY: Final = 3600
# With nothing to send the loop waits this long at a time (parked for the watchdog),
# or until wake(), status_changed() or finish().
IDLE_WAIT: Final = 3600.0
OFFLINE_TIMEOUT: Final = 0.8
# PUBACK reason "No matching subscribers" (MQTT 5): accepted, delivered to nobody.
NO_MATCHING_SUBSCRIBERS: Final = 0x10
# While holding back for that, the loop still wakes (and beats its heartbeat) this often.
RETRY_BEAT: Final = 5.0


class _Acks:
    """The PUBACK reason code of the latest publish, which aiomqtt does not return.

    Installed on the paho client under an aiomqtt client: records the message id of
    each publish and the reason code of each acknowledgement. The pump publishes one
    message at a time, so "the code of the message just acknowledged" is unambiguous.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self.codes: dict[int, int] = {}
        self.last_mid = -1
        paho = client._client  # aiomqtt hides the reason code
        inner_publish = paho.publish
        inner_on_publish: Any = paho.on_publish

        def publish(*args: Any, **kwargs: Any) -> Any:
            info = inner_publish(*args, **kwargs)
            self.last_mid = info.mid
            return info

        def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
            value = getattr(reason_code, "value", reason_code)
            self.codes[mid] = int(value) if isinstance(value, int) else 0
            if len(self.codes) > 1024:
                self.codes.clear()
            if inner_on_publish is not None:
                inner_on_publish(c, userdata, mid, reason_code, props)

        paho.publish = publish  # type: ignore[method-assign]
        paho.on_publish = on_publish

    def last_code(self) -> int:
        return self.codes.pop(self.last_mid, 0)


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
        self._status_seq = 0
        self._acks: _Acks | None = None
        self._unheard = Backoff(config.mqtt.reconnect_min, config.mqtt.reconnect_max)
        self._retry_at = 0.0
        # Publishes the broker accepted for no subscriber (kept and sent again).
        self.unheard = 0

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
        self._status_seq += 1
        return HostStatus(
            host=self.host,
            online=online,
            session=self.session,
            seq=self._status_seq,
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
        self._status_seq = 0
        will = will_for(self._status_topic, offline_copy(self.status(), time.time()))
        client = make_client(
            self.config.mqtt,
            identifier=self.config.mqtt.username or self.host,
            will=will,
            session_expiry=COMMAND_SESSION_EXPIRY,
        )
        self._acks = _Acks(client)
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        self.connected = True
        try:
            await self._publish(client, self._status_topic, encode(self.status()), retain=True)
            self._status_dirty = False
            await client.subscribe(self._cmd_topic, qos=QOS, timeout=self._publish_timeout)
            log.info(
                "session %d: birth status published, subscribed to %s",
                self.session,
                self._cmd_topic,
            )
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
            log.warning("stopping with %d batches still buffered; they go out after restart", left)
        offline = offline_copy(self.status(), time.time())
        with contextlib.suppress(aiomqtt.MqttError):
            await self._publish(
                client, self._status_topic, encode(offline), retain=True, ack_within=OFFLINE_TIMEOUT
            )
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
                await self._publish(client, self._status_topic, encode(self.status()), retain=True)
                continue
            if (wait := self._retry_at - time.monotonic()) > 0 and not finishing:
                # The last one reached no subscriber: keep everything, try again later.
                await wait_event(self._wake, min(wait, RETRY_BEAT))
                continue
            result = self.store.oldest_result()
            if result is not None:
                if await self._publish(client, self._result_topic, result[1]):
                    self.store.ack_result(result[0])
                continue
            batch = self.store.oldest_batch()
            if batch is not None:
                if await self._publish(client, self._metrics_topic, batch[1]):
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
    ) -> bool:
        """Publish at QoS 1 once the broker acknowledged it; False when it reached no
        subscriber (PUBACK 0x10) and must be kept and sent again after a backoff."""
        if ack_within is None:
            ack_within = self._publish_timeout
            if self._finishing.is_set():
                ack_within = max(0.1, min(ack_within, self._finish_by - time.monotonic()))
        await client.publish(topic, payload, qos=QOS, retain=retain, timeout=ack_within)
        if retain or self._acks is None or self._acks.last_code() != NO_MATCHING_SUBSCRIBERS:
            self._unheard.reset()
            self._retry_at = 0.0
            return True
        self.unheard += 1
        delay = self._unheard.next()
        self._retry_at = time.monotonic() + delay
        log.warning(
            "%s reached no subscriber (no coordinator session at the broker); "
            "kept, sending again in %.1fs",
            topic,
            delay,
        )
        return False
