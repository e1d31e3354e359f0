"""The probe: an ``_operator`` subscriber that timestamps, on arrival, every host's
metrics and commands, the command results and the coordinator's events.

Subscribed to metrics from the start, so a breaching batch's arrival here times one
broker hop on a connection already carrying traffic (as the coordinator's is).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import msgspec

from coordinator.setup.credentials import OPERATOR_USER
from coordinator_ingest_bench.children import ChildServer
from coordinator_ingest_bench.lite_mqtt import LiteMqtt, keepalive_loop, lite_connect
from coordinator_ingest_bench.sim_agents import broker_password
from shared import topics
from shared.errors import MessageError
from shared.messages import Command, CommandResult, Event, MetricBatch, decode

_EVENT_DECODER = msgspec.json.Decoder(Event)


class Probe:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.port = spec["port"]
        self.secrets = spec["secrets"]
        self.client: LiteMqtt | None = None
        self.rollback_cmds: dict[str, list[float]] = {}  # deployment -> arrival times
        self.command_dep: dict[str, str] = {}  # rollback command id -> deployment
        self.acks: dict[str, list[float]] = {}  # deployment -> succeeded arrival times
        # (deployment or host, kind) -> arrival times of the events published on it.
        self.events: dict[tuple[str, str], list[float]] = {}
        self.metrics: dict[tuple[str, int], float] = {}
        self._changed = asyncio.Event()

    async def start(self) -> dict[str, Any]:
        self.client = LiteMqtt(
            client_id="bench-probe",
            username=OPERATOR_USER,
            password=broker_password(self.secrets, OPERATOR_USER),
            on_message=self.on_message,
        )
        await lite_connect(self.port, self.client)
        # Metrics too, from the start, so a breaching batch's arrival here times one
        # broker hop on a connection already carrying traffic (as the coordinator's is).
        for topic in (
            f"{topics.PREFIX}/hosts/+/cmd",
            topics.ALL_RESULTS,
            topics.EVENTS,
            topics.ALL_METRICS,
        ):
            await self.client.subscribe(topic)
        self._keepalive = asyncio.create_task(
            keepalive_loop(lambda: [self.client] if self.client else [])
        )
        return {}

    def on_message(self, topic: bytes, payload: bytes) -> None:
        now = time.monotonic()
        try:
            self._record(topic, payload, now)
        except (MessageError, msgspec.DecodeError) as exc:
            print(f"probe: undecodable message on {topic!r}: {exc}", file=sys.stderr)
        self._changed.set()

    def _record(self, topic: bytes, payload: bytes, now: float) -> None:
        if topic.endswith(b"/cmd"):
            command = decode(Command, payload)
            if command.action == "rollback":
                self.rollback_cmds.setdefault(command.deployment, []).append(now)
                self.command_dep[command.id] = command.deployment
        elif topic.endswith(b"/cmd/result"):
            result = decode(CommandResult, payload)
            dep = self.command_dep.get(result.id)
            if dep is not None and result.state == "succeeded":
                self.acks.setdefault(dep, []).append(now)
        elif topic.endswith(b"/metrics"):
            batch = decode(MetricBatch, payload)
            self.metrics.setdefault((batch.host, batch.seq), now)
        else:
            # Not shared.messages.decode: a rollback's event can carry more evidence
            # than the 64 KiB inbound limit (the probe only needs who and what).
            event = _EVENT_DECODER.decode(payload)
            key = event.deployment or event.host
            if key is not None:
                self.events.setdefault((key, event.kind), []).append(now)

    async def wait_event(
        self, key: str, kinds: list[str], after: float = 0.0, within: float = 30.0
    ) -> dict[str, Any]:
        """The first event of one of ``kinds`` about ``key`` (a deployment or a host)
        arriving after ``after``."""
        deadline = time.monotonic() + within
        while True:
            for kind in kinds:
                times = [t for t in self.events.get((key, kind), []) if t > after]
                if times:
                    return {"kind": kind, "t": times[0]}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = sorted(k for d, k in self.events if d == key)
                raise TimeoutError(f"no {kinds} for {key}; saw {seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def report(
        self, deployment: str, host: str, seqs: list[int], acks: int = 0, within: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while len(self.acks.get(deployment, [])) < acks and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)
        cmds = self.rollback_cmds.get(deployment, [])
        got = self.acks.get(deployment, [])
        return {
            "rollback_cmds": len(cmds),
            "first_cmd": min(cmds) if cmds else None,
            "last_cmd": max(cmds) if cmds else None,
            "acks": len(got),
            "last_ack": max(got) if got else None,
            "seen": [self.metrics.get((host, seq)) for seq in seqs],
            "events": {k: t[0] for (d, k), t in self.events.items() if d == deployment},
        }

    async def quit(self) -> dict[str, Any]:
        if self.client is not None:
            self.client.disconnect()
        return {}


async def run_probe(spec: dict[str, Any]) -> None:
    probe = Probe(spec)
    await ChildServer(
        {
            "start": probe.start,
            "wait_event": probe.wait_event,
            "report": probe.report,
            "quit": probe.quit,
        }
    ).serve()
