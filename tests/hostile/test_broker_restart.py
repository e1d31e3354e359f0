"""No sample lost across a broker restart (issue 11, item 3).

A real agent process publishes to a private broker (the project's config: persistence
on) and a real coordinator. Every batch the agent sealed must reach the coordinator:
its sequence numbers, which rise by one per batch, arrive without a gap, each handled
as a new batch once. Two ways to lose them before: the broker restarted without
persistence (the coordinator's session gone), and an agent that flushed its backlog to
no subscriber (PUBACK 0x10) deleted it anyway.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.store import Store
from coordinator.devfleet.broker import BrokerError, LocalBroker, mosquitto_binary
from shared.messages import MetricBatch
from tests.conftest import service_missing
from tests.hostile.conftest import HOST, Live, mqtt
from tests.processes import mqtt_table, public_key, running, script, wait_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGENT = "host-b"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalBroker]:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    broker = LocalBroker(tmp_path / "broker", [HOST, AGENT])
    try:
        broker.start()
    except BrokerError as exc:
        service_missing(f"a private mosquitto ({exc})")
    try:
        yield broker
    finally:
        broker.stop()


def agent_config(tmp: Path, server: LocalBroker) -> Path:
    table = mqtt_table(mqtt(server, AGENT))
    return write_config(
        tmp / "agent.toml",
        {
            "host": AGENT,
            "environment": "production",
            "labels": {"zone": "a"},
            "state_dir": str(tmp / "agent-state"),
            "public_key_file": public_key(tmp),
            "mqtt": table,
            "log": {"level": "info", "format": "json"},
            "publish": {"linger": 0.1},
            "checks": {
                "jitter": 0.0,
                "cpu": {"interval": 0.2},
                "memory": {"interval": 0.2},
                "disk": {"interval": 0.5},
            },
        },
    )


class Received:
    """The agent's batches as the coordinator handled them, in order."""

    def __init__(self, live: Live) -> None:
        self.seqs: list[int] = []
        coordinator = live.coordinator
        apply = coordinator._apply

        def recording(message: Any, now: float) -> None:
            if isinstance(message, MetricBatch) and message.host == AGENT:
                self.seqs.append(message.seq)
            apply(message, now)

        live.inside(lambda: setattr(coordinator, "_apply", recording))


def sealed(tmp: Path) -> tuple[int, set[int]]:
    """What the (stopped) agent sealed: the last sequence number, and the batches it
    still keeps on disk to send at its next start (one in a backoff when it stopped)."""
    store = Store.open(str(tmp / "agent-state"))
    try:
        kept = {int(seq) for (seq,) in store._db.execute("SELECT seq FROM batches")}
        return store._int("next_seq", 1) - 1, kept
    finally:
        store.close()


def check_every_batch_arrived(received: Received, tmp: Path, live: Live) -> None:
    """Every batch the agent sealed arrived, or is still kept by the agent (a batch it
    sealed, or was to send again, just before it stopped: not lost, sent at its next
    start)."""
    last, kept = sealed(tmp)
    assert last > 0
    everything = set(range(1, last + 1))
    live.wait(lambda: set(received.seqs) | kept >= everything, f"all {last} batches")
    assert set(received.seqs) | kept == everything
    # At least once on the wire; the engine takes each once (it drops a repeat by
    # session and sequence number).
    print(f"{last} batches published, {len(received.seqs)} deliveries, {len(kept)} kept")


def test_no_batch_is_lost_when_the_broker_restarts_mid_stream(
    server: LocalBroker, tmp_path: Path
) -> None:
    live = Live(server, tmp_path, sentinel_host=HOST)
    try:
        received = Received(live)
        with running(
            [*script("rollguard-agent"), "--config", str(agent_config(tmp_path, server))],
            tmp_path / "agent.log",
        ) as agent:
            live.wait(lambda: len(received.seqs) >= 5, "the agent's first batches")
            server.stop()
            # The agent goes on sealing batches while the broker is away.
            time.sleep(1.5)
            server.start()
            before = len(received.seqs)
            live.wait(lambda: len(received.seqs) >= before + 10, "batches after the restart")
            agent.send_signal(signal.SIGTERM)
            agent.wait(10)
        check_every_batch_arrived(received, tmp_path, live)
        assert live.still_connected() or live.inside(lambda: live.coordinator.session.connected)
    finally:
        live.close()


def test_batches_published_before_any_coordinator_session_are_kept_and_resent(
    server: LocalBroker, tmp_path: Path
) -> None:
    """No coordinator session at the broker yet: the broker accepts each batch for no
    subscriber (PUBACK 0x10). The agent keeps them and sends them again once one is
    there, oldest first."""
    log = tmp_path / "agent.log"
    with running(
        [*script("rollguard-agent"), "--config", str(agent_config(tmp_path, server))], log
    ) as agent:
        wait_for(lambda: "reached no subscriber" in log.read_text(), 20, "a PUBACK 0x10")
        live = Live(server, tmp_path, sentinel_host=HOST)
        try:
            received = Received(live)
            live.wait(lambda: len(received.seqs) >= 5, "the kept batches")
            agent.send_signal(signal.SIGTERM)
            agent.wait(10)
            check_every_batch_arrived(received, tmp_path, live)
        finally:
            live.close()
