"""The coordinator under systemd's notify protocol: READY=1 once its store is open,
WATCHDOG=1 while its loop and store make progress, STOPPING=1 on the way out; and the
supervisor's rule, that a store call that hangs (not one that fails) stops the pings."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

from coordinator.daemon.liveness import supervise
from coordinator.devfleet.broker import free_port
from coordinator.engine import Engine
from shared.config.common import MqttConfig
from shared.errors import RollguardError
from shared.sdnotify import Notifier
from tests.processes import coordinator_config, running, script


def test_coordinator_process_sends_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    sock.bind(address)
    sock.settimeout(20)
    # No broker: the store opens all the same, and that is what READY=1 waits for.
    config, _port = coordinator_config(tmp_path, MqttConfig(port=free_port()))
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}  # pings every 0.5 s
    with (
        sock,
        running(
            [*script("rollguard-coordinator"), "--config", str(config)],
            tmp_path / "coordinator.log",
            env=env,
        ) as coordinator,
    ):
        received: list[bytes] = []
        while received.count(b"WATCHDOG=1") < 3:
            received.append(sock.recv(4096))
        assert received[0].startswith(b"READY=1\nSTATUS=store open")
        coordinator.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096)) != b"STOPPING=1":
            assert message == b"WATCHDOG=1"
        assert coordinator.wait(20) == 0


class Store:
    """A store whose ping answers, fails, or hangs, as the test says."""

    def __init__(self) -> None:
        self.mode = "answer"

    async def ping(self) -> None:
        if self.mode == "fail":
            raise RollguardError("connection refused")
        if self.mode == "hang":
            await asyncio.Event().wait()


class Daemon:
    def __init__(self) -> None:
        self.store = Store()
        self.store_ok = False
        self.engine: Engine | None = None

    def clock(self) -> float:
        return 0.0


async def test_a_hanging_store_stops_the_pings_and_a_failing_one_does_not(
    tmp_path: Path,
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
    daemon = Daemon()
    stop = asyncio.Event()
    task = asyncio.create_task(
        supervise(daemon, notifier, stop, store_limit=0.1, engine_limit=1.0, poll=0.05)
    )

    async def receive() -> bytes:
        return await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)

    with sock:
        await asyncio.sleep(0.3)
        assert not task.done()
        daemon.store_ok = True  # READY=1 only now
        assert (await receive()).startswith(b"READY=1")
        assert await receive() == b"WATCHDOG=1"
        daemon.store.mode = "fail"  # an outage the coordinator rides out: still alive
        for _ in range(3):
            assert await receive() == b"WATCHDOG=1"
        daemon.store.mode = "hang"
        # Pings already due may still arrive; then they stop for as long as it hangs.
        with_hang: list[bytes] = []
        try:
            while True:
                with_hang.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), 1.5))
        except TimeoutError:
            pass
        assert len(with_hang) <= 3, with_hang
        daemon.store.mode = "answer"
        assert await receive() == b"WATCHDOG=1"
        stop.set()
        await asyncio.wait_for(task, 10)
    notifier.close()
