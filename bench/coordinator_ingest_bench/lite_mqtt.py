"""A light asyncio MQTT 5 client for simulated agents and the probe.

CONNECT with a Will and credentials, QoS 1 PUBLISH with the broker's receive maximum
respected, SUBSCRIBE, PUBACK, PINGREQ; one TCP connection per host, many hosts per
process. Why not aiomqtt per host: paho + aiomqtt cost tens of microseconds per packet
and a timer task per client, which for 10,000 connections on two cores would leave
little CPU for the coordinator under test.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable


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
