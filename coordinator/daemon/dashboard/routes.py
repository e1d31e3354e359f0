"""The dashboard's routes on the coordinator's HTTP server.

``/login`` (the token, kept in a cookie), ``/logout``, the page itself at
``/dashboard/`` and ``/deployments/{id}`` (where notifications link), a deployment's
report at ``/deployments/{id}/report``, the page's static files, and
``GET /api/v1/fleet`` (the fleet summarised and paged, so the page never holds
10,000 hosts). Everything is served from the package: the page fetches nothing from
any other server.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Final, Protocol

import msgspec
from aiohttp import web

from coordinator.daemon.dashboard import auth
from coordinator.daemon.dashboard.fleet import PAGE_SIZE, fleet_view
from coordinator.daemon.hosts import HostRegistry
from coordinator.daemon.views import deployment_view, event_view, host_view
from coordinator.engine.state import decode_deployment
from coordinator.store import Store
from shared.kinds import EventKind

log = logging.getLogger(__name__)

STATIC: Final = resources.files("coordinator.daemon.dashboard") / "static"
STATIC_TYPES: Final = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}
# Pages: no framing by other sites, no script or style from anywhere else.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Source(Protocol):
    """What the dashboard needs of the daemon."""

    hosts: HostRegistry
    store: Store

    def clock(self) -> float: ...


SOURCE_KEY: web.AppKey[Source] = web.AppKey("dashboard-source")
TOKEN_KEY: web.AppKey[str] = web.AppKey("dashboard-token")


def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _page(name: str) -> web.Response:
    return web.Response(body=_static(name), content_type="text/html", headers=PAGE_HEADERS)


async def login_page(request: web.Request) -> web.StreamResponse:
    if auth.has_cookie(request, request.app[TOKEN_KEY]):
        raise web.HTTPSeeOther("/dashboard/")
    return _page("login.html")


async def login(request: web.Request) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin is not None and origin != auth.own_origin(request):
        return web.Response(status=403, text=f"cross-origin login from {origin} refused")
    form = await request.post()
    given = form.get("token")
    token = request.app[TOKEN_KEY]
    if not isinstance(given, str) or not auth.token_matches(given.strip(), token):
        log.warning("dashboard login refused from %s: wrong token", request.remote)
        raise web.HTTPSeeOther("/login?failed=1")
    name = form.get("name")
    actor = " ".join(name.split()) if isinstance(name, str) else ""
    response = web.HTTPSeeOther("/dashboard/")
    auth.set_cookie(request, response, token, actor)
    raise response


async def logout(_: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    auth.clear_cookie(response)
    raise response


def _guard(request: web.Request) -> None:
    if not auth.has_cookie(request, request.app[TOKEN_KEY]):
        raise web.HTTPSeeOther("/login")


async def root(_: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/dashboard/")


async def dashboard(request: web.Request) -> web.StreamResponse:
    _guard(request)
    return _page("index.html")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise web.HTTPNotFound(reason=f"no static file {name!r}")
    try:
        body = _static(name)
    except FileNotFoundError as exc:
        raise web.HTTPNotFound(reason=f"no static file {name!r}") from exc
    return web.Response(
        body=body, content_type=STATIC_TYPES[suffix], headers={"Cache-Control": "no-cache"}
    )


async def kinds(_: web.Request) -> web.Response:
    """The event kinds the stream names its events by (the page listens for each)."""
    return web.Response(
        body=msgspec.json.encode([kind.value for kind in EventKind]),
        content_type="application/json",
    )


async def report(request: web.Request) -> web.StreamResponse:
    """The deployment's report (coordinator/report) as HTML, from what is stored."""
    _guard(request)
    from coordinator.report import build_report, render

    source = request.app[SOURCE_KEY]
    deployment_id = request.match_info["id"]
    record = await source.store.get_deployment(deployment_id)
    if record is None:
        raise web.HTTPNotFound(reason=f"no deployment {deployment_id!r}")
    dep = deployment_view(decode_deployment(record.body), source.clock())
    events = [
        event_view(e) for e in await source.store.events(deployment=deployment_id, limit=100_000)
    ]
    hosts = [host_view(e) for e in source.hosts.entries()]
    text = render(build_report(dep, events, hosts, generated=time.time()), "html")
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


async def fleet(request: web.Request) -> web.Response:
    """``?q=WORDS&page=N&size=N``: the fleet by environment and zone, one page of hosts."""
    source = request.app[SOURCE_KEY]
    try:
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("size", str(PAGE_SIZE)))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="page and size must be integers") from exc
    hosts = [host_view(e) for e in source.hosts.entries()]
    try:
        view = fleet_view(hosts, query=request.query.get("q", ""), page=page, size=size)
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from exc
    return web.Response(body=msgspec.json.encode(view), content_type="application/json")


def add_routes(app: web.Application, source: Source, token: str) -> None:
    app[SOURCE_KEY] = source
    app[TOKEN_KEY] = token
    app.router.add_get("/", root)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/dashboard/", dashboard)
    app.router.add_get("/dashboard/static/{name}", static)
    app.router.add_get("/dashboard/kinds.json", kinds)
    app.router.add_get("/deployments/{id}", dashboard)
    app.router.add_get("/deployments/{id}/report", report)
    app.router.add_get("/api/v1/fleet", fleet)
