"""The coordinator's HTTP API on aiohttp: health, readiness, Prometheus metrics and the
token-protected ``/api/v1`` routes. Errors are JSON ``{"error": "..."}`` with a 4xx/5xx."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from coordinator.daemon import Coordinator

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COORDINATOR_KEY: web.AppKey[Coordinator] = web.AppKey("coordinator")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


def token_middleware(token: str) -> Any:  # aiohttp's Middleware protocol
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "").encode()
            # Constant-time comparison: the token never leaks through timing.
            if not hmac.compare_digest(given, expected):
                return error(401, "missing or invalid bearer token")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason)
            raise

    return check


async def healthz(_: web.Request) -> web.Response:
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    ready, detail = coordinator.readiness()
    return json_response({"ready": ready, **detail}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    body = generate_latest(coordinator.telemetry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def hosts(request: web.Request) -> web.Response:
    return json_response({"hosts": request.app[COORDINATOR_KEY].hosts.as_builtins()})


def build_app(coordinator: Coordinator, token: str) -> web.Application:
    app = web.Application(middlewares=[token_middleware(token)], client_max_size=256 * 1024)
    app[COORDINATOR_KEY] = coordinator
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/hosts", hosts)
    return app
