"""Redis: ping latency and the keyspace hit rate, with the hits and misses behind it.

``INFO stats`` gives lifetime counters; the sample carries this interval's deltas
(``hits``, ``misses``) and the rate computed from them, plus the lifetime totals. A
counter that went down means Redis restarted: the new total is this interval's count.
redis is imported when this check is built, never in an agent that does not use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from typing import Any

from agent.checks.base import Check, Sink, describe, now


class CacheCheck(Check):
    name = "cache"

    def __init__(self, *, interval: float, timeout: float, url: str) -> None:
        super().__init__(interval=interval, timeout=timeout)
        self.url = url
        self._redis: Any = importlib.import_module("redis.asyncio")
        self._exceptions: Any = importlib.import_module("redis.exceptions")
        self._last: tuple[int, int] | None = None

    async def collect(self, sink: Sink) -> None:
        started = now()
        client = self._redis.Redis.from_url(
            self.url,
            socket_timeout=self.inner_timeout,
            socket_connect_timeout=self.inner_timeout,
            single_connection_client=True,
        )
        try:
            async with asyncio.timeout(self.inner_timeout):
                begin = time.perf_counter()
                await client.ping()
                latency = (time.perf_counter() - begin) * 1000.0
                stats = await client.info("stats")
        except TimeoutError as exc:
            sink.emit(self.failure(started, describe(exc, self.inner_timeout)))
            return
        except (self._exceptions.RedisError, OSError) as exc:
            sink.emit(self.failure(started, _reason(exc)))
            return
        finally:
            await _close_quietly(client)
        try:
            hits, misses = int(stats["keyspace_hits"]), int(stats["keyspace_misses"])
        except (KeyError, TypeError, ValueError):
            sink.emit(
                self.failure(
                    started,
                    "INFO stats has no keyspace_hits/keyspace_misses",
                    {"latency_ms": latency},
                )
            )
            return
        values: dict[str, float] = {
            "latency_ms": latency,
            "keyspace_hits": hits,
            "keyspace_misses": misses,
        }
        if hits + misses:
            values["hit_rate_lifetime"] = hits / (hits + misses)
        if self._last is not None:
            last_hits, last_misses = self._last
            delta_hits = hits - last_hits if hits >= last_hits else hits
            delta_misses = misses - last_misses if misses >= last_misses else misses
            values["hits"] = delta_hits
            values["misses"] = delta_misses
            if delta_hits + delta_misses:
                values["hit_rate"] = delta_hits / (delta_hits + delta_misses)
        self._last = (hits, misses)
        sink.emit(self.sample(started, values))


def _reason(exc: BaseException) -> str:
    """redis wraps socket errors in its own text; the OS reason underneath is clearer."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return describe(cause)
        cause = cause.__cause__ or cause.__context__
    return describe(exc)


async def _close_quietly(client: Any) -> None:
    # A connection that never opened has nothing to close.
    with contextlib.suppress(OSError, RuntimeError):
        await client.aclose()
