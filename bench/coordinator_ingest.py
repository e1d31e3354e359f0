#!/usr/bin/env python3
"""Coordinator ingest benchmark: one JSON line with the four figures of design section 6.

Everything runs as real processes on this machine: a private Mosquitto started from the
project's ``mosquitto.conf`` with the real password file and ACL (``LocalBroker``), the
real ``rollguard-coordinator`` process (SQLite store in the run's temporary directory),
and simulated agents in separate processes. Credentials: every simulated host gets its
own broker user (``LocalBroker(directory, hosts)`` = ``credentials.generate``), so the
load goes through the ACL exactly as a fleet's would (a host writes only its own
topics); the receivers use the ``_operator`` user (read-only). No bench-only ACL user.

Simulated agents are light asyncio MQTT 5 clients (``LiteMqtt`` below: CONNECT with a
Will and credentials, QoS 1 PUBLISH with the broker's receive maximum respected,
SUBSCRIBE, PUBACK, PINGREQ), one TCP connection per host, many hosts per process. They
speak the real wire contract: payloads are ``shared.messages`` structs encoded with
``shared.messages.encode`` on the real topics; a command is decoded with
``shared.messages.decode`` and answered ``accepted`` then ``succeeded`` with the new
version, then a retained status with that version (signatures are not verified).
Why not aiomqtt per host: paho + aiomqtt cost tens of microseconds per packet and a
timer task per client, which for 10,000 connections on two cores would leave little
CPU for the coordinator under test.

Figures (all times from ``time.monotonic``, which is system-wide on Linux):

1. ``ingest``: 4 load processes x 50 hosts publish valid ``MetricBatch`` payloads (an
   application sample each) at fixed offered rates, stepped up (``--ingest-rates``,
   default 2,000 to 8,000 a second, 5 s windows after a 2 s warm-up). In the same run a
   bare aiomqtt client (``shared.mqtt.make_client``, the coordinator's own client
   settings, uvloop, ``_operator``) subscribes to the coordinator's three topics and
   only counts. Per step: the coordinator's rate from its ``/metrics`` counter
   ``rollguard_messages_ingested_total``, the bare client's from its count, and each
   process's CPU per message. ``coordinator_msgs_per_s`` / ``bare_client_msgs_per_s``
   are the highest rate each sustained over the steps, ``ratio`` their quotient;
   ``cpu_cost_ratio`` = bare CPU per message / coordinator CPU per message at the
   highest step both kept up with (what the ratio would be if each had a core of its
   own and nothing else limited it).
2. ``breach_to_rollback_ms``: 1,000 hosts reporting at the guide's intervals; a canary
   deployment (10 %: 100 hosts) is started through ``POST /api/v1/deployments``; once
   it bakes (its ``deployment.acked`` event), one canary host's agent publishes a burst
   of 3 breaching batches (each alone over the error-rate threshold). A probe
   (``_operator``, subscribed to every host's metrics and commands) timestamps arrivals.
   ``raw`` = first breaching batch's publish -> first rollback ``cmd`` at the probe;
   ``broker_hop`` = that batch's publish -> its arrival at the probe (one broker hop,
   measured per run); ``corrected`` = raw - 2 x broker_hop: from the batch's arrival at
   the coordinator to the command's publish. Repeated ``--deployments`` times (40).
3. ``rollback_all_acked_s``: a direct deployment to all 1,000 hosts, a breach, a
   rollback command to every host; from the breaching publish to the last of the 1,000
   ``succeeded`` results arriving at the probe (``from_breach``; also from the first
   rollback command's arrival), and to the coordinator's ``deployment.rollback_done``
   event (every host confirmed and stored). ``--fleet-rollbacks`` runs (6).
4. ``fleet``: N agents (4 processes, one connection each) publishing at the guide's
   intervals (application every 10 s, cpu and memory every 60 s, random phases); N
   stepped 5,000, 10,000, 15,000, new agents connecting at ``--connect-rate`` (1,000 a
   second). A level holds when every agent is online at the coordinator, the ingest lag
   (acknowledged publishes minus ingested, sampled every second, in seconds of traffic)
   stays under ``LAG_LIMIT_S``, no connection dropped, the coordinator process stays
   under ``CPU_LIMIT_PCT`` of one core over the window, and nothing is lost (after
   publishing stops, every acknowledged publish is counted as ingested).

Between phases the broker restarts (no retained statuses carry over) and each phase
runs its own coordinator with a fresh state directory. The broker runs the project's
``mosquitto.conf`` unchanged; the bench raises its own ``RLIMIT_NOFILE`` to the hard
limit, which the broker and the children inherit.

``--quick`` runs tiny sizes (for the smoke test); ``-v`` logs progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


import msgspec  # noqa: E402

from shared import topics  # noqa: E402
from shared.errors import MessageError  # noqa: E402
from shared.messages import (  # noqa: E402
    Command,
    CommandResult,
    Event,
    HostStatus,
    MetricBatch,
    ResultState,
    Sample,
    Slot,
    decode,
    encode,
)

TARGET_RATIO = 0.8
TARGET_ROLLBACK_P99_MS = 50.0
TARGET_ACK_P99_S = 1.0
TARGET_FLEET = 10_000
LAG_LIMIT_S = 2.0
# The alerts' rate window in the rollback phase: short, so a breached host's alert
# resolves soon after it reports healthy again and the next deployment can start.
ALERT_WINDOW = 0.5
CPU_LIMIT_PCT = 85.0
STABLE = "1.0.0"
ZONES = ("a", "b", "c")
VERBOSE = False


def say(*parts: Any) -> None:
    if VERBOSE:
        print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (p99 of 40 values is the largest but none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# -- a light MQTT 5 client ------------------------------------------------------------


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _s(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _pkt(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _vbi(len(body)) + body


def _read_vbi(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    value, mult = 0, 1
    while pos < len(buf):
        byte = buf[pos]
        value += (byte & 0x7F) * mult
        pos += 1
        if not byte & 0x80:
            return value, pos
        mult *= 128
    return None


# CONNACK property id -> size (int bytes, or "s" string / "b" binary / "p" string pair).
_PROPS: dict[int, int | str] = {
    0x11: 4,
    0x12: "s",
    0x13: 2,
    0x15: "s",
    0x16: "b",
    0x1A: "s",
    0x1C: "s",
    0x1F: "s",
    0x21: 2,
    0x22: 2,
    0x24: 1,
    0x25: 1,
    0x26: "p",
    0x27: 4,
    0x28: 1,
    0x29: 1,
    0x2A: 1,
}


def _connack_props(body: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    parsed = _read_vbi(body, 2)
    if parsed is None:
        return out
    length, pos = parsed
    end = pos + length
    while pos < end:
        prop = body[pos]
        pos += 1
        size = _PROPS.get(prop)
        if isinstance(size, int):
            out[prop] = int.from_bytes(body[pos : pos + size], "big")
            pos += size
        elif size in ("s", "b"):
            pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
        elif size == "p":
            for _ in range(2):
                pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
        else:
            break  # unknown property: stop parsing, keep what we have
    return out


class LiteMqtt(asyncio.Protocol):
    """One MQTT 5 connection: QoS 1 publish (queued beyond the receive maximum),
    QoS 1 subscriptions with automatic PUBACK, a callback per inbound PUBLISH."""

    def __init__(
        self,
        *,
        client_id: str,
        username: str,
        password: str,
        keepalive: int = 120,
        will: tuple[bytes, bytes] | None = None,
        on_message: Callable[[bytes, bytes], None] | None = None,
        on_ack: Callable[[], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.client_id = client_id.encode()
        self.username = username.encode()
        self.password = password.encode()
        self.keepalive = keepalive
        self.will = will
        self.on_message = on_message
        self.on_ack = on_ack
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = loop.create_future()
        self.receive_max = 65535
        self.inflight: set[int] = set()
        self.queue: list[bytes] = []  # (packet) waiting for a free packet id slot
        self.queue_head = 0
        self.acked = 0
        self.refused = 0
        self.lost = False
        self.last_write = 0.0
        self._buf = bytearray()
        self._pid = 0
        self._subacks: dict[int, asyncio.Future[bytes]] = {}

    # -- packets out
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02 | 0x80 | 0x40  # clean start, username, password
        payload = _s(self.client_id)
        if self.will is not None:
            flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
            payload += b"\x00" + _s(self.will[0]) + _s(self.will[1])
        payload += _s(self.username) + _s(self.password)
        props = b"\x21" + (1000).to_bytes(2, "big")  # our receive maximum
        body = (
            _s(b"MQTT")
            + b"\x05"
            + bytes((flags,))
            + self.keepalive.to_bytes(2, "big")
            + _vbi(len(props))
            + props
            + payload
        )
        self._write(_pkt(0x10, body))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)
            self.last_write = time.monotonic()

    def _next_pid(self) -> int:
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self.inflight and self._pid not in self._subacks:
                return self._pid

    def publish(self, topic: bytes, payload: bytes, *, retain: bool = False) -> None:
        """Queue a QoS 1 publish; it goes out at once unless the broker's receive
        maximum is reached."""
        if len(self.inflight) < self.receive_max and self.queue_head == len(self.queue):
            self._send_publish(topic, payload, retain)
        else:
            self.queue.append(_s(topic) + (b"\x01" if retain else b"\x00") + payload)

    def _send_publish(self, topic: bytes, payload: bytes, retain: bool) -> None:
        pid = self._next_pid()
        self.inflight.add(pid)
        first = 0x32 | (0x01 if retain else 0x00)
        self._write(_pkt(first, _s(topic) + pid.to_bytes(2, "big") + b"\x00" + payload))

    @property
    def backlog(self) -> int:
        return len(self.inflight) + len(self.queue) - self.queue_head

    async def subscribe(self, topic: str, within: float = 10.0) -> None:
        pid = self._next_pid()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = future
        self._write(_pkt(0x82, pid.to_bytes(2, "big") + b"\x00" + _s(topic.encode()) + b"\x01"))
        body = await asyncio.wait_for(future, within)
        parsed = _read_vbi(body, 2)
        codes = body[parsed[0] + parsed[1] :] if parsed else b""
        if not codes or codes[0] > 0x02:
            raise RuntimeError(f"subscribe {topic} refused: {codes.hex()}")

    def ping(self) -> None:
        self._write(b"\xc0\x00")

    def disconnect(self) -> None:
        self._write(b"\xe0\x00")
        if self.transport is not None:
            self.transport.close()

    # -- packets in
    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            parsed = _read_vbi(buf, pos + 1)
            if parsed is None:
                break
            length, start = parsed
            end = start + length
            if end > size:
                break
            self._packet(buf[pos], bytes(buf[start:end]))
            pos = end
        if pos:
            del buf[:pos]

    def _packet(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == 0x30:
            tlen = int.from_bytes(body[0:2], "big")
            topic = body[2 : 2 + tlen]
            at = 2 + tlen
            qos = (first >> 1) & 3
            pid = b""
            if qos:
                pid = body[at : at + 2]
                at += 2
            parsed = _read_vbi(body, at)
            assert parsed is not None
            plen, at = parsed
            payload = body[at + plen :]
            if qos == 1:
                self._write(b"\x40\x02" + pid)
            if self.on_message is not None:
                self.on_message(topic, payload)
        elif kind == 0x40:
            pid_int = int.from_bytes(body[0:2], "big")
            if len(body) > 2 and body[2] >= 0x80:
                self.refused += 1
            self.inflight.discard(pid_int)
            self.acked += 1
            while self.queue_head < len(self.queue) and len(self.inflight) < self.receive_max:
                item = self.queue[self.queue_head]
                self.queue_head += 1
                tlen = int.from_bytes(item[0:2], "big")
                self._send_publish(item[2 : 2 + tlen], item[3 + tlen :], item[2 + tlen] == 1)
            if self.queue_head == len(self.queue):
                self.queue.clear()
                self.queue_head = 0
            if self.on_ack is not None:
                self.on_ack()
        elif kind == 0x20:
            if body[1] != 0:
                if not self.connected.done():
                    self.connected.set_exception(
                        RuntimeError(f"CONNACK refused {self.client_id!r}: 0x{body[1]:02x}")
                    )
                return
            props = _connack_props(body)
            self.receive_max = props.get(0x21, 65535) or 65535
            if not self.connected.done():
                self.connected.set_result(None)
        elif kind == 0x90:
            future = self._subacks.pop(int.from_bytes(body[0:2], "big"), None)
            if future is not None and not future.done():
                future.set_result(body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"{self.client_id!r} lost: {exc}"))


async def lite_connect(port: int, client: LiteMqtt, within: float = 30.0) -> LiteMqtt:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.create_connection(lambda: client, "127.0.0.1", port), within)
    await asyncio.wait_for(asyncio.shield(client.connected), within)
    return client


async def keepalive_loop(clients: Callable[[], list[LiteMqtt]]) -> None:
    while True:
        await asyncio.sleep(5.0)
        now = time.monotonic()
        for client in clients():
            if now - client.last_write > client.keepalive / 2:
                client.ping()


# -- child processes: a JSON-lines request/reply protocol over stdin/stdout -----------


class ChildServer:
    """Runs in a child: reads ``{"id", "op", ...}`` lines, replies ``{"id", ...}``."""

    def __init__(self, handlers: dict[str, Callable[..., Awaitable[dict[str, Any]]]]) -> None:
        self.handlers = handlers
        self.done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def reply(self, data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 22)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.reply({"id": 0, "ready": True})
        while not self.done.is_set():
            line = await reader.readline()
            if not line:
                return
            request = json.loads(line)
            task = asyncio.create_task(self._handle(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, request: dict[str, Any]) -> None:
        rid = request.pop("id")
        op = request.pop("op")
        try:
            result = await self.handlers[op](**request)
        except Exception as exc:  # reported to the parent, which fails the bench
            result = {"error": f"{op}: {type(exc).__name__}: {exc}"}
        self.reply({"id": rid, **result})
        if op == "quit":
            self.done.set()
            await asyncio.sleep(0.05)
            os._exit(0)  # transports are closed by the kernel; nothing else to flush


class Child:
    """The parent's handle on one child process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.pid = process.pid
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, role: str, spec: dict[str, Any], log: Path) -> Child:
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).resolve()),  # noqa: ASYNC240 - a name, no IO
                "--role",
                role,
                "--spec",
                json.dumps(spec),
                *(["-v"] if VERBOSE else []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                limit=1 << 22,
            )
        child = cls(name, process)
        await child._ready(60.0)
        return child

    async def _ready(self, within: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting[0] = future
        await asyncio.wait_for(future, within)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            data = json.loads(line)
            future = self._waiting.pop(data.pop("id"), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError(f"{self.name} exited"))

    async def call(self, op: str, *, wait: float = 120.0, **args: Any) -> dict[str, Any]:
        self._next += 1
        rid = self._next
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"id": rid, "op": op, **args}) + "\n").encode())
        await self.process.stdin.drain()
        result = await asyncio.wait_for(future, wait)
        if "error" in result:
            raise RuntimeError(f"{self.name}: {result['error']}")
        return result

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("quit", wait=5.0)
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self._reader.cancel()


def password(directory: str, user: str) -> str:
    return (Path(directory) / f"{user}.password").read_text(encoding="utf-8").strip()


# -- role: simulated agents -----------------------------------------------------------

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
            host.client = LiteMqtt(
                client_id=f"rollguard-agent-{name}",
                username=name,
                password=password(self.secrets, name),
                keepalive=120,
                will=(host.t_status, host.status(online=False)),
                on_message=host.on_command,
                on_ack=self._acked,
            )
            async with semaphore:
                for attempt in range(5):
                    try:
                        await lite_connect(self.port, host.client)
                        break
                    except (OSError, RuntimeError, TimeoutError):
                        if attempt == 4:
                            self.connect_errors += 1
                            return
                        await asyncio.sleep(0.2 * (attempt + 1))
                        host.client = LiteMqtt(
                            client_id=f"rollguard-agent-{name}",
                            username=name,
                            password=password(self.secrets, name),
                            keepalive=120,
                            will=(host.t_status, host.status(online=False)),
                            on_message=host.on_command,
                            on_ack=self._acked,
                        )
                if subscribe:
                    await host.client.subscribe(host.t_cmd)
                host.client.publish(host.t_status, host.status(), retain=True)
                # Like an agent's first round: every check reports once at start.
                host.client.publish(host.t_metrics, host.batch("application", "cpu", "memory"))
                self.sent += 2
            new.append(host)

        await asyncio.gather(*(one(offset + i, name) for i, name in enumerate(hosts)))
        new.sort(key=lambda h: h.name)
        self.hosts.extend(new)
        self.by_name.update((h.name, h) for h in new)
        if self._periodic is not None:  # hosts added while reporting report too
            self._schedule(new)
        return {"connected": len(new), "errors": self.connect_errors}

    def _live(self) -> list[SimHost]:
        return [h for h in self.hosts if h.client is not None and not h.client.lost]

    # -- reporting at intervals
    async def start_periodic(self, app: float, system: float) -> dict[str, Any]:
        self._intervals = (app, system)
        self._heap: list[tuple[float, int, str, SimHost]] = []
        self._counter = 0
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


# -- role: the bare aiomqtt receiver --------------------------------------------------


async def run_bare(spec: dict[str, Any]) -> None:
    count = 0
    ready = asyncio.Event()

    from shared.config.common import MqttConfig
    from shared.mqtt import make_client

    # The coordinator's own client settings (shared.mqtt.make_client), minus its session.
    config = MqttConfig(
        host="127.0.0.1",
        port=spec["port"],
        username="_operator",
        keepalive=30,
        password_file=str(Path(spec["secrets"]) / "_operator.password"),
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


# -- role: the probe (operator subscriber timing commands, results and events) --------


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
            username="_operator",
            password=password(self.secrets, "_operator"),
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


# -- the parent: broker, coordinator, phases ------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) of the whole machine."""
    with open("/proc/stat", encoding="ascii") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class CoordinatorProcess:
    def __init__(self, directory: Path, port: int, extra: dict[str, Any]) -> None:
        from coordinator.devfleet.broker import free_port
        from coordinator.devfleet.fleet import deep_merge, to_toml

        self.directory = directory
        self.http_port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        secrets = directory.parent / "broker"
        base: dict[str, Any] = {
            "node": "bench",
            "state_dir": str(directory / "state"),
            "command_ttl": 120.0,
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "username": "_coordinator",
                "password_file": str(secrets / "_coordinator.password"),
                "keepalive": 30,
            },
            "log": {"level": "warning", "format": "json"},
            "http": {"listen": "127.0.0.1", "port": self.http_port},
        }
        self.config = directory / "coordinator.toml"
        self.config.write_text(to_toml(deep_merge(base, extra)), encoding="utf-8")
        self.process: asyncio.subprocess.Process | None = None
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.session: Any = None

    async def start(self) -> None:
        import aiohttp

        from coordinator.devfleet.fleet import bin_path

        with (self.directory / "coordinator.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                bin_path("rollguard-coordinator"),
                "--config",
                str(self.config),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, aiohttp.ClientError):
                async with self.session.get(self.base + "/readyz") as response:
                    if response.status == 200:
                        break
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the coordinator did not become ready; see its log")
            await asyncio.sleep(0.1)
        self.token = (self.directory / "state" / "api.token").read_text().strip()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def metrics(self) -> dict[str, float]:
        async with self.session.get(self.base + "/metrics") as response:
            text = await response.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("rollguard_") and " " in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    async def ingested(self) -> tuple[float, dict[str, float]]:
        """(monotonic time, ingested counts by kind) at one scrape."""
        values = await self.metrics()
        t = time.monotonic()
        counts = {
            kind: values.get(f'rollguard_messages_ingested_total{{kind="{kind}"}}', 0.0)
            for kind in ("metrics", "status", "cmd_result")
        }
        counts["rejected"] = sum(
            v for k, v in values.items() if k.startswith("rollguard_messages_rejected_total{")
        )
        counts["online"] = values.get("rollguard_hosts_online", 0.0)
        return t, counts

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers
        ) as response:
            data = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data}")
            return data

    async def wait_online(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            _, counts = await self.ingested()
            if counts["online"] >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {counts['online']:.0f} of {count} hosts online")
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from coordinator.devfleet.broker import LocalBroker

        self.args = args
        self.tmp = tmp
        self.quick = args.quick
        # Up to the target, then one step past it for headroom.
        self.fleet_levels = [40, 80] if self.quick else [5_000, 10_000, 15_000]
        self.rollback_hosts = 40 if self.quick else 1_000
        self.universe = [
            f"h{i:05d}" for i in range(max(*self.fleet_levels, self.rollback_hosts, 200))
        ]
        self.broker = LocalBroker(tmp / "broker", list(self.universe))
        self.children: list[Child] = []
        self.coordinators: list[CoordinatorProcess] = []

    @property
    def spec(self) -> dict[str, Any]:
        return {"port": self.broker.port, "secrets": str(self.broker.directory)}

    async def child(self, name: str, role: str, **extra: Any) -> Child:
        child = await Child.start(
            name, role, {**self.spec, **extra}, self.tmp / "logs" / f"{name}.log"
        )
        self.children.append(child)
        return child

    async def stop_children(self) -> None:
        children, self.children = self.children, []
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)

    async def coordinator(self, name: str, extra: dict[str, Any]) -> CoordinatorProcess:
        coordinator = CoordinatorProcess(self.tmp / name, self.broker.port, extra)
        self.coordinators.append(coordinator)
        await coordinator.start()
        return coordinator

    async def cleanup(self) -> None:
        await self.stop_children()
        for coordinator in self.coordinators:
            await coordinator.stop()
        self.broker.stop()

    @property
    def broker_pid(self) -> int:
        process = self.broker._process
        assert process is not None
        return process.pid

    async def fresh_broker(self) -> None:
        # A clean slate between phases: no retained statuses from the previous fleet.
        await asyncio.to_thread(self.broker.restart)

    # -- 1. ingest rate versus a bare client
    async def ingest(self) -> dict[str, Any]:
        procs, per = (2, 10) if self.quick else (4, 50)
        rates = [1000.0, 2000.0] if self.quick else self.args.ingest_rates
        warmup, window = (1.0, 2.0) if self.quick else (2.0, 5.0)
        coordinator = await self.coordinator("coordinator-ingest", {})
        bare = await self.child("bare", "bare")
        await bare.call("ready")
        loaders = [await self.child(f"load{i}", "agents", seed=i) for i in range(procs)]
        hosts = self.universe[: procs * per]
        await asyncio.gather(
            *(
                c.call("connect", hosts=hosts[i * per : (i + 1) * per], subscribe=False)
                for i, c in enumerate(loaders)
            )
        )
        await coordinator.wait_online(len(hosts), 30)
        pids = {
            "coordinator": [coordinator.pid],
            "bare": [bare.pid],
            "broker": [self.broker_pid],
            "load": [c.pid for c in loaders],
        }
        steps = []
        for rate in rates:
            duration = warmup + window + 0.5
            runs = [
                asyncio.create_task(
                    c.call("load", duration=duration, rate=rate / procs, wait=duration + 60)
                )
                for c in loaders
            ]
            await asyncio.sleep(warmup)
            b0 = await bare.call("count")
            t0, c0 = await coordinator.ingested()
            cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            busy0 = machine_busy()
            await asyncio.sleep(window)
            b1 = await bare.call("count")
            t1, c1 = await coordinator.ingested()
            cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            busy1 = machine_busy()
            loads = await asyncio.gather(*runs)
            coord = sum(c1[k] - c0[k] for k in ("metrics", "status", "cmd_result")) / (t1 - t0)
            plain = (b1["count"] - b0["count"]) / (b1["t"] - b0["t"])
            offered = sum(r["acked"] for r in loads) / max(r["elapsed"] for r in loads)
            cpu = {k: (cpu1[k] - cpu0[k]) / (t1 - t0) * 100 for k in pids}
            step = {
                "offered": round(offered),
                "coordinator": round(coord),
                "bare_client": round(plain),
                "coordinator_cpu_us_per_msg": round(cpu["coordinator"] * 1e4 / coord, 1)
                if coord
                else None,
                "bare_cpu_us_per_msg": round(cpu["bare"] * 1e4 / plain, 1) if plain else None,
                "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
                "machine_cpu_pct_of_200": round(
                    (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 200, 1
                ),
            }
            steps.append(step)
            say("ingest step:", step)
        _, counts = await coordinator.ingested()
        await self.stop_children()
        await coordinator.stop()
        coord_peak = max(s["coordinator"] for s in steps)
        bare_peak = max(s["bare_client"] for s in steps)
        # CPU per message where both kept up with the offered load (within 3 %).
        kept = [s for s in steps if min(s["coordinator"], s["bare_client"]) >= 0.97 * s["offered"]]
        last = kept[-1] if kept else None
        return {
            "load_processes": procs,
            "load_hosts": len(hosts),
            "window_s": window,
            "coordinator_msgs_per_s": coord_peak,
            "bare_client_msgs_per_s": bare_peak,
            "ratio": round(coord_peak / bare_peak, 3) if bare_peak else None,
            "cpu_cost_ratio": round(
                last["bare_cpu_us_per_msg"] / last["coordinator_cpu_us_per_msg"], 3
            )
            if last
            else None,
            "cpu_cost_at_offered": last["offered"] if last else None,
            "steps": steps,
            "rejected": counts["rejected"],
            "target_ratio": TARGET_RATIO,
        }

    # -- 2 and 3. rollbacks
    async def rollbacks(self) -> tuple[dict[str, Any], dict[str, Any]]:
        await self.fresh_broker()
        n = self.rollback_hosts
        runs2 = 4 if self.quick else self.args.deployments
        runs3 = 2 if self.quick else self.args.fleet_rollbacks
        coordinator = await self.coordinator(
            "coordinator-rollback",
            {
                "alerts": {"rate_window": ALERT_WINDOW},
                "environments": {
                    "production": {
                        "ack_timeout": 30.0,
                        "missing_data_grace": 60.0,
                        "canary": {"first_bake": 30.0, "step_bake": 30.0, "post_watch": 30.0},
                        "direct": {"verify_window": 60.0},
                    }
                },
            },
        )
        probe = await self.child("probe", "probe")
        await probe.call("start")
        procs = 2 if self.quick else 4
        agents = [await self.child(f"agents{i}", "agents", seed=100 + i) for i in range(procs)]
        hosts = self.universe[:n]
        owner: dict[str, Child] = {}
        for i, child in enumerate(agents):
            part = hosts[i::procs]
            owner.update((h, child) for h in part)
            await child.call("connect", hosts=part)
        await coordinator.wait_online(n, 60)
        await asyncio.gather(*(c.call("start_periodic", app=10.0, system=60.0) for c in agents))
        await asyncio.sleep(1.0)
        say(f"rollback: {n} agents online")

        async def one(index: int, strategy: str) -> dict[str, Any]:
            reply = await coordinator.daemon.api(
                "POST",
                "/api/v1/deployments",
                {
                    "version": f"2.{index}.0",
                    "environment": "production",
                    "strategy": strategy,
                    "actor": "bench",
                },
            )
            dep = reply["deployment"]
            first = dep["steps"][0]["orders"]
            await probe.call("wait_event", key=dep["id"], kinds=["deployment.acked"])
            canary = first[index % len(first)]["host"]
            breach = await owner[canary].call("breach", host=canary, count=3)
            done = await probe.call(
                "wait_event",
                key=dep["id"],
                kinds=["deployment.rollback_done", "deployment.rollback_failed"],
                within=60,
            )
            report = await probe.call(
                "report", deployment=dep["id"], host=canary, seqs=breach["seqs"], acks=len(first)
            )
            if done["kind"] != "deployment.rollback_done":
                raise RuntimeError(f"{dep['id']}: {done['kind']}")
            t_pub = breach["times"][0]
            # The breach also fired the host's error-rate alert, which closes the gate
            # for the next deployment: report healthy again once the breach is older
            # than the alert's rate window, until the alert resolves.
            await asyncio.sleep(max(0.0, t_pub + ALERT_WINDOW + 0.05 - time.monotonic()))
            await owner[canary].call("breach", host=canary, count=3, healthy=True)
            await probe.call("wait_event", key=canary, kinds=["alert.resolved"], after=t_pub)
            seen = report["seen"][0]
            if report["first_cmd"] is None or seen is None:
                raise RuntimeError(f"{dep['id']}: incomplete timings {report}")
            return {
                "targets": len(first),
                "raw_ms": (report["first_cmd"] - t_pub) * 1000,
                "hop_ms": (seen - t_pub) * 1000,
                "all_cmds_ms": (report["last_cmd"] - t_pub) * 1000,
                "acks": report["acks"],
                "all_acked_s": (report["last_ack"] - t_pub) if report["last_ack"] else None,
                "acked_from_cmd_s": (report["last_ack"] - report["first_cmd"])
                if report["last_ack"]
                else None,
                "rollback_done_s": done["t"] - t_pub,
            }

        canary_runs = []
        for i in range(runs2):
            canary_runs.append(await one(i, "canary"))
            if i % 10 == 9:
                say(f"rollback: {i + 1} canary deployments")
        fleet_runs = []
        for i in range(runs3):
            fleet_runs.append(await one(runs2 + i, "direct"))
            say(f"rollback: fleet run {i + 1}: {fleet_runs[-1]['all_acked_s']:.3f} s")
        _, counts = await coordinator.ingested()
        await self.stop_children()
        await coordinator.stop()

        raw = [r["raw_ms"] for r in canary_runs]
        hop = [r["hop_ms"] for r in canary_runs]
        corrected = [r["raw_ms"] - 2 * r["hop_ms"] for r in canary_runs]
        breach = {
            "deployments": len(canary_runs),
            "hosts": n,
            "canary_hosts": canary_runs[0]["targets"],
            "raw_p50": rnd(quantile(raw, 0.5)),
            "raw_p99": rnd(quantile(raw, 0.99)),
            "broker_hop_p50": rnd(quantile(hop, 0.5)),
            "broker_hop_p99": rnd(quantile(hop, 0.99)),
            "corrected_p50": rnd(quantile(corrected, 0.5)),
            "corrected_p99": rnd(quantile(corrected, 0.99)),
            "all_canary_cmds_p99": rnd(quantile([r["all_cmds_ms"] for r in canary_runs], 0.99)),
            "target_p99": TARGET_ROLLBACK_P99_MS,
        }
        acked = [r["all_acked_s"] for r in fleet_runs]
        fleet: dict[str, Any] = (
            {"hosts": n, "runs": 0}
            if not fleet_runs
            else {
                "hosts": n,
                "runs": len(fleet_runs),
                "acks_per_run_min": min(r["acks"] for r in fleet_runs),
                "from_breach_p50": rnd(quantile(acked, 0.5), 3),
                "from_breach_p99": rnd(quantile(acked, 0.99), 3),
                "from_first_command_p50": rnd(
                    quantile([r["acked_from_cmd_s"] for r in fleet_runs], 0.5), 3
                ),
                "rollback_done_event_p50": rnd(
                    quantile([r["rollback_done_s"] for r in fleet_runs], 0.5), 3
                ),
                "rollback_done_event_p99": rnd(
                    quantile([r["rollback_done_s"] for r in fleet_runs], 0.99), 3
                ),
                "target_p99": TARGET_ACK_P99_S,
                "rejected": counts["rejected"],
            }
        )
        return breach, fleet

    # -- 4. the largest fleet at the guide's intervals
    async def fleet(self) -> dict[str, Any]:
        await self.fresh_broker()
        window = 4.0 if self.quick else self.args.fleet_window
        coordinator = await self.coordinator("coordinator-fleet", {})
        procs = 2 if self.quick else 4
        agents = [await self.child(f"fleet{i}", "agents", seed=200 + i) for i in range(procs)]
        await asyncio.gather(*(c.call("start_periodic", app=10.0, system=60.0) for c in agents))
        levels: list[dict[str, Any]] = []
        have = 0
        largest = 0
        for level in self.fleet_levels:
            new = self.universe[have:level]
            started = time.monotonic()
            # A fleet coming up (or back after a broker restart, with the agents' jittered
            # backoff) at a bounded rate, not 2,500 connections in the same instant.
            await asyncio.gather(
                *(
                    c.call(
                        "connect",
                        hosts=new[i::procs],
                        rate=self.args.connect_rate / procs,
                        wait=600,
                    )
                    for i, c in enumerate(agents)
                )
            )
            have = level
            try:
                await coordinator.wait_online(level, 120)
            except RuntimeError as exc:
                levels.append({"agents": level, "held": False, "why": str(exc)})
                break
            ramp = time.monotonic() - started
            say(f"fleet: {level} online after {ramp:.1f} s")
            await asyncio.sleep(2.0)
            result = await self._hold(coordinator, agents, window)
            result = {"agents": level, "ramp_s": round(ramp, 1), **result}
            levels.append(result)
            say(f"fleet: {result}")
            if not result["held"]:
                break
            largest = level
        # Nothing dropped: stop publishing, then every acknowledged publish is ingested.
        stats = await asyncio.gather(*(c.call("stop_periodic") for c in agents))
        acked = sum(s["acked"] for s in stats)
        deadline = time.monotonic() + 15
        while True:
            _, counts = await coordinator.ingested()
            ingested = counts["metrics"] + counts["status"] + counts["cmd_result"]
            if ingested >= acked or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        dropped = max(0, int(acked - ingested))
        if dropped and levels:
            levels[-1]["held"] = False
            levels[-1]["why"] = f"{dropped} messages never ingested"
            largest = max([lv["agents"] for lv in levels[:-1] if lv["held"]] or [0])
        await self.stop_children()
        await coordinator.stop()
        return {
            "largest_held": largest,
            "target": TARGET_FLEET,
            "intervals_s": {"application": 10, "cpu": 60, "memory": 60},
            "agent_processes": procs,
            "published": acked,
            "dropped": dropped,
            "rejected": counts["rejected"],
            "levels": levels,
        }

    async def _hold(
        self, coordinator: CoordinatorProcess, agents: list[Child], window: float
    ) -> dict[str, Any]:
        cpu0 = cpu_seconds(coordinator.pid)
        busy0 = machine_busy()
        first: tuple[float, float, float] | None = None
        last: tuple[float, float, float] | None = None
        max_lag = 0.0
        end = time.monotonic() + window
        while True:
            stats = await asyncio.gather(*(c.call("stats") for c in agents))
            t, counts = await coordinator.ingested()
            acked = sum(s["acked"] for s in stats)
            ingested = counts["metrics"] + counts["status"] + counts["cmd_result"]
            sample = (t, float(acked), ingested)
            if first is None:
                first = sample
            else:
                rate = (acked - first[1]) / max(1e-6, t - first[0])
                lag = max(0.0, acked - ingested) / rate if rate > 0 else 0.0
                max_lag = max(max_lag, lag)
            last = sample
            if t >= end:
                break
            await asyncio.sleep(1.0)
        cpu1 = cpu_seconds(coordinator.pid)
        busy1 = machine_busy()
        assert first is not None and last is not None
        span = last[0] - first[0]
        cpu_pct = (cpu1 - cpu0) / span * 100
        machine_pct = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100
        online = counts["online"]
        lost = sum(s["lost"] for s in stats)
        held = max_lag <= LAG_LIMIT_S and cpu_pct < CPU_LIMIT_PCT and lost == 0
        return {
            "held": held,
            "msgs_per_s": round((last[2] - first[2]) / span),
            "published_per_s": round((last[1] - first[1]) / span),
            "max_lag_s": round(max_lag, 3),
            "coordinator_cpu_pct": round(cpu_pct, 1),
            "machine_cpu_pct": round(machine_pct, 1),
            "online": int(online),
            "disconnected": lost,
        }


async def parent(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    # SIGTERM cancels the run like Ctrl-C does, so the cleanup below still stops
    # everything this bench started.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        # Children and the broker inherit it: 10,000 connections need ~10,000 fds.
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    tmp = Path(tempfile.mkdtemp(prefix="rollguard-ingest-"))
    (tmp / "logs").mkdir()
    bench = Bench(args, tmp)
    if nofile < max(bench.fleet_levels) + 512:
        bench.fleet_levels = [lv for lv in bench.fleet_levels if lv + 512 <= nofile]
    result: dict[str, Any] = {"bench": "coordinator_ingest"}
    try:
        await asyncio.to_thread(bench.broker.start)
        say(f"broker on {bench.broker.port} with {len(bench.universe)} host users; {tmp}")
        phases = args.phases.split(",")
        if "ingest" in phases:
            result["ingest"] = await bench.ingest()
            say("ingest:", result["ingest"])
        if "rollback" in phases:
            (
                result["breach_to_rollback_ms"],
                result["rollback_all_acked_s"],
            ) = await bench.rollbacks()
            say("breach:", result["breach_to_rollback_ms"])
            say("acked:", result["rollback_all_acked_s"])
        if "fleet" in phases:
            result["fleet"] = await bench.fleet()
    finally:
        await bench.cleanup()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    ingest = result.get("ingest", {})
    breach = result.get("breach_to_rollback_ms", {})
    acked = result.get("rollback_all_acked_s", {})
    fleet = result.get("fleet", {})
    result["met"] = {
        "ingest_ratio": (ingest.get("ratio") or 0) >= TARGET_RATIO if ingest else None,
        "breach_to_rollback_p99": (breach.get("corrected_p99") or 1e9) <= TARGET_ROLLBACK_P99_MS
        if breach
        else None,
        "rollback_acked_p99": (acked.get("from_breach_p99") or 1e9) <= TARGET_ACK_P99_S
        if acked
        else None,
        "fleet": fleet.get("largest_held", 0) >= TARGET_FLEET if fleet else None,
    }
    result["machine"] = {"cores": os.cpu_count(), "nofile": nofile}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> int:
    global VERBOSE  # noqa: PLW0603 - set once, before anything runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--phases", default="ingest,rollback,fleet")
    parser.add_argument("--deployments", type=int, default=40)
    parser.add_argument("--fleet-rollbacks", type=int, default=6)
    parser.add_argument(
        "--ingest-rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[2000.0, 4000.0, 6000.0, 8000.0],
        help="offered messages/s, one window each, in the ingest phase (0: as fast as "
        "the load processes can)",
    )
    parser.add_argument("--fleet-window", type=float, default=20.0)
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=1000.0,
        help="new agent connections per second while a fleet level ramps up",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    VERBOSE = args.verbose
    import uvloop

    if args.role:
        spec = json.loads(args.spec)
        role = {"agents": run_agents, "bare": run_bare, "probe": run_probe}[args.role]
        # A child must not outlive the bench if the parent is killed.
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        uvloop.run(role(spec))
        return 0
    result = uvloop.run(parent(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
