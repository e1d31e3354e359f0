"""The coordinator's HTTP API as the CLI sees it: the client, its errors and the exit
codes every command shares. The follower and the demo use it too, so it lives apart
from the commands.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from shared.errors import RollguardError
from shared.phases import Phase
from shared.views import DeploymentReply, DeploymentView, ErrorView, EventList, EventView

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_ROLLED_BACK: Final = 3
EXIT_INTERRUPTED: Final = 130
DEFAULT_URL: Final = "http://127.0.0.1:8470"
DEFAULT_TOKEN_FILE: Final = "/var/lib/rollguard/api.token"
HTTP_TIMEOUT: Final = 10.0
# What ``--wait`` exits with once the deployment is over.
OUTCOME_CODES: Final[dict[Phase, int]] = {
    Phase.COMPLETED: EXIT_OK,
    Phase.ROLLED_BACK: EXIT_ROLLED_BACK,
    Phase.FAILED: EXIT_FAILURE,
    Phase.REFUSED: EXIT_FAILURE,
}
T = TypeVar("T")


class CliError(RollguardError):
    """What the CLI tells the operator before exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.reasons = list(reasons)


# -- talking to the coordinator ---------------------------------------------------


class Client:
    """The coordinator's HTTP API: JSON in and out, errors as :class:`CliError`."""

    def __init__(self, url: str, token: str | None, actor: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(
                f"the coordinator URL must be http(s)://HOST[:PORT], not {url!r}", EXIT_USAGE
            )
        self.url = url.rstrip("/")
        self.token = token
        self.actor = actor

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, accept: str
    ) -> urllib.request.Request:
        headers = {"Accept": accept}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.actor:
            headers["X-Rollguard-Actor"] = self.actor
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return urllib.request.Request(  # noqa: S310 - the URL is the operator's own, http(s)
            self.url + path, data=data, headers=headers, method=method
        )

    def request(
        self,
        method: str,
        path: str,
        kind: type[T],
        body: dict[str, Any] | None = None,
        *,
        timeout: float = HTTP_TIMEOUT,
    ) -> T:
        """Call the API and decode its answer as ``kind`` (a view of shared.views)."""
        request = self._request(method, path, body, "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:  # its socket, closed rather than left to the garbage collector
                raise self._http_error(exc) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        try:
            return msgspec.json.decode(raw, type=kind)
        except msgspec.ValidationError as exc:
            raise CliError(
                f"{self.url} answered {path} in a form this rollguard does not know: {exc} "
                "(are the CLI and the coordinator the same version?)"
            ) from exc
        except msgspec.DecodeError as exc:
            raise CliError(
                f"{self.url} did not answer like a rollguard coordinator (not JSON from {path})"
            ) from exc

    def stream(self, path: str, *, timeout: float) -> http.client.HTTPResponse:
        """An open response to read server-sent events from; the caller closes it."""
        request = self._request("GET", path, None, "text/event-stream")
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(  # noqa: S310
                request, timeout=timeout
            )
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._http_error(exc) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        return response

    def _unreachable(self, exc: BaseException) -> CliError:
        reason = getattr(exc, "reason", None) or exc
        return CliError(
            f"cannot reach the coordinator at {self.url}: {reason} "
            "(is it running? set --url or $ROLLGUARD_URL)"
        )

    def _http_error(self, exc: urllib.error.HTTPError) -> CliError:
        message, reasons = _error_body(exc)
        if exc.code in (401, 403):
            if not self.token:
                return CliError(
                    "no API token: pass --token-file FILE or set $ROLLGUARD_TOKEN_FILE or "
                    "$ROLLGUARD_TOKEN (the coordinator writes its token to "
                    "<state_dir>/api.token)",
                    EXIT_USAGE,
                )
            return CliError(f"the coordinator refused the token: {message}", EXIT_USAGE)
        if exc.code in (400, 404, 405, 413, 422):
            return CliError(message, EXIT_USAGE, reasons)
        if exc.code == 409:
            return CliError(message, EXIT_FAILURE, reasons)
        if exc.code == 503:
            return CliError(f"the coordinator cannot act now: {message}", EXIT_FAILURE, reasons)
        return CliError(f"coordinator error ({exc.code}): {message}", EXIT_FAILURE, reasons)


def _error_body(exc: urllib.error.HTTPError) -> tuple[str, list[str]]:
    """The coordinator's error and reasons; the HTTP reason from anything else (a
    proxy's page, say)."""
    try:
        body = msgspec.json.decode(exc.read(), type=ErrorView)
    except (msgspec.DecodeError, OSError):
        return str(exc.reason), []
    return body.error, body.reasons


def _token(args: argparse.Namespace) -> str | None:
    if os.environ.get("ROLLGUARD_TOKEN"):
        return os.environ["ROLLGUARD_TOKEN"].strip()
    given = args.token_file or os.environ.get("ROLLGUARD_TOKEN_FILE")
    path = Path(given or DEFAULT_TOKEN_FILE)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        if given:
            raise CliError(f"token file {path} does not exist", EXIT_USAGE) from None
        return None
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}", EXIT_USAGE) from exc


def operator_name() -> str:
    """Who is acting, for the record: the login name, else a placeholder."""
    try:
        return getpass.getuser()[:128] or "cli"
    except (OSError, KeyError):
        return "cli"


def client_for(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get("ROLLGUARD_URL") or DEFAULT_URL
    return Client(url, _token(args), operator_name())


def print_json(data: Any) -> None:
    """Views (and plain data) as indented JSON, keys sorted."""
    print(json.dumps(msgspec.to_builtins(data), indent=2, sort_keys=True))


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def quote_path(path: str) -> str:
    return urllib.parse.quote(path, safe="")


def get_deployment(client: Client, deployment_id: str) -> DeploymentView:
    path = f"/api/v1/deployments/{quote_path(deployment_id)}"
    return client.request("GET", path, DeploymentReply).deployment


def get_events(client: Client, deployment_id: str) -> list[EventView]:
    path = f"/api/v1/deployments/{quote_path(deployment_id)}/events"
    return client.request("GET", path, EventList).events
