"""The real ``rollguard-coordinator`` under test, as a process with its own config,
SQLite store and state directory, read through its HTTP API and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from coordinator.devfleet.broker import free_port
from coordinator.devfleet.fleet import bin_path, deep_merge, to_toml
from coordinator.setup.credentials import COORDINATOR_USER, password_path

INGESTED_KINDS = ("metrics", "status", "cmd_result")


class CoordinatorProcess:
    def __init__(self, directory: Path, port: int, secrets: Path, extra: dict[str, Any]) -> None:
        """``extra`` is merged into the base config (``deep_merge``); ``secrets`` is the
        broker's credentials directory."""
        self.directory = directory
        self.http_port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        base: dict[str, Any] = {
            "node": "bench",
            "state_dir": str(directory / "state"),
            "command_ttl": 120.0,
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "username": COORDINATOR_USER,
                "password_file": str(password_path(secrets, COORDINATOR_USER)),
                "keepalive": 30,
            },
            "log": {"level": "warning", "format": "json"},
            "http": {"listen": "127.0.0.1", "port": self.http_port},
        }
        self.config = directory / "coordinator.toml"
        self.config.write_text(to_toml(deep_merge(base, extra)), encoding="utf-8")
        self.process: asyncio.subprocess.Process | None = None
        self.base = f"http://127.0.0.1:{self.http_port}"
        self._session: aiohttp.ClientSession | None = None
        self.token = ""

    async def start(self) -> None:
        with (self.directory / "coordinator.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                bin_path("rollguard-coordinator"),
                "--config",
                str(self.config),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, aiohttp.ClientError):
                async with self._session.get(self.base + "/readyz") as response:
                    if response.status == 200:
                        break
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the coordinator did not become ready; see its log")
            await asyncio.sleep(0.1)
        token_file = self.directory / "state" / "api.token"
        self.token = token_file.read_text(encoding="utf-8").strip()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

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
        """(monotonic time, ingested counts by kind) at one scrape; also ``rejected``
        (all kinds) and ``online`` (hosts)."""
        values = await self.metrics()
        t = time.monotonic()
        counts = {
            kind: values.get(f'rollguard_messages_ingested_total{{kind="{kind}"}}', 0.0)
            for kind in INGESTED_KINDS
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
        if self._session is not None:
            await self._session.close()
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


def ingested_total(counts: dict[str, float]) -> float:
    """Every message the coordinator ingested, of all kinds."""
    return sum(counts[kind] for kind in INGESTED_KINDS)
