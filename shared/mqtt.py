"""MQTT 5 connections on aiomqtt 2.x: credentials from a file, TLS, a Will, and a
reconnect loop with capped exponential backoff and full jitter."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import aiomqtt
import msgspec
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.config.common import MqttConfig, TlsConfig
from shared.messages import HostStatus, Message, encode

QOS: Final = 1
MQTT_ERR_SUCCESS: Final = MQTTErrorCode.MQTT_ERR_SUCCESS
# A keepalive check due "now" still waits this long: no busy loop on a clock tie.
MISC_MIN_SLEEP: Final = 0.05
# paho leaves Nagle's algorithm on: a small packet (a command, a PUBACK, a result)
# written while an earlier one is unacknowledged then waits for the peer's delayed ACK,
# up to 40 ms on Linux, which stalls every publish that awaits its PUBACK.
SOCKET_OPTIONS: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
log = logging.getLogger(__name__)


class Backoff:
    """Delays that double from ``minimum`` up to ``maximum``, each drawn uniformly from
    [0, current] (full jitter) so a fleet that lost its broker does not return at once."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._current = minimum
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        delay = self._rng.uniform(self._minimum / 2, self._current)
        self._current = min(self._current * 2, self._maximum)
        return delay

    def reset(self) -> None:
        self._current = self._minimum


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def will_for(topic: str, message: Message, *, retain: bool = True) -> aiomqtt.Will:
    return aiomqtt.Will(topic=topic, payload=encode(message), qos=QOS, retain=retain)


def make_client(
    cfg: MqttConfig,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    session_expiry: int = 0,
    max_queued_incoming: int | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """A configured, not yet connected client (enter it with ``async with``).

    ``session_expiry`` > 0 keeps the broker session (and QoS 1 messages for our
    subscriptions) that many seconds across a disconnect.
    """
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry:
        properties.SessionExpiryInterval = session_expiry
    client = aiomqtt.Client(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=cfg.read_password(),
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        keepalive=cfg.keepalive,
        timeout=cfg.connect_timeout,
        clean_start=session_expiry == 0,
        properties=properties,
        tls_context=tls_context(cfg.tls) if cfg.tls else None,
        max_queued_incoming_messages=max_queued_incoming,
        queue_type=queue_type,
        socket_options=SOCKET_OPTIONS,
    )
    # aiomqtt runs paho's loop_misc every second; it only has work when a keepalive
    # ping or its answer is due. Waking when that is due makes an idle client cost
    # nothing between pings (bench/agent_footprint).
    client._misc_loop = functools.partial(_keepalive_loop, client._client)  # type: ignore[method-assign]
    return client


async def _keepalive_loop(paho: Any) -> None:
    """paho's ``loop_misc`` (keepalive pings, a missing PINGRESP) when it is due, as
    paho's own bookkeeping (monotonic, like paho's clock) says, not every second."""
    while paho.loop_misc() == MQTT_ERR_SUCCESS:
        keepalive = float(paho._keepalive) or 60.0
        due = min(paho._last_msg_out, paho._last_bytes_received) + keepalive
        if paho._ping_t > 0:
            due = min(due, paho._ping_t + keepalive)
        await asyncio.sleep(min(max(due - time.monotonic(), MISC_MIN_SLEEP), keepalive))


Session = Callable[[aiomqtt.Client], Coroutine[Any, Any, None]]


async def run_forever(
    cfg: MqttConfig,
    client_factory: Callable[[], aiomqtt.Client],
    session: Session,
    *,
    stop: asyncio.Event,
    name: str = "mqtt",
) -> None:
    """Connect, run ``session`` until it returns or the connection drops, and
    reconnect with backoff until ``stop`` is set. ``session`` is cancelled on stop."""
    backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
    while not stop.is_set():
        try:
            async with client_factory() as client:
                backoff.reset()
                log.info("%s: connected to %s:%d", name, cfg.host, cfg.port)
                task = asyncio.create_task(session(client))
                stopper = asyncio.create_task(stop.wait())
                try:
                    done, _ = await asyncio.wait(
                        {task, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    stopper.cancel()
                    if not task.done():
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                if task in done:
                    task.result()  # re-raises a dropped connection as MqttError
                return
        except aiomqtt.MqttError as exc:
            delay = backoff.next()
            log.warning("%s: broker connection lost (%s); retrying in %.1fs", name, exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


def offline_copy(status: HostStatus, now: float) -> HostStatus:
    """The Will / shutdown form of a birth status: same session, online=False."""
    return msgspec.structs.replace(status, online=False, time=now)
