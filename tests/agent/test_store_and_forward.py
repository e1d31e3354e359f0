"""Store-and-forward with the real agent process and the real broker: a broker outage
and an agent restart lose nothing, duplicate nothing, and keep sample times."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from shared import topics
from shared.messages import MetricBatch, decode
from tests.agent.conftest import Listener, listening
from tests.conftest import Broker
from tests.processes import mqtt_table, public_key, running, script, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
METRICS = topics.metrics("host-a")


def config_file(tmp: Path, broker: Broker) -> Path:
    return write_config(
        tmp / "agent.toml",
        {
            "host": "host-a",
            "state_dir": str(tmp / "state"),
            "public_key_file": public_key(tmp),
            "mqtt": mqtt_table(broker.mqtt("host-a")),
            "log": {"level": "info"},
            "publish": {"linger": 0.05},
            "checks": {
                "jitter": 0.0,
                "cpu": {"interval": 0.2},
                "memory": {"interval": 0.2},
                "disk": {"enabled": False},
                "system": {"enabled": False},
            },
        },
    )


def batches(*listeners: Listener) -> list[MetricBatch]:
    return [decode(MetricBatch, p) for listener in listeners for p in listener.on(METRICS)]


def assert_exactly_once_in_order(received: list[MetricBatch]) -> None:
    seqs = [b.seq for b in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gaps or duplicates: {seqs}"
    # Each check's samples keep their original, rising times across the whole run.
    for check in ("cpu", "memory"):
        times = [s.time for b in received for s in b.samples if s.check == check]
        assert times == sorted(times) and len(set(times)) == len(times)


async def test_broker_outage_loses_and_duplicates_nothing(broker: Broker, tmp_path: Path) -> None:
    config = config_file(tmp_path, broker)
    with running(
        [*script("rollguard-agent"), "--config", str(config)], tmp_path / "agent.log"
    ) as agent:
        async with listening(broker.operator(), [METRICS], "before") as before:
            await before.wait(lambda: len(before.messages) >= 5, 20)
            broker.server.stop()
            down_at = time.time()
            await asyncio.sleep(0.2)  # the listener notices the broker is gone
        await asyncio.sleep(2.0)  # ~20 ticks of cpu and memory samples buffered
        # Keep the agent from reconnecting until the listener is back: samples the broker
        # forwards before anyone subscribes are not the agent's to keep.
        agent.send_signal(signal.SIGSTOP)
        try:
            broker.server.start()
            up_at = time.time()
            async with listening(broker.operator(), [METRICS], "after") as after:
                agent.send_signal(signal.SIGCONT)
                last_before = max(b.seq for b in batches(before))
                await after.wait(
                    lambda: any(s.time > up_at + 1 for b in batches(after) for s in b.samples),
                    20,
                )
        finally:
            agent.send_signal(signal.SIGCONT)
    received = batches(before, after)
    assert_exactly_once_in_order(received)
    buffered = [b for b in batches(after) if all(s.time < up_at for s in b.samples)]
    # What the agent measured while the broker was down arrived, with its own times.
    assert len(buffered) >= 10
    assert buffered[0].seq == last_before + 1
    assert all(down_at - 0.5 <= s.time < up_at for b in buffered for s in b.samples)
    # Buffered batches keep the session they were sealed in; new ones carry the new one.
    assert batches(after)[-1].session > batches(before)[0].session


async def test_buffer_survives_an_agent_restart(broker: Broker, tmp_path: Path) -> None:
    config = config_file(tmp_path, broker)
    argv = [*script("rollguard-agent"), "--config", str(config)]
    async with listening(broker.operator(), [METRICS], "first") as first:
        with running(argv, tmp_path / "agent.log") as agent:
            await first.wait(lambda: len(first.messages) >= 3, 20)
            broker.server.stop()
            await asyncio.sleep(1.5)
            # Stopped while the broker is down: it exits promptly all the same.
            began = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(agent.wait, 10) == 0
            assert time.monotonic() - began < 5.0
    # Its buffer is on disk.
    stopped_at = time.time()
    broker.server.start()
    async with listening(broker.operator(), [METRICS], "second") as second:
        with running(argv, tmp_path / "agent2.log"):
            await second.wait(
                lambda: any(s.time > stopped_at for b in batches(second) for s in b.samples), 20
            )
    received = batches(first, second)
    assert_exactly_once_in_order(received)
    replayed = [b for b in batches(second) if all(s.time < stopped_at for s in b.samples)]
    assert len(replayed) >= 5
