"""The dashboard's login: the API token, given once on the login page, kept in an
HttpOnly, SameSite=Strict cookie (never in a URL, never readable by the page's script).

The /api routes take the cookie as well as the bearer header. A request that changes
something (POST) and is authorised by the cookie alone must also carry the header
``X-Rollguard-Request`` (which only the page's own script sets: a cross-site form
cannot, and a cross-site script cannot without a CORS preflight this server never
allows) and, when the browser sends one, an ``Origin`` of this server.
"""

from __future__ import annotations

import hmac
from typing import Final
from urllib.parse import quote

from aiohttp import web

COOKIE: Final = "rollguard_token"
# Who logged in, for the event log's actor: not a secret, so the page may read it.
ACTOR_COOKIE: Final = "rollguard_actor"
ACTOR_MAX: Final = 100
CSRF_HEADER: Final = "X-Rollguard-Request"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def token_matches(given: str, token: str) -> bool:
    """Constant-time: the token never leaks through timing."""
    return hmac.compare_digest(given.encode(), token.encode())


def has_cookie(request: web.Request, token: str) -> bool:
    given = request.cookies.get(COOKIE, "")
    return bool(given) and token_matches(given, token)


def cross_site(request: web.Request) -> str | None:
    """Why a cookie-authorised request that changes something is refused, or None."""
    if request.method in SAFE_METHODS:
        return None
    if not request.headers.get(CSRF_HEADER):
        return f"a request from the dashboard must carry the {CSRF_HEADER} header"
    origin = request.headers.get("Origin")
    if origin is not None and origin != own_origin(request):
        return f"cross-origin request from {origin} refused"
    return None


def own_origin(request: web.Request) -> str:
    # Behind a TLS proxy the browser's origin is https while this server sees http.
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return f"{scheme}://{request.host}"


def set_cookie(
    request: web.Request, response: web.StreamResponse, token: str, actor: str = ""
) -> None:
    secure = own_origin(request).startswith("https://")
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/")
    if actor:
        response.set_cookie(
            ACTOR_COOKIE, quote(actor[:ACTOR_MAX]), samesite="Strict", secure=secure, path="/"
        )
    else:
        response.del_cookie(ACTOR_COOKIE, path="/")


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
    response.del_cookie(ACTOR_COOKIE, path="/")
