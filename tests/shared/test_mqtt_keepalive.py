"""An idle client wakes only when a keepalive ping is due (not every second, as
aiomqtt's own loop does), and the broker still keeps it: idle across several
keepalive periods, it stays connected and publishes."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from shared import topics
from shared.mqtt import make_client
from tests.conftest import Broker

pytestmark = pytest.mark.integration


async def test_an_idle_client_keeps_its_connection_with_pings_when_due(broker: Broker) -> None:
    config = msgspec.structs.replace(broker.mqtt("host-a"), keepalive=5)
    async with make_client(config, identifier="keepalive-test") as client:
        paho = client._client
        pings_before = paho._last_msg_out
        # Three keepalive periods without a message of ours: only pings go out. The
        # broker drops a client silent for 1.5 keepalives, so it must have pinged.
        await asyncio.sleep(16)
        assert paho._last_msg_out > pings_before
        assert paho.is_connected()
        await client.publish(topics.metrics("host-a"), b"{}", qos=1)
