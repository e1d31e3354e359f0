"""The demo's application: one small HTTP server standing in for an app on every demo
host, whose error rate and latency depend on the version each host runs.

``GET /{host}/health`` answers like the app would (an error with the version's error
probability, after its latency); ``GET /{host}/metrics`` exposes Prometheus counters
for simulated real traffic (``http_requests_total`` by status and the
``http_request_duration_seconds`` histogram) advanced on every scrape by the traffic
that would have arrived since the last one. The version of a host is read on every
request from ``{root}/{host}/current``, the symlink the agent's releases strategy
switches, so a deploy or rollback changes the app's behaviour at once.

Run: ``python -m coordinator.devfleet.demo_app --root DIR --port PORT --profiles FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Final

from aiohttp import web

# Fine buckets where the demo's versions live (30-100 ms), so that the p95 the
# coordinator reads from the histogram tells one version from another.
BUCKETS_MS: Final = (10, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100, 125, 150, 175, 200)
BUCKETS_S: Final = (*(ms / 1000 for ms in BUCKETS_MS), 0.25, 0.3, 0.4, 0.5, 1.0, 2.5, 5.0)
DEFAULT_PROFILE: Final = {"error_rate": 0.0, "latency_ms": 30.0}


class Host:
    def __init__(self) -> None:
        self.requests: dict[str, int] = {"200": 0, "500": 0}
        self.buckets = [0] * (len(BUCKETS_S) + 1)
        self.latency_sum = 0.0
        self.last: float | None = None


class DemoApp:
    def __init__(self, root: Path, profiles: dict[str, dict[str, float]], rps: float) -> None:
        self.root = root
        self.profiles = profiles
        self.rps = rps
        self.hosts: dict[str, Host] = {}
        self.rng = random.Random()  # noqa: S311 - simulated traffic, not security

    def version(self, host: str) -> str | None:
        try:
            return os.path.basename(os.readlink(self.root / host / "current"))
        except OSError:
            return None

    def profile(self, host: str) -> dict[str, float]:
        return self.profiles.get(self.version(host) or "", DEFAULT_PROFILE)

    def latency_s(self, profile: dict[str, float]) -> float:
        median = profile["latency_ms"] / 1000.0
        return median * math.exp(self.rng.gauss(0.0, 0.35))

    async def health(self, request: web.Request) -> web.Response:
        host = request.match_info["host"]
        profile = self.profile(host)
        await asyncio.sleep(min(self.latency_s(profile), 3.0))
        if self.rng.random() < profile["error_rate"]:
            return web.json_response({"ok": False, "version": self.version(host)}, status=500)
        return web.json_response({"ok": True, "version": self.version(host)})

    def advance(self, host: str, now: float) -> Host:
        state = self.hosts.setdefault(host, Host())
        if state.last is not None:
            profile = self.profile(host)
            count = int(self.rps * max(0.0, now - state.last) + self.rng.random())
            for _ in range(count):
                failed = self.rng.random() < profile["error_rate"]
                state.requests["500" if failed else "200"] += 1
                latency = self.latency_s(profile)
                state.latency_sum += latency
                index = next((i for i, b in enumerate(BUCKETS_S) if latency <= b), len(BUCKETS_S))
                state.buckets[index] += 1
        state.last = now
        return state

    async def metrics(self, request: web.Request) -> web.Response:
        host = request.match_info["host"]
        state = self.advance(host, asyncio.get_running_loop().time())
        lines = ["# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{code="{c}"}} {n}' for c, n in state.requests.items()]
        lines.append("# TYPE http_request_duration_seconds histogram")
        cumulative = 0
        for bound, count in zip(BUCKETS_S, state.buckets, strict=False):
            cumulative += count
            lines.append(f'http_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        total = sum(state.buckets)
        lines.append(f'http_request_duration_seconds_bucket{{le="+Inf"}} {total}')
        lines.append(f"http_request_duration_seconds_sum {state.latency_sum}")
        lines.append(f"http_request_duration_seconds_count {total}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def build(root: Path, profiles: dict[str, dict[str, float]], rps: float) -> web.Application:
    app = DemoApp(root, profiles, rps)
    web_app = web.Application()
    web_app.router.add_get("/{host}/health", app.health)
    web_app.router.add_get("/{host}/metrics", app.metrics)
    return web_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rollguard-demo-app")
    parser.add_argument("--root", required=True, help="directory holding <host>/current")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profiles", required=True, help="JSON: version -> error_rate, latency_ms")
    parser.add_argument("--rps", type=float, default=100.0, help="simulated requests/s per host")
    args = parser.parse_args(argv)
    profiles = json.loads(Path(args.profiles).read_text(encoding="utf-8"))
    web.run_app(
        build(Path(args.root), profiles, args.rps),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
