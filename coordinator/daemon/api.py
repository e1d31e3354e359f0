"""The coordinator's HTTP API on aiohttp.

``/healthz``, ``/readyz`` and ``/metrics`` are open (for probes and Prometheus); every
``/api/`` route needs the bearer token, compared in constant time, or the dashboard's
cookie holding it (coordinator/daemon/dashboard/auth.py: a POST with the cookie must
come from the dashboard's own script). Errors are JSON
``{"error": "...", "reasons": [...]}``: 400 for a malformed request (naming the
field), 401 for a bad token, 404 for an unknown deployment, 409 for a request the
engine refused (with its reasons), 503 while the coordinator holds or is standby (or
its store does not answer a read).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, Protocol

import msgspec
from aiohttp import web
from msgspec import Meta
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordinator.daemon.dashboard import auth
from coordinator.daemon.dashboard.routes import add_routes as add_dashboard
from coordinator.daemon.eventhub import EventHub, ListenerLagged
from coordinator.daemon.hosts import HostRegistry
from coordinator.daemon.notify import Notifier
from coordinator.daemon.telemetry import Telemetry
from coordinator.daemon.views import alert_view, deployment_view, event_view, host_view
from coordinator.engine import Deployment, OperatorReply, OperatorRequest
from coordinator.engine.state import decode_deployment
from coordinator.store import Store, StoreError
from shared.config.coordinator import Strategy
from shared.errors import RollguardError
from shared.messages import Environment, Event, HostId, Version
from shared.views import (
    AlertList,
    DeploymentList,
    DeploymentReply,
    ErrorView,
    EventList,
    HostList,
    OperatorReplyView,
    StreamError,
)


class Daemon(Protocol):
    """What the API needs of the daemon (``coordinator.daemon.service.Coordinator``)."""

    clock: Callable[[], float]
    store: Store
    hub: EventHub
    hosts: HostRegistry
    telemetry: Telemetry
    notifier: Notifier

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def refresh_telemetry(self) -> None: ...

    async def request(self, request: OperatorRequest) -> tuple[OperatorReply, bool]: ...


def new_deployment_id(now: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"d{stamp}-{secrets.token_hex(2)}"


log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COORDINATOR_KEY: web.AppKey[Daemon] = web.AppKey("coordinator")
ACTIONS: Final = ("promote", "rollback", "pause", "resume", "approve")
# The most deployments one list answer holds.
MAX_LIST_LIMIT: Final = 500
Actor = Annotated[str, Meta(min_length=1, max_length=128)]
Reason = Annotated[str, Meta(max_length=1024)]
# The most firing alerts one answer holds (one per host and rule: a fleet-wide incident
# on 10,000 hosts is summarised by the first ones and the gauge).
MAX_FIRING_ALERTS: Final = 1000
# The most resolved alerts one answer holds.
MAX_ALERTS_LIMIT: Final = 500


class DeployRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Version
    environment: Environment = "production"
    strategy: Strategy | None = None
    hosts: list[HostId] | None = None
    actor: Actor | None = None
    reason: Reason = ""


class ActionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    actor: Actor | None = None
    reason: Reason = ""
    step: Annotated[int, Meta(ge=0)] | None = None


def json_response(data: msgspec.Struct | dict[str, Any], status: int = 200) -> web.Response:
    """A view of :mod:`shared.views` (or a probe's small dict) as JSON."""
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


_encoder = msgspec.json.Encoder()


def error(status: int, message: str, reasons: list[str] | None = None) -> web.Response:
    return json_response(ErrorView(error=message, reasons=list(reasons or [])), status=status)


def token_middleware(token: str) -> Any:  # aiohttp's Middleware protocol
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "")
            if given or not auth.has_cookie(request, token):
                # Constant-time comparison: the token never leaks through timing.
                if not hmac.compare_digest(given.encode(), expected):
                    return error(401, "missing or invalid bearer token")
            elif (refused := auth.cross_site(request)) is not None:
                # The dashboard's cookie: a request that changes something must come
                # from the dashboard's own script.
                return error(403, refused)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason)
            raise
        except StoreError as exc:
            # Holding: reads that need the store wait for it like everything else.
            log.warning("%s %s: store unreachable: %s", request.method, request.path, exc)
            return error(503, f"the coordinator's store is unreachable: {exc}")

    return check


async def _body(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise web.HTTPBadRequest(reason=f"invalid request body: {exc}") from exc


def _actor(request: web.Request, given: str | None) -> str:
    return given or request.headers.get("X-Rollguard-Actor", "") or "api"


async def healthz(_: web.Request) -> web.Response:
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    ready, detail = request.app[COORDINATOR_KEY].readiness()
    return json_response({"ready": ready, **detail}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    coordinator.refresh_telemetry()
    body = generate_latest(coordinator.telemetry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def hosts(request: web.Request) -> web.Response:
    registry = request.app[COORDINATOR_KEY].hosts
    return json_response(HostList(hosts=[host_view(e) for e in registry.entries()]))


async def _load(coordinator: Daemon, deployment_id: str) -> Deployment | None:
    # The stored row is the one source: what the API shows is what has been committed,
    # in step with the event log (the engine may be a step ahead, not yet stored).
    record = await coordinator.store.get_deployment(deployment_id)
    return None if record is None else decode_deployment(record.body)


async def list_deployments(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="limit must be an integer") from exc
    if not 1 <= limit <= MAX_LIST_LIMIT:
        # SQLite reads LIMIT -1 as "no limit": never pass a bound the caller chose.
        raise web.HTTPBadRequest(
            reason=f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
        )
    environment = request.query.get("environment")
    records = await coordinator.store.list_deployments(limit, environment)
    now = coordinator.clock()
    out = [deployment_view(decode_deployment(record.body), now) for record in records]
    return json_response(DeploymentList(deployments=out))


async def list_alerts(request: web.Request) -> web.Response:
    """The firing alerts (all of them), then the ``limit`` most recent resolved ones."""
    coordinator = request.app[COORDINATOR_KEY]
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="limit must be an integer") from exc
    if not 1 <= limit <= MAX_ALERTS_LIMIT:
        raise web.HTTPBadRequest(
            reason=f"limit must be between 1 and {MAX_ALERTS_LIMIT}, got {limit}"
        )
    firing = await coordinator.store.alerts(active_only=True, limit=MAX_FIRING_ALERTS)
    recent = await coordinator.store.alerts(limit=limit + len(firing))
    resolved = [row for row in recent if row.resolved is not None][:limit]
    environments = {e.record.host: e.record.environment for e in coordinator.hosts.entries()}
    told = coordinator.notifier.alerts.told
    views = [
        alert_view(row, told(row.key, row.started), environments.get(row.host or ""))
        for row in [*firing, *resolved]
    ]
    return json_response(AlertList(alerts=views))


async def get_deployment(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    dep = await _load(coordinator, request.match_info["id"])
    if dep is None:
        return error(404, f"no deployment {request.match_info['id']!r}")
    return json_response(DeploymentReply(deployment=deployment_view(dep, coordinator.clock())))


async def deployment_events(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    deployment_id = request.match_info["id"]
    if await _load(coordinator, deployment_id) is None:
        return error(404, f"no deployment {deployment_id!r}")
    events = await coordinator.store.events(deployment=deployment_id, limit=100_000)
    return json_response(EventList(events=[event_view(e) for e in events]))


async def _run(coordinator: Daemon, request: OperatorRequest) -> web.Response:
    try:
        reply, stored = await coordinator.request(request)
    except RollguardError as exc:
        return error(503, str(exc))
    except TimeoutError:
        return error(503, "the coordinator could not store the decision in time")
    if not reply.accepted:
        return error(409, reply.message, reply.reasons)
    if not stored:
        return error(503, "the decision could not be stored; the coordinator is holding")
    dep = await _load(coordinator, request.deployment_id)
    view = deployment_view(dep, coordinator.clock()) if dep is not None else None
    answer = OperatorReplyView(
        accepted=True, changed=reply.changed, message=reply.message, deployment=view
    )
    return json_response(answer, status=201 if request.action == "start" else 200)


async def create_deployment(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    body: DeployRequest = await _body(request, DeployRequest)
    operator = OperatorRequest(
        deployment_id=new_deployment_id(coordinator.clock()),
        action="start",
        actor=_actor(request, body.actor),
        reason=body.reason,
        version=body.version,
        environment=body.environment,
        strategy=body.strategy,
        hosts=body.hosts,
    )
    return await _run(coordinator, operator)


async def act(request: web.Request) -> web.Response:
    coordinator = request.app[COORDINATOR_KEY]
    action = request.match_info["action"]
    if action not in ACTIONS:
        return error(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    deployment_id = request.match_info["id"]
    body: ActionRequest = await _body(request, ActionRequest)
    if await _load(coordinator, deployment_id) is None:
        return error(404, f"no deployment {deployment_id!r}")
    operator = OperatorRequest(
        deployment_id=deployment_id,
        action=action,  # type: ignore[arg-type]
        actor=_actor(request, body.actor),
        reason=body.reason,
        step=body.step,
    )
    return await _run(coordinator, operator)


async def events_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the stored events after ``?after=SEQ``, then live ones."""
    coordinator = request.app[COORDINATOR_KEY]
    try:
        after = int(request.query.get("after", "0"))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="after must be an integer event seq") from exc
    deployment = request.query.get("deployment")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    async with coordinator.hub.subscribe() as live:
        # Subscribe first, then replay: nothing committed in between is missed, and
        # duplicates are skipped by seq.
        try:
            stored = await coordinator.store.events(after, deployment, limit=10_000)
        except StoreError as exc:
            # The stream is open already: say why it ends; the client retries with
            # ?after=SEQ.
            message = _encoder.encode(StreamError(error=f"the store is unreachable: {exc}"))
            await response.write(b"event: error\ndata: " + message + b"\n\n")
            return response
        for event in stored:
            await _send_event(response, event)
            after = event.seq
        with contextlib.suppress(ListenerLagged, ConnectionResetError, asyncio.CancelledError):
            async for event in live:
                if event.seq <= after or (deployment and event.deployment != deployment):
                    continue
                await _send_event(response, event)
                after = event.seq
    return response


async def _send_event(response: web.StreamResponse, event: Event) -> None:
    data = _encoder.encode(event_view(event)).decode()
    await response.write(f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode())


def build_app(coordinator: Daemon, token: str) -> web.Application:
    app = web.Application(middlewares=[token_middleware(token)], client_max_size=256 * 1024)
    app[COORDINATOR_KEY] = coordinator
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/hosts", hosts)
    app.router.add_get("/api/v1/deployments", list_deployments)
    app.router.add_post("/api/v1/deployments", create_deployment)
    app.router.add_get("/api/v1/deployments/{id}", get_deployment)
    app.router.add_get("/api/v1/deployments/{id}/events", deployment_events)
    app.router.add_post("/api/v1/deployments/{id}/{action}", act)
    app.router.add_get("/api/v1/events", events_stream)
    app.router.add_get("/api/v1/alerts", list_alerts)
    add_dashboard(app, coordinator, token)
    return app
