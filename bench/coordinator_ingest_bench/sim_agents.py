"""Simulated agents: many hosts in one process, one ``LiteMqtt`` connection each.

They speak the real wire contract: payloads are ``shared.messages`` structs encoded
with ``shared.messages.encode`` on the real topics, each host logged in as its own
broker user (so the load goes through the ACL as a fleet's would). A command is decoded
with ``shared.messages.decode`` and answered ``accepted`` then ``succeeded`` with the
new version, then a retained status with that version (signatures are not verified).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import time
from pathlib import Path
from typing import Any

from coordinator.setup.credentials import password_path
from coordinator_ingest_bench.children import ChildServer
from coordinator_ingest_bench.lite_mqtt import LiteMqtt, keepalive_loop, lite_connect
from shared import topics
from shared.errors import MessageError
from shared.messages import (
    Command,
    CommandResult,
    HostStatus,
    MetricBatch,
    ResultState,
    Sample,
    Slot,
    decode,
    encode,
)

STABLE = "1.0.0"
ZONES = ("a", "b", "c")


def broker_password(directory: str, user: str) -> str:
    """The password ``LocalBroker`` generated for ``user`` in ``directory``."""
    return password_path(Path(directory), user).read_text(encoding="utf-8").strip()


APP_VALUES = {
    "requests": 5.0,
    "errors": 0.0,
    "error_rate": 0.0,
    "responses": 5.0,
    "latency_ms": 21.0,
    "p50_ms": 20.4,
    "p95_ms": 24.9,
    "p99_ms": 24.9,
}
APP_LATENCIES = [18.2, 19.7, 20.4, 21.8, 24.9]
BREACH_VALUES = {
    "requests": 200.0,
    "errors": 100.0,
    "error_rate": 0.5,
    "responses": 200.0,
    "latency_ms": 30.0,
    "p50_ms": 25.0,
    "p95_ms": 60.0,
    "p99_ms": 90.0,
}


class SimHost:
    __slots__ = (
        "answers",
        "client",
        "name",
        "seq",
        "session",
        "slot",
        "t_cmd",
        "t_metrics",
        "t_result",
        "t_status",
        "version",
        "zone",
    )

    def __init__(self, name: str, zone: str, session: int) -> None:
        self.name = name
        self.zone = zone
        self.session = session
        self.seq = 0
        self.version: str | None = STABLE
        self.slot: Slot | None = None
        self.answers: dict[str, bytes] = {}
        self.client: LiteMqtt | None = None
        prefix = f"{topics.PREFIX}/hosts/{name}/"
        self.t_status = (prefix + "status").encode()
        self.t_metrics = (prefix + "metrics").encode()
        self.t_result = (prefix + "cmd/result").encode()
        self.t_cmd = prefix + "cmd"

    def status(self, online: bool = True) -> bytes:
        return encode(
            HostStatus(
                host=self.name,
                online=online,
                session=self.session,
                environment="production",
                version=self.version,
                slot=self.slot,
                labels={"zone": self.zone},
                agent_version="bench",
                time=time.time(),
            )
        )

    def batch(self, *checks: str, breach: bool = False) -> bytes:
        now = time.time()
        samples = []
        for check in checks:
            if check == "application":
                samples.append(
                    Sample(
                        check="application",
                        time=now,
                        ok=True,
                        values=BREACH_VALUES if breach else APP_VALUES,
                        latencies_ms=APP_LATENCIES,
                        error="100 of 200 probes failed: HTTP 500 x100" if breach else None,
                    )
                )
            else:
                samples.append(
                    Sample(
                        check=check,
                        time=now,
                        ok=True,
                        values={"percent": 12.5 if check == "cpu" else 41.0, "cores": 2.0},
                    )
                )
        self.seq += 1
        return encode(
            MetricBatch(host=self.name, session=self.session, seq=self.seq, samples=samples)
        )

    def on_command(self, _topic: bytes, payload: bytes) -> None:
        client = self.client
        assert client is not None
        try:
            command = decode(Command, payload)
        except MessageError:
            return
        if command.host != self.name:
            return
        again = self.answers.get(command.id)
        if again is not None:  # idempotent by id: the first answer, nothing run
            client.publish(self.t_result, again)
            return
        client.publish(self.t_result, self._result(command.id, "accepted"))
        if command.action in ("deploy", "rollback") and command.version is not None:
            self.version = command.version
        if command.action == "switch" or (command.action == "rollback" and command.slot):
            self.slot = command.slot
        final = self._result(command.id, "succeeded")
        self.answers[command.id] = final
        client.publish(self.t_result, final)
        client.publish(self.t_status, self.status(), retain=True)

    def _result(self, command_id: str, state: ResultState) -> bytes:
        return encode(
            CommandResult(
                id=command_id,
                host=self.name,
                state=state,
                version=self.version,
                slot=self.slot,
                time=time.time(),
            )
        )


class Agents:
    """Many simulated hosts in one process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port = spec["port"]
        self.secrets = spec["secrets"]
        self.hosts: list[SimHost] = []
        self.by_name: dict[str, SimHost] = {}
        self.sent = 0
        self.connect_errors = 0
        self._space = asyncio.Event()
        self._periodic: asyncio.Task[None] | None = None
        # Reporting at intervals: (application, cpu and memory) seconds, and a heap of
        # (due, tie-breaker, check, host) with every host's next sample of each check.
        self._intervals = (10.0, 60.0)
        self._heap: list[tuple[float, int, str, SimHost]] = []
        self._counter = 0
        self._keepalive = asyncio.create_task(
            keepalive_loop(lambda: [h.client for h in self.hosts if h.client is not None])
        )
        self._rng = random.Random(spec.get("seed", 1))

    def _acked(self) -> None:
        self._space.set()

    async def connect(
        self, hosts: list[str], subscribe: bool = True, rate: float = 0.0
    ) -> dict[str, Any]:
        """Connect ``hosts`` (at most ``rate`` new connections a second if given), each
        publishing its birth status and a first round of samples."""
        session = int(time.time())
        semaphore = asyncio.Semaphore(64)
        new: list[SimHost] = []
        start = time.monotonic()
        offset = len(self.hosts)

        async def one(index: int, name: str) -> None:
            if rate > 0:
                await asyncio.sleep(max(0.0, start + (index - offset) / rate - time.monotonic()))
            host = SimHost(name, ZONES[index % len(ZONES)], session)
            client = self._client(host)
            async with semaphore:
                for attempt in range(5):
                    try:
                        await lite_connect(self.port, client)
                        break
                    except (OSError, RuntimeError, TimeoutError):
                        if attempt == 4:
                            self.connect_errors += 1
                            return
                        await asyncio.sleep(0.2 * (attempt + 1))
                        client = self._client(host)
                if subscribe:
                    await client.subscribe(host.t_cmd)
                client.publish(host.t_status, host.status(), retain=True)
                # Like an agent's first round: every check reports once at start.
                client.publish(host.t_metrics, host.batch("application", "cpu", "memory"))
                self.sent += 2
            new.append(host)

        await asyncio.gather(*(one(offset + i, name) for i, name in enumerate(hosts)))
        new.sort(key=lambda h: h.name)
        self.hosts.extend(new)
        self.by_name.update((h.name, h) for h in new)
        if self._periodic is not None:  # hosts added while reporting report too
            self._schedule(new)
        return {"connected": len(new), "errors": self.connect_errors}

    def _client(self, host: SimHost) -> LiteMqtt:
        """A connection for ``host`` (not yet connected), logged in as its own user."""
        client = LiteMqtt(
            client_id=f"rollguard-agent-{host.name}",
            username=host.name,
            password=broker_password(self.secrets, host.name),
            keepalive=120,
            will=(host.t_status, host.status(online=False)),
            on_message=host.on_command,
            on_ack=self._acked,
        )
        host.client = client
        return client

    def _live(self) -> list[SimHost]:
        return [h for h in self.hosts if h.client is not None and not h.client.lost]

    # -- reporting at intervals
    async def start_periodic(self, app: float, system: float) -> dict[str, Any]:
        self._intervals = (app, system)
        self._heap = []
        self._schedule(self.hosts)
        self._periodic = asyncio.create_task(self._run_periodic())
        return {}

    def _schedule(self, hosts: list[SimHost]) -> None:
        now = time.monotonic()
        app, system = self._intervals
        for host in hosts:
            for check, interval in (("application", app), ("cpu", system), ("memory", system)):
                self._counter += 1
                due = now + self._rng.uniform(0, interval)
                heapq.heappush(self._heap, (due, self._counter, check, host))

    async def _run_periodic(self) -> None:
        app, system = self._intervals
        heap = self._heap
        while True:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, _, check, host = heapq.heappop(heap)
                client = host.client
                if client is not None and not client.lost:
                    client.publish(host.t_metrics, host.batch(check))
                    self.sent += 1
                self._counter += 1
                interval = app if check == "application" else system
                heapq.heappush(heap, (due + interval, self._counter, check, host))
            delay = heap[0][0] - time.monotonic() if heap else 0.5
            await asyncio.sleep(max(0.001, delay))

    async def stop_periodic(self) -> dict[str, Any]:
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
            self._periodic = None
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        clients = [h.client for h in self.hosts if h.client is not None]
        return {
            "sent": self.sent,
            "acked": sum(c.acked for c in clients),
            "refused": sum(c.refused for c in clients),
            "backlog": sum(c.backlog for c in clients),
            "lost": sum(1 for c in clients if c.lost),
            "hosts": len(self.hosts),
            "t": time.monotonic(),
        }

    # -- load at a fixed rate (0: as fast as the broker acknowledges)
    async def load(self, duration: float, rate: float = 0.0) -> dict[str, Any]:
        hosts = self._live()
        started = time.monotonic()
        end = started + duration
        sent0, acked0 = self.sent, sum(h.client.acked for h in hosts if h.client)
        index = 0
        per_host_cap = 20
        while time.monotonic() < end:
            budget = 200
            if rate > 0:
                due = int(rate * (time.monotonic() - started)) - (self.sent - sent0)
                budget = min(budget, due)
            published = 0
            for _ in range(len(hosts)):
                if published >= budget:
                    break
                host = hosts[index]
                index = (index + 1) % len(hosts)
                client = host.client
                assert client is not None
                if client.backlog < per_host_cap:
                    client.publish(host.t_metrics, host.batch("application"))
                    self.sent += 1
                    published += 1
            if published == 0:
                self._space.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._space.wait(), 0.01 if rate > 0 else 0.5)
            else:
                await asyncio.sleep(0)
        elapsed = time.monotonic() - started
        acked = sum(h.client.acked for h in hosts if h.client) - acked0
        return {"sent": self.sent - sent0, "acked": acked, "elapsed": elapsed}

    # -- a breach, and healthy samples after it
    async def breach(self, host: str, count: int = 3, healthy: bool = False) -> dict[str, Any]:
        sim = self.by_name[host]
        client = sim.client
        assert client is not None
        payloads = [sim.batch("application", breach=not healthy) for _ in range(count)]
        seqs = list(range(sim.seq - count + 1, sim.seq + 1))
        times = []
        for payload in payloads:
            times.append(time.monotonic())
            client.publish(sim.t_metrics, payload)
        self.sent += count
        return {"seqs": seqs, "times": times}

    async def quit(self) -> dict[str, Any]:
        if self._periodic is not None:
            self._periodic.cancel()
        self._keepalive.cancel()
        for host in self.hosts:
            if host.client is not None:
                host.client.disconnect()
        await asyncio.sleep(0.2)
        return {}


async def run_agents(spec: dict[str, Any]) -> None:
    agents = Agents(spec)
    server = ChildServer(
        {
            "connect": agents.connect,
            "start_periodic": agents.start_periodic,
            "stop_periodic": agents.stop_periodic,
            "stats": agents.stats,
            "load": agents.load,
            "breach": agents.breach,
            "quit": agents.quit,
        }
    )
    await server.serve()
