"""``SELECT 1`` against PostgreSQL with psycopg's async connection.

A fresh connection per run: the check proves a client can connect and query now, and
a fleet of agents holds no idle backends on the database between runs. psycopg is
imported when this check is built, never in an agent that does not configure it.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

from agent.checks.base import Check, Sink, describe, now


class DatabaseCheck(Check):
    name = "database"

    def __init__(self, *, interval: float, timeout: float, url: str) -> None:
        super().__init__(interval=interval, timeout=timeout)
        self.url = url
        self._psycopg: Any = importlib.import_module("psycopg")

    async def collect(self, sink: Sink) -> None:
        started = now()
        psycopg = self._psycopg
        begin = time.perf_counter()
        connected: float | None = None
        try:
            async with asyncio.timeout(self.inner_timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(2, int(self.inner_timeout)),
                    application_name="rollguard-agent",
                )
                try:
                    connected = time.perf_counter()
                    cursor = await conn.execute("SELECT 1")
                    row = await cursor.fetchone()
                finally:
                    await conn.close()
        except TimeoutError as exc:
            phase = "query" if connected is not None else "connect"
            sink.emit(self.failure(started, f"{phase} {describe(exc, self.inner_timeout)}"))
            return
        except (psycopg.Error, OSError) as exc:
            sink.emit(self.failure(started, _first_line(exc)))
            return
        done = time.perf_counter()
        if row != (1,):
            sink.emit(self.failure(started, f"SELECT 1 returned {row!r}"))
            return
        sink.emit(
            self.sample(
                started,
                {
                    "latency_ms": (done - begin) * 1000.0,
                    "connect_ms": (connected - begin) * 1000.0,
                    "query_ms": (done - connected) * 1000.0,
                },
            )
        )


def _first_line(exc: BaseException) -> str:
    # libpq errors span lines ("connection to server ... failed: FATAL: ..."); the
    # first line carries the reason, the rest is hints.
    text = str(exc).strip()
    return text.splitlines()[0] if text else describe(exc)
