"""Who a client is at the broker: its username (``use_username_as_clientid``), and its
session survives a broker restart (``persistence``).

Against the project's real mosquitto.conf and ACL. A displaced client is detected
without timing: after the intruder's CONNACK, the victim publishes at QoS 1 and the
broker must acknowledge it (a taken-over connection is closed by the broker before it
acknowledges the intruder's CONNECT, so the victim's publish would fail).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from coordinator.setup import install
from coordinator.setup.credentials import (
    COORDINATOR_USER,
    CredentialError,
    coordinator_user,
    reader_user,
    render_acl,
)
from shared import topics
from shared.config.common import MqttConfig
from shared.mqtt import make_client
from tests.conftest import Broker

pytestmark = pytest.mark.integration


@asynccontextmanager
async def connected(
    config: MqttConfig, identifier: str, *, session_expiry: int = 0
) -> AsyncIterator[aiomqtt.Client]:
    async with make_client(config, identifier=identifier, session_expiry=session_expiry) as c:
        yield c


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(10):
        return await anext(client.messages)


async def still_connected(client: aiomqtt.Client, topic: str) -> None:
    """Publish at QoS 1 and wait for the PUBACK: only a live connection gets one."""
    await client.publish(topic, b"{}", qos=1, timeout=5)


async def test_a_host_using_another_hosts_client_id_cannot_displace_it(broker: Broker) -> None:
    async with connected(broker.mqtt("web-1"), "rollguard-agent-web-1") as victim:
        # web-2's own password, web-1's client id: the broker makes it "web-2".
        async with connected(broker.mqtt("web-2"), "rollguard-agent-web-1") as intruder:
            await still_connected(intruder, topics.metrics("web-2"))
            await still_connected(victim, topics.metrics("web-1"))
        # And the id the victim asked for never mattered either: web-1's own id.
        async with connected(broker.mqtt("web-2"), "web-1"):
            await still_connected(victim, topics.metrics("web-1"))


async def test_a_host_cannot_take_over_the_coordinators_session(broker: Broker) -> None:
    async with connected(broker.coordinator(), "rollguard-coordinator-demo") as coordinator:
        await coordinator.subscribe(topics.ALL_METRICS, qos=1)
        for identifier in ("rollguard-coordinator-demo", COORDINATOR_USER):
            async with connected(broker.mqtt("web-3"), identifier) as intruder:
                await intruder.publish(topics.metrics("web-3"), b"probe", qos=1, timeout=5)
                message = await next_message(coordinator)
                assert message.topic.value == topics.metrics("web-3")
                assert message.payload == b"probe"


async def test_two_readers_with_their_own_credentials_coexist(broker: Broker) -> None:
    async with (
        connected(broker.operator(), "dashboard") as first,
        connected(broker.service(reader_user("second")), "dashboard") as second,
        connected(broker.mqtt("host-a"), "host-a") as host,
    ):
        await first.subscribe("rollguard/v1/#", qos=1)
        await second.subscribe("rollguard/v1/#", qos=1)
        await host.publish(topics.metrics("host-a"), b"both", qos=1)
        for reader in (first, second):
            message = await next_message(reader)
            assert (message.topic.value, message.payload) == (topics.metrics("host-a"), b"both")
        # A reader writes nothing: its publish is dropped, the first reader sees only
        # the sentinel the host sends after it.
        await second.publish(topics.cmd("host-a"), b"forged", qos=1)
        await host.publish(topics.metrics("host-a"), b"sentinel", qos=1)
        message = await next_message(first)
        assert (message.topic.value, message.payload) == (topics.metrics("host-a"), b"sentinel")


async def test_the_two_coordinators_of_an_ha_pair_coexist(broker: Broker) -> None:
    alpha_config = broker.service(coordinator_user("alpha"))
    beta_config = broker.service(coordinator_user("beta"))
    async with (
        connected(alpha_config, "rollguard-coordinator") as alpha,
        connected(beta_config, "rollguard-coordinator") as beta,
    ):
        for client, host in ((alpha, "web-1"), (beta, "web-2")):
            await client.publish(topics.cmd(host), b"{}", qos=1, timeout=5)
        await still_connected(alpha, topics.EVENTS)
        await still_connected(beta, topics.EVENTS)


async def test_a_subscription_and_its_queued_messages_survive_a_broker_restart(
    broker: Broker,
) -> None:
    """The coordinator's session (clean_start false, session expiry) is persisted: a
    batch published while the subscriber is away, then the broker restarted, still
    reaches it, and so does one published after the restart before it reconnects."""
    async with connected(broker.coordinator(), "coord", session_expiry=300) as coord:
        await coord.subscribe(topics.ALL_METRICS, qos=1)
    async with connected(broker.mqtt("host-a"), "host-a") as host:
        await host.publish(topics.metrics("host-a"), b"before", qos=1)
    broker.server.restart()
    async with connected(broker.mqtt("host-a"), "host-a") as host:
        await host.publish(topics.metrics("host-a"), b"after", qos=1)
    async with connected(broker.coordinator(), "coord", session_expiry=300) as coord:
        payloads = [(await next_message(coord)).payload for _ in range(2)]
    assert payloads == [b"before", b"after"]


def test_service_users_are_named_by_rule() -> None:
    assert coordinator_user("alpha") == "_coordinator-alpha"
    assert reader_user("grafana") == "_operator-grafana"
    for bad in ("", "a b", "x/y", "+", "#", "a" * 65):
        with pytest.raises(CredentialError):
            reader_user(bad)
    acl = render_acl(
        "user _coordinator\ntopic readwrite rollguard/v1/#\n",
        ["_coordinator", "_coordinator-alpha", "_operator-grafana", "web-1"],
    )
    assert "user _coordinator-alpha\ntopic readwrite rollguard/v1/#" in acl
    assert "user _operator-grafana\ntopic read rollguard/v1/#" in acl
    assert acl.count("user _coordinator\n") == 1
    assert "web-1" not in acl


def test_setup_broker_gives_each_coordinator_and_reader_a_credential(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("setting owners needs root (tests/install/test_rehearsal runs it in CI)")
    directory = tmp_path / "broker"
    install.run(
        install.broker_plan(
            directory,
            ["web-1"],
            user="nobody",
            coordinator_nodes=["coord-a", "coord-b"],
            reader_names=["grafana"],
        ),
        dry_run=False,
        echo=lambda _: None,
    )
    users = {line.partition(":")[0] for line in (directory / "passwd").read_text().splitlines()}
    assert users == {
        "_coordinator",
        "_operator",
        "_coordinator-coord-a",
        "_coordinator-coord-b",
        "_operator-grafana",
        "web-1",
    }
    acl = (directory / "acl").read_text()
    assert "user _coordinator-coord-b\ntopic readwrite rollguard/v1/#" in acl
    assert "user _operator-grafana\ntopic read rollguard/v1/#" in acl
    assert (directory / "_operator-grafana.password").exists()
