"""A minimal HTTP/1.1 GET over asyncio streams, for the application probe and scrape.

Why not aiohttp: importing it costs ~10 MB of resident memory, close to a third of the
agent's 35 MB budget (design section 6), for what is one request line, a status code
and a bounded body. This client sends ``Connection: close``, reads the status line and
headers, and the body by Content-Length, chunked encoding or until EOF, never more
than ``max_body`` bytes. It follows no redirects: a 3xx is an answer, as for a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from agent import __version__

MAX_LINE: Final = 16 * 1024
MAX_HEADERS: Final = 100
USER_AGENT: Final = f"rollguard-agent/{__version__}"


class HttpError(Exception):
    """The peer's answer is not an HTTP/1.x response this client can read."""


class Target(NamedTuple):
    tls: bool
    host: str
    port: int
    request: bytes


class Response(NamedTuple):
    status: int
    body: bytes


def target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return Target(tls, parts.hostname, port, request)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built on first use only: loading the CA store costs memory a plain-http agent
    # never needs.
    return ssl.create_default_context()


async def get(where: Target, *, max_body: int) -> Response:
    """One GET; raises OSError (connect), HttpError (protocol) or TimeoutError is left
    to the caller's ``asyncio.timeout``."""
    reader, writer = await asyncio.open_connection(
        where.host,
        where.port,
        ssl=_tls_context() if where.tls else None,
        server_hostname=where.host if where.tls else None,
        limit=MAX_LINE,
    )
    try:
        writer.write(where.request)
        await writer.drain()
        status, headers = await _read_head(reader)
        if status in {204, 304} or 100 <= status < 200:
            return Response(status, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader, max_body)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise HttpError("invalid Content-Length") from None
            body = await _read_exactly(reader, min(length, max_body))
        else:
            body = await reader.read(max_body)
        return Response(status, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readline()
    except ValueError:  # LimitOverrunError: a line longer than MAX_LINE
        raise HttpError(f"response line longer than {MAX_LINE} bytes") from None
    if not line:
        raise HttpError("connection closed before a complete response")
    return line


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = (await _readline(reader)).decode("latin-1").rstrip("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = (await _readline(reader)).decode("latin-1").rstrip("\r\n")
        if not line:
            return int(code), headers
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    raise HttpError(f"more than {MAX_HEADERS} response headers")


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise HttpError(
            f"connection closed after {len(exc.partial)} of {size} body bytes"
        ) from None


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while len(body) < max_body:
        size_line = (await _readline(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise HttpError(f"invalid chunk size {size_line[:20]!r}") from None
        if size == 0:
            break
        body += await _read_exactly(reader, min(size, max_body - len(body)))
        if len(body) >= max_body:
            break
        await _read_exactly(reader, 2)  # the CRLF after each chunk
    return bytes(body)
