"""``rollguard``: the operator CLI.

Exit codes: 0 done, 1 failure (including an unreachable coordinator), 2 usage or
config error (including a refused token), 3 (with ``deploy --wait``) rolled back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn

from shared.errors import RollguardError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_ROLLED_BACK: Final = 3
DEFAULT_URL: Final = "http://127.0.0.1:8470"
DEFAULT_TOKEN_FILE: Final = "/var/lib/rollguard/api.token"
HTTP_TIMEOUT: Final = 10.0


class CliError(RollguardError):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# -- talking to the coordinator ---------------------------------------------------


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own
            self.url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            message = _error_text(exc)
            if exc.code in (401, 403):
                raise CliError(f"the coordinator refused the token: {message}", EXIT_USAGE) from exc
            if 400 <= exc.code < 500:
                raise CliError(f"refused ({exc.code}): {message}", EXIT_USAGE) from exc
            raise CliError(f"coordinator error ({exc.code}): {message}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the coordinator at {self.url}: {reason}") from exc


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", exc.reason))
    except (ValueError, AttributeError):
        return str(exc.reason)


def _token(args: argparse.Namespace) -> str | None:
    if os.environ.get("ROLLGUARD_TOKEN"):
        return os.environ["ROLLGUARD_TOKEN"]
    path = Path(args.token_file or os.environ.get("ROLLGUARD_TOKEN_FILE") or DEFAULT_TOKEN_FILE)
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if args.token_file:
            raise CliError(f"token file {path} does not exist", EXIT_USAGE) from None
        return None
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}", EXIT_USAGE) from exc


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url or os.environ.get("ROLLGUARD_URL") or DEFAULT_URL, _token(args))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# -- commands -----------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from shared.signing import generate_keypair

    private, public = generate_keypair(Path(args.dir))
    print(f"private key (coordinator only): {private}")
    print(f"public key (every agent):       {public}")
    return EXIT_OK


def cmd_credentials(args: argparse.Namespace) -> int:
    from coordinator.credentials import generate

    passwd = generate(Path(args.dir), args.hosts)
    print(f"mosquitto password file: {passwd}")
    print(f"one <user>.password file per host and service user in {args.dir}")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    import msgspec

    from shared.config import AgentConfig, CoordinatorConfig, load

    path = Path(args.file)
    kind = args.kind
    if kind is None:
        # An agent config names its host; a coordinator config never does.
        try:
            raw = msgspec.toml.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise CliError(f"{path}: {exc}", EXIT_USAGE) from exc
        kind = "agent" if isinstance(raw, dict) and "host" in raw else "coordinator"
    config: AgentConfig | CoordinatorConfig = (
        load(AgentConfig, path) if kind == "agent" else load(CoordinatorConfig, path)
    )
    if args.json:
        _print_json(
            {"file": str(path), "kind": kind, "ok": True, "config": msgspec.to_builtins(config)}
        )
    else:
        print(f"{path}: valid {kind} config")
    return EXIT_OK


def cmd_hosts(args: argparse.Namespace) -> int:
    data = _client(args).request("GET", "/api/v1/hosts")
    if args.json:
        _print_json(data)
        return EXIT_OK
    hosts = data["hosts"]
    if not hosts:
        print("no hosts have reported yet")
        return EXIT_OK
    rows: list[tuple[str, ...]] = [
        ("HOST", "STATE", "ENV", "VERSION", "SLOT", "CPU%", "MEM%", "DISK%")
    ]
    for host in hosts:
        checks = host.get("checks", {})
        gauges = [checks.get(name, {}).get("values", {}).get("percent") for name in _GAUGES]
        rows.append(
            (
                host["host"],
                "online" if host["online"] else "OFFLINE",
                host["environment"],
                host.get("version") or "-",
                host.get("slot") or "-",
                *(f"{value:.1f}" if value is not None else "-" for value in gauges),
            )
        )
    _print_table(rows)
    return EXIT_OK


_GAUGES: Final = ("cpu", "memory", "disk")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def cmd_demo(args: argparse.Namespace) -> int:
    from coordinator.demo import run_demo

    return run_demo(Path(args.dir), seconds=args.seconds)


# -- parser -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _connection_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--url", default=default, help=f"coordinator API (default $ROLLGUARD_URL or {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token-file",
        default=default,
        help=f"API token file (default $ROLLGUARD_TOKEN_FILE or {DEFAULT_TOKEN_FILE})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rollguard", description="Operate rollguard deployments.")
    _connection_options(parser, None)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    common = _Parser(add_help=False)
    _connection_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        json_flag: bool = False,
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_, description=help_, parents=[common])
        command.set_defaults(func=func)
        if json_flag:
            command.add_argument("--json", action="store_true", help="print JSON")
        return command

    add("hosts", cmd_hosts, "list the hosts the coordinator sees", json_flag=True)

    keys = sub.add_parser("keys", help="command-signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    generate = keys_sub.add_parser("generate", help="create an Ed25519 key pair in DIR")
    generate.add_argument("dir")
    generate.set_defaults(func=cmd_keys_generate)

    config = sub.add_parser("config", help="configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    check = config_sub.add_parser("check", help="validate an agent or coordinator config")
    check.add_argument("file")
    check.add_argument("--kind", choices=["agent", "coordinator"], help="default: detect")
    check.add_argument("--json", action="store_true", help="print the parsed config as JSON")
    check.set_defaults(func=cmd_config_check)

    credentials = add("credentials", cmd_credentials, "create broker credentials for hosts")
    credentials.add_argument("dir", help="directory for the passwd file and password files")
    credentials.add_argument("hosts", nargs="*", help="host ids")

    demo = add("demo", cmd_demo, "run a local broker, coordinator and agents and show them")
    demo.add_argument("--dir", default=".demo", help="working directory (default .demo)")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to watch")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        return exc.code
    except RollguardError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
