"""TCP connect to each configured endpoint: latency per endpoint, ok only if all connect.

Endpoints are tried concurrently, each under the check's inner timeout, so the sample
names every endpoint that failed and why (refused, unreachable, timed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from agent.checks.base import Check, Sink, describe, now
from shared.config.agent import split_endpoint


class NetworkCheck(Check):
    name = "network"

    def __init__(self, *, interval: float, timeout: float, endpoints: Sequence[str]) -> None:
        super().__init__(interval=interval, timeout=timeout)
        self.endpoints = [(endpoint, *split_endpoint(endpoint)) for endpoint in endpoints]

    async def collect(self, sink: Sink) -> None:
        started = now()
        results = await asyncio.gather(
            *(self._connect(host, port) for _, host, port in self.endpoints)
        )
        values: dict[str, float] = {"endpoints": len(self.endpoints)}
        errors: list[str] = []
        latencies: list[float] = []
        for (endpoint, _, _), result in zip(self.endpoints, results, strict=True):
            if isinstance(result, str):
                errors.append(f"{endpoint}: {result}")
            else:
                values[f"latency_ms:{endpoint}"] = result
                latencies.append(result)
        values["failed"] = len(errors)
        if latencies:
            values["latency_ms"] = max(latencies)
        sink.emit(self.sample(started, values, error="; ".join(errors) if errors else None))

    async def _connect(self, host: str, port: int) -> float | str:
        """Milliseconds to an established connection, or why there is none."""
        begin = time.perf_counter()
        try:
            async with asyncio.timeout(self.inner_timeout):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError as exc:
            return describe(exc, self.inner_timeout)
        except OSError as exc:
            return describe(exc)
        elapsed = (time.perf_counter() - begin) * 1000.0
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return elapsed
