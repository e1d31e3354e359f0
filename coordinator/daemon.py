"""The coordinator daemon: the IO shell around the decisions.

It keeps one MQTT session (reconnecting with backoff), validates every inbound
message before it touches state, keeps the fleet view, publishes its own retained
status with a Will, and serves the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiomqtt
from aiohttp import web

from coordinator.api import build_app
from coordinator.hostview import HostRegistry
from coordinator.ingest import parse_inbound
from coordinator.telemetry import Telemetry
from shared import topics
from shared.config import CoordinatorConfig
from shared.errors import ConfigError, MessageError
from shared.messages import CommandResult, CoordinatorStatus, HostStatus, MetricBatch, encode
from shared.mqtt import QOS, make_client, run_forever, will_for

log = logging.getLogger("rollguard.coordinator")
TOKEN_NAME: Final = "api.token"
# Keep our broker session (and QoS 1 results addressed to us) across a short outage.
SESSION_EXPIRY: Final = 300
PUBLISH_TIMEOUT: Final = 5.0


def load_or_create_token(config: CoordinatorConfig) -> str:
    """The API token from ``http.token_file``, or one generated in the state directory."""
    if config.http.token_file:
        path = Path(config.http.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"http.token_file {path}: {exc.strerror or exc}") from exc
        if len(token) < 16:
            raise ConfigError(f"http.token_file {path}: token must be at least 16 characters")
        return token
    path = Path(config.state_dir) / TOKEN_NAME
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


class Coordinator:
    def __init__(
        self, config: CoordinatorConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.hosts = HostRegistry()
        self.telemetry = Telemetry()
        self.mqtt_connected = False
        self._client: aiomqtt.Client | None = None

    # -- inbound -----------------------------------------------------------------

    def receive(self, topic: str, payload: bytes) -> None:
        """Validate and apply one inbound message; a bad one is counted and logged."""
        now = self.clock()
        try:
            message = parse_inbound(topic, payload)
        except MessageError as exc:
            self.telemetry.rejected.labels(exc.reason).inc()
            log.warning("rejected message: %s", exc)
            return
        if isinstance(message, HostStatus):
            self.telemetry.ingested.labels("status").inc()
            view = self.hosts.apply_status(message, now)
            if view is not None:
                log.info(
                    "host %s %s (session %d, version %s)",
                    message.host,
                    "online" if message.online else "offline",
                    message.session,
                    message.version,
                )
            self.telemetry.hosts_online.set(self.hosts.online_count())
        elif isinstance(message, MetricBatch):
            self.telemetry.ingested.labels("metrics").inc()
            self.hosts.apply_batch(message, now)
        elif isinstance(message, CommandResult):
            self.telemetry.ingested.labels("cmd_result").inc()

    # -- readiness ---------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.mqtt_connected, {"broker": self.mqtt_connected}

    # -- MQTT --------------------------------------------------------------------

    def _status(self, online: bool) -> CoordinatorStatus:
        return CoordinatorStatus(
            online=online, node=self.config.node, leader=True, time=self.clock()
        )

    def _make_client(self) -> aiomqtt.Client:
        return make_client(
            self.config.mqtt,
            identifier=f"rollguard-coordinator-{self.config.node}",
            will=will_for(topics.COORDINATOR_STATUS, self._status(False)),
            session_expiry=SESSION_EXPIRY,
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        for topic in (topics.ALL_STATUS, topics.ALL_METRICS, topics.ALL_RESULTS):
            await client.subscribe(topic, qos=QOS)
        await client.publish(
            topics.COORDINATOR_STATUS, encode(self._status(True)), qos=QOS, retain=True
        )
        self._client = client
        self.mqtt_connected = True
        try:
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                self.receive(message.topic.value, bytes(payload))
        except asyncio.CancelledError:
            # Graceful stop: say we are offline before the Will would.
            try:
                await asyncio.wait_for(
                    client.publish(
                        topics.COORDINATOR_STATUS, encode(self._status(False)), qos=QOS, retain=True
                    ),
                    PUBLISH_TIMEOUT,
                )
            except (aiomqtt.MqttError, TimeoutError):
                log.warning("could not publish the offline status on shutdown")
            raise
        finally:
            self.mqtt_connected = False
            self._client = None

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        token = load_or_create_token(self.config)
        runner = web.AppRunner(build_app(self, token), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.http.listen, self.config.http.port)
        await site.start()
        log.info("HTTP API on http://%s:%d", self.config.http.listen, self.config.http.port)
        try:
            await run_forever(
                self.config.mqtt, self._make_client, self._session, stop=stop, name="coordinator"
            )
        finally:
            await runner.cleanup()
