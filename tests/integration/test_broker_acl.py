"""The broker enforces who may publish and read what (mosquitto.conf + deploy/mosquitto/acl).

Negative cases use a sentinel: after a forbidden publish the same client publishes on a
topic it may write. Mosquitto handles one connection's packets in order, so once the
sentinel reaches the listener, the forbidden message would already have arrived if the
broker had let it through. No sleeps, no timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from shared import topics
from shared.config.common import MqttConfig
from shared.mqtt import make_client
from tests.conftest import Broker

pytestmark = pytest.mark.integration


@asynccontextmanager
async def connected(config: MqttConfig, name: str) -> AsyncIterator[aiomqtt.Client]:
    async with make_client(config, identifier=name) as client:
        yield client


async def received_until(client: aiomqtt.Client, sentinel: str) -> list[str]:
    """Topics received up to and including ``sentinel``."""
    seen: list[str] = []
    async with asyncio.timeout(5):
        async for message in client.messages:
            seen.append(message.topic.value)
            if message.topic.value == sentinel:
                return seen
    return seen


async def test_anonymous_clients_are_refused(broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError, match=r"Not authorized|Bad user name or password"):
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5, timeout=5
        ):
            pass


async def test_a_wrong_password_is_refused(broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            username="host-a",
            password="guess",
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=5,
        ):
            pass


async def test_a_host_writes_only_its_own_topics(broker: Broker) -> None:
    async with connected(broker.coordinator(), "coord") as coord:
        await coord.subscribe("rollguard/v1/#", qos=1)
        async with connected(broker.mqtt("host-a"), "host-a") as host_a:
            forbidden = [
                topics.metrics("host-b"),
                topics.status("host-b"),
                topics.cmd_result("host-b"),
                topics.cmd("host-a"),
                topics.cmd("host-b"),
                topics.EVENTS,
                topics.COORDINATOR_STATUS,
            ]
            for topic in forbidden:
                await host_a.publish(topic, b"{}", qos=1)
            allowed = [
                topics.status("host-a"),
                topics.cmd_result("host-a"),
                topics.metrics("host-a"),
            ]
            for topic in allowed:
                await host_a.publish(topic, b"{}", qos=1)
            seen = await received_until(coord, topics.metrics("host-a"))
    assert seen == allowed


async def test_a_host_reads_only_its_own_commands(broker: Broker) -> None:
    async with (
        connected(broker.coordinator(), "coord") as coord,
        connected(broker.mqtt("host-a"), "host-a") as host_a,
        connected(broker.mqtt("host-b"), "host-b") as host_b,
    ):
        # Mosquitto grants the subscription and filters on delivery, so the proof is
        # what arrives, not the SUBACK.
        await host_a.subscribe("rollguard/v1/#", qos=1)
        await host_b.subscribe(topics.cmd("host-b"), qos=1)
        await coord.publish(topics.cmd("host-b"), b"for-b", qos=1)
        await coord.publish(topics.status("host-b"), b"b-status", qos=1)
        await coord.publish(topics.cmd("host-a"), b"for-a", qos=1)
        seen_by_a = await received_until(host_a, topics.cmd("host-a"))
        async with asyncio.timeout(5):
            message = await anext(host_b.messages)
    assert seen_by_a == [topics.cmd("host-a")]
    assert message.topic.value == topics.cmd("host-b")
    assert message.payload == b"for-b"


async def test_the_coordinator_writes_commands_events_and_its_status(broker: Broker) -> None:
    async with (
        connected(broker.coordinator(), "coord") as coord,
        connected(broker.operator(), "operator") as operator,
    ):
        await operator.subscribe("rollguard/v1/#", qos=1)
        published = [topics.cmd("web-1"), topics.EVENTS, topics.COORDINATOR_STATUS]
        for topic in published:
            await coord.publish(topic, b"{}", qos=1)
        seen = await received_until(operator, topics.COORDINATOR_STATUS)
    assert seen == published


async def test_an_operator_reads_everything_and_writes_nothing(broker: Broker) -> None:
    async with (
        connected(broker.coordinator(), "coord") as coord,
        connected(broker.operator(), "operator") as operator,
    ):
        await coord.subscribe("rollguard/v1/#", qos=1)
        for topic in (
            topics.cmd("host-a"),
            topics.EVENTS,
            topics.metrics("host-a"),
            topics.status("web-1"),
        ):
            await operator.publish(topic, b"{}", qos=1)
        # The operator's publishes were acknowledged (QoS 1), so the broker had already
        # routed or dropped them before it sees the coordinator's sentinel.
        await coord.publish(topics.EVENTS, b"sentinel", qos=1)
        seen = await received_until(coord, topics.EVENTS)
    assert seen == [topics.EVENTS]
