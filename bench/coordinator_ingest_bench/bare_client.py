"""The bare aiomqtt receiver the coordinator's ingest is compared with.

``shared.mqtt.make_client`` with the coordinator's own client settings (minus its
session), uvloop, the read-only ``_operator`` user: it subscribes to the coordinator's
three topics and only counts what arrives.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from coordinator.setup.credentials import OPERATOR_USER, password_path
from coordinator_ingest_bench.children import ChildServer
from shared import topics
from shared.config.common import MqttConfig
from shared.mqtt import make_client


async def run_bare(spec: dict[str, Any]) -> None:
    count = 0
    ready = asyncio.Event()
    config = MqttConfig(
        host="127.0.0.1",
        port=spec["port"],
        username=OPERATOR_USER,
        keepalive=30,
        password_file=str(password_path(Path(spec["secrets"]), OPERATOR_USER)),
    )

    async def receive() -> None:
        nonlocal count
        async with make_client(config, identifier="bench-bare") as client:
            for topic in (topics.ALL_STATUS, topics.ALL_METRICS, topics.ALL_RESULTS):
                await client.subscribe(topic, qos=1)
            ready.set()
            async for _message in client.messages:
                count += 1

    task = asyncio.create_task(receive())

    async def wait_ready() -> dict[str, Any]:
        await asyncio.wait_for(ready.wait(), 30)
        return {}

    async def counted() -> dict[str, Any]:
        if task.done():
            task.result()
        return {"count": count, "t": time.monotonic()}

    async def quit() -> dict[str, Any]:
        task.cancel()
        return {}

    await ChildServer({"ready": wait_ready, "count": counted, "quit": quit}).serve()
