"""The sd_notify datagram protocol against a local socket, and the watchdog's rule:
ping only while every watched loop has made progress recently."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from agent.watchdog import Heartbeat, Notifier


def bound_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_notify_sends_one_datagram_per_call(tmp_path: Path) -> None:
    with bound_socket(tmp_path) as sock:
        notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notifier.notify("READY=1", "STATUS=collecting")
        assert notifier.notify("WATCHDOG=1")
        notifier.close()
        assert drain(sock) == [b"READY=1\nSTATUS=collecting", b"WATCHDOG=1"]


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled and not notifier.notify("READY=1")
    assert notifier.watchdog_interval is None


def test_watchdog_interval_is_only_ours_when_the_pid_matches() -> None:
    assert Notifier(env={"WATCHDOG_USEC": "30000000"}).watchdog_interval == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env=mine).watchdog_interval == 2.0
    theirs = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(env=theirs).watchdog_interval is None


async def test_pings_stop_while_a_loop_is_stale_and_resume_after(tmp_path: Path) -> None:
    with bound_socket(tmp_path) as sock:
        notifier = Notifier(
            env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"}
        )  # ping every 0.05 s
        heartbeat = Heartbeat()
        limits = {"collect": 0.2, "mqtt": 0.2}
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.watchdog(heartbeat, limits, stop))
        try:
            # Neither loop has beaten yet: no ping.
            await asyncio.sleep(0.15)
            assert drain(sock) == []
            heartbeat.beat("collect")
            heartbeat.beat("mqtt")
            await asyncio.sleep(0.12)
            assert drain(sock).count(b"WATCHDOG=1") >= 2
            # Only the collection loop keeps beating; the MQTT loop is wedged.
            for _ in range(6):
                heartbeat.beat("collect")
                await asyncio.sleep(0.05)
            drain(sock)
            for _ in range(4):
                heartbeat.beat("collect")
                await asyncio.sleep(0.05)
            assert drain(sock) == []
            heartbeat.beat("mqtt")
            await asyncio.sleep(0.12)
            assert b"WATCHDOG=1" in drain(sock)
        finally:
            stop.set()
            await asyncio.wait_for(task, 2)
            notifier.close()


def test_a_parked_loop_is_never_stale_and_a_working_one_is() -> None:
    heartbeat = Heartbeat()
    heartbeat.park("collect")  # waiting an hour for its next check
    heartbeat.beat("mqtt")
    # A zero limit makes every loop stale unless it is parked.
    assert heartbeat.stale({"collect": 0.0, "mqtt": -1.0}) == ["mqtt"]
    heartbeat.beat("collect")  # back at work: its limit applies again
    assert heartbeat.stale({"collect": -1.0}) == ["collect"]


async def test_a_start_is_not_an_error_and_the_first_ping_follows_the_first_beats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with bound_socket(tmp_path) as sock:
        # A 200 s watchdog: pings every 100 s, so a first ping within seconds can only
        # be the one that follows the loops' first beats, not the next period's.
        notifier = Notifier(
            env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000000"}
        )
        heartbeat = Heartbeat()
        stop = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="shared.sdnotify"):
            task = asyncio.create_task(
                notifier.watchdog(heartbeat, {"store": 60.0, "engine": 60.0}, stop)
            )
            try:
                await asyncio.sleep(0.2)
                assert drain(sock) == []  # nothing has beaten yet: no ping
                heartbeat.beat("store")
                heartbeat.beat("engine")
                pings: list[bytes] = []
                async with asyncio.timeout(10):
                    while not pings:
                        await asyncio.sleep(0.05)
                        pings = drain(sock)
                assert pings == [b"WATCHDOG=1"]
            finally:
                stop.set()
                await asyncio.wait_for(task, 2)
                notifier.close()
        assert [r.getMessage() for r in caplog.records] == []


def test_a_loop_that_never_beat_is_stale_only_past_its_limit_from_the_origin() -> None:
    heartbeat = Heartbeat()
    now = time.monotonic()
    assert heartbeat.stale({"store": 5.0}) == ["store"]
    assert heartbeat.stale({"store": 5.0}, origin=now) == []
    assert heartbeat.stale({"store": 5.0}, origin=now - 6.0) == ["store"]
