"""Child processes for the simulated agents, the bare client and the probe, driven by
the parent over a JSON-lines request/reply protocol on their stdin and stdout.

A child is this package run with ``--role NAME --spec JSON``; it replies
``{"id": 0, "ready": true}`` once serving, then ``{"id", ...}`` to each
``{"id", "op", ...}`` request (``{"id", "error"}`` if the handler raised).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from coordinator_ingest_bench.progress import verbose

Handler = Callable[..., Awaitable[dict[str, Any]]]

# The folder holding this package, for the children's import path.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


class ChildServer:
    """Runs in a child: reads ``{"id", "op", ...}`` lines, replies ``{"id", ...}``."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
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
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": _PACKAGE_PARENT + (os.pathsep + path if path else ""),
        }
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __package__ or "coordinator_ingest_bench",
                "--role",
                role,
                "--spec",
                json.dumps(spec),
                *(["-v"] if verbose() else []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
                start_new_session=True,
                limit=1 << 22,
            )
        child = cls(name, process)
        await child._ready(60.0)
        return child

    async def _ready(self, within: float) -> None:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
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
