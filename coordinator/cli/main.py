"""``rollguard``: the operator CLI, over the coordinator's HTTP API.

Exit codes: 0 done (with ``--wait``: completed), 1 failure (an unreachable coordinator,
a request the engine refused, a deployment that failed or was refused), 2 usage or
config error (bad arguments, a refused token, an unknown deployment), 3 (with
``--wait``) rolled back. Ctrl-C while following a deployment leaves it running.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn

from coordinator.cli.client import (
    DEFAULT_TOKEN_FILE,
    DEFAULT_URL,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OUTCOME_CODES,
    Client,
    CliError,
    client_for,
    get_deployment,
    get_events,
    print_json,
    print_table,
    quote_path,
)
from shared import __version__
from shared.config.files import AGENT_UNIT
from shared.errors import RollguardError
from shared.phases import TERMINAL, Phase
from shared.views import AlertList, DeploymentList, DeploymentView, HostList, OperatorReplyView

# -- local commands -----------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from shared.signing import generate_keypair

    try:
        private, public = generate_keypair(Path(args.dir))
    except ModuleNotFoundError as exc:
        raise CliError(
            f"generating keys needs {exc.name}: pip install 'rollguard[coordinator]'", EXIT_USAGE
        ) from exc
    print(f"private key (coordinator only): {private}")
    print(f"public key (every agent):       {public}")
    return EXIT_OK


def cmd_credentials(args: argparse.Namespace) -> int:
    from coordinator.devfleet.broker import PROJECT_ACL
    from coordinator.setup.credentials import coordinator_user, generate, reader_user, write_acl

    services = [coordinator_user(node) for node in args.coordinator]
    services += [reader_user(name) for name in args.reader]
    directory = Path(args.dir)
    passwd = generate(directory, args.hosts, services)
    acl = write_acl(directory, PROJECT_ACL.read_text(encoding="utf-8"))
    print(f"mosquitto password file: {passwd}")
    print(f"mosquitto ACL: {acl}")
    print(f"one <user>.password file per host and service user in {args.dir}")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    import msgspec

    from shared.config import AgentConfig, CoordinatorConfig, load, load_any

    path = Path(args.file)
    config: AgentConfig | CoordinatorConfig
    if args.kind == "agent":
        config = load(AgentConfig, path)
    elif args.kind == "coordinator":
        config = load(CoordinatorConfig, path)
    else:
        # An agent config names its host; a coordinator config never does.
        config = load_any(path)
    kind = "agent" if isinstance(config, AgentConfig) else "coordinator"
    if not args.syntax_only:
        # The files it names, as the daemon will read them at start.
        if isinstance(config, AgentConfig):
            from agent.main import check_files

            check_files(config, str(path), unit=args.unit)
        else:
            _coordinator_files(config, path)
    if args.json:
        print_json(
            {"file": str(path), "kind": kind, "ok": True, "config": msgspec.to_builtins(config)}
        )
    else:
        print(f"{path}: valid {kind} config")
    return EXIT_OK


def _coordinator_files(config: Any, path: Path) -> None:
    from shared.config import ConfigError
    from shared.config.files import coordinator_files
    from shared.errors import SignatureError

    try:
        coordinator_files(config)
        if config.private_key_file:
            from shared.signing import load_private_key

            load_private_key(Path(config.private_key_file))
    except ModuleNotFoundError as exc:
        raise CliError(
            f"{path}: checking the private key needs {exc.name}: "
            "pip install 'rollguard[coordinator]'",
            EXIT_USAGE,
        ) from exc
    except (ConfigError, SignatureError) as exc:
        raise CliError(f"{path}: {exc}", EXIT_USAGE) from exc


def cmd_setup(args: argparse.Namespace) -> int:
    from coordinator.setup import install

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    steps: list[install.Step]
    if args.role == "broker":
        steps = install.broker_plan(
            Path(args.dir),
            args.hosts,
            user=args.user,
            coordinator_nodes=args.coordinator,
            reader_names=args.reader,
        )
    elif args.role == "coordinator":
        steps = install.coordinator_plan(
            Path(args.config_dir),
            Path(args.state_dir),
            user=args.user,
            group=args.group,
            mqtt_password=path(args.mqtt_password),
            ca_file=path(args.ca),
        )
    else:
        steps = install.agent_plan(
            args.host,
            Path(args.config_dir),
            state_dir=Path(args.state_dir),
            deploy_root=Path(args.deploy_root),
            user=args.user,
            mqtt_password=path(args.mqtt_password),
            public_key=path(args.public_key),
            ca_file=path(args.ca),
        )
    install.run(steps, dry_run=args.dry_run, echo=print)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        import aiohttp  # noqa: F401  (the coordinator's extra)
    except ModuleNotFoundError as exc:
        raise CliError(
            f"the demo runs a coordinator, which needs {exc.name}: "
            "pip install 'rollguard[coordinator]'",
            EXIT_USAGE,
        ) from exc
    from coordinator.cli.demo import run_demo

    return run_demo(Path(args.dir), hosts=args.hosts, keep=args.keep)


# -- fleet --------------------------------------------------------------------------

_GAUGES: Final = ("cpu", "memory", "disk")


def cmd_hosts(args: argparse.Namespace) -> int:
    data = client_for(args).request("GET", "/api/v1/hosts", HostList)
    if args.json:
        print_json(data)
        return EXIT_OK
    hosts = data.hosts
    if not hosts:
        print("no hosts have reported yet")
        return EXIT_OK
    rows: list[tuple[str, ...]] = [
        ("HOST", "STATE", "ENV", "VERSION", "SLOT", "CPU%", "MEM%", "DISK%", "ERRORS")
    ]
    for host in hosts:
        gauges = [host.value(name, "percent") for name in _GAUGES]
        errors = host.value("application", "traffic_error_rate")
        if errors is None:
            errors = host.value("application", "error_rate")
        rows.append(
            (
                host.host,
                "online" if host.online else "OFFLINE",
                host.environment,
                host.version or "-",
                host.slot or "-",
                *(f"{value:.1f}" if value is not None else "-" for value in gauges),
                f"{errors * 100:.2f}%" if errors is not None else "-",
            )
        )
    print_table(rows)
    return EXIT_OK


def _for(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def cmd_alerts(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise CliError(f"--limit must be between 1 and 500, got {args.limit}", EXIT_USAGE)
    data = client_for(args).request("GET", f"/api/v1/alerts?limit={args.limit}", AlertList)
    if args.json:
        print_json(data)
        return EXIT_OK
    if not data.alerts:
        print("no alerts")
        return EXIT_OK
    now = time.time()
    rows: list[tuple[str, ...]] = [("STATE", "SINCE (UTC)", "FOR", "HOST", "RULE", "WHAT", "TOLD")]
    for alert in data.alerts:
        end = alert.resolved if alert.resolved is not None else now
        sent = sorted({d.target for d in alert.told if d.outcome == "sent"})
        failed = sorted({d.target for d in alert.told if d.outcome != "sent"} - set(sent))
        told = ", ".join([*sent, *(f"{t} (failed)" for t in failed)]) or "log only"
        rows.append(
            (
                "FIRING" if alert.resolved is None else "resolved",
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(alert.started)),
                _for(max(0.0, end - alert.started)),
                alert.host or "-",
                alert.rule,
                alert.message,
                told,
            )
        )
    print_table(rows)
    return EXIT_OK


# -- deployments ---------------------------------------------------------------------


def _hosts_argument(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    hosts = [h.strip() for value in values for h in value.split(",") if h.strip()]
    if not hosts:
        raise CliError("--hosts needs at least one host id", EXIT_USAGE)
    return hosts


def cmd_deploy(args: argparse.Namespace) -> int:
    client = client_for(args)
    body: dict[str, Any] = {"version": args.version, "environment": args.env}
    if args.strategy:
        body["strategy"] = args.strategy
    hosts = _hosts_argument(args.hosts)
    if hosts is not None:
        body["hosts"] = hosts
    if args.reason:
        body["reason"] = args.reason
    reply = client.request("POST", "/api/v1/deployments", OperatorReplyView, body)
    deployment = reply.deployment
    if deployment is None:
        raise CliError("the coordinator accepted the deployment but did not show it")
    if not args.wait:
        if args.json:
            print_json(reply)
        else:
            print(_started_words(deployment))
            print(f"follow it:  rollguard status {deployment.id} --wait")
        return EXIT_OK
    out = sys.stderr if args.json else sys.stdout
    print(_started_words(deployment), file=out, flush=True)
    return _wait(client, deployment, json_out=args.json, timeout=args.timeout)


def _started_words(deployment: DeploymentView) -> str:
    steps = " → ".join(s.name for s in deployment.steps)
    targets = len(deployment.targets)
    return (
        f"deployment {deployment.id}: {deployment.version} to {targets} "
        f"{deployment.environment} host{'s' if targets != 1 else ''} by "
        f"{deployment.strategy}"
        + (f" ({steps})" if steps else "")
        + f", from {deployment.from_version or 'nothing'}"
    )


def _wait(
    client: Client, deployment: DeploymentView, *, json_out: bool, timeout: float | None
) -> int:
    from coordinator.cli.follow import Progress, follow

    out = sys.stderr if json_out else sys.stdout
    progress = Progress(out, tty=out.isatty(), start=deployment.created)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = deployment
    try:
        for update in follow(client, deployment.id, initial=deployment, deadline=deadline):
            last = update.deployment
            progress.update(update)
    except KeyboardInterrupt:
        progress.close()
        print(
            f"\nstopped following; deployment {last.id} keeps running "
            f"({last.phase.value}). Follow it again with: rollguard status {last.id} --wait",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except TimeoutError:
        progress.close()
        print(
            f"rollguard: still {last.phase.value} after {timeout:g} s; deployment "
            f"{last.id} keeps running (rollguard status {last.id} --wait)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        progress.close()
    if json_out:
        print_json({"deployment": last})
    else:
        print(_outcome_words(last))
        print(f"report:  rollguard report {last.id}")
    return OUTCOME_CODES.get(last.phase, EXIT_FAILURE)


def _outcome_words(deployment: DeploymentView) -> str:
    from coordinator.report.words import STATE_WORDS, duration

    phase = deployment.phase
    text = f"deployment {deployment.id} {STATE_WORDS[phase]}"
    if deployment.finished is not None:
        text += f" after {duration(deployment.finished - deployment.created)}"
    if phase is Phase.ROLLED_BACK and deployment.rollback_reason:
        return f"{text}: {deployment.rollback_reason}"
    if phase in (Phase.FAILED, Phase.REFUSED) and deployment.summary:
        return f"{text}: {deployment.summary}"
    return text


def cmd_status(args: argparse.Namespace) -> int:
    client = client_for(args)
    if args.id is None:
        if args.wait:
            raise CliError("status --wait needs a deployment ID", EXIT_USAGE)
        return _status_all(client, json_out=args.json)
    deployment = get_deployment(client, args.id)
    if args.wait:
        if deployment.phase in TERMINAL:
            return _status_one(client, deployment, json_out=args.json, exit_by_state=True)
        return _wait(client, deployment, json_out=args.json, timeout=args.timeout)
    return _status_one(client, deployment, json_out=args.json, exit_by_state=False)


def _status_all(client: Client, *, json_out: bool) -> int:
    path = "/api/v1/deployments?limit=100"
    deployments = client.request("GET", path, DeploymentList).deployments
    active = [d for d in deployments if d.phase not in TERMINAL]
    if json_out:
        print_json({"deployments": active})
        return EXIT_OK
    if not active:
        print("no deployment is running")
        if deployments:
            latest = deployments[0]
            print(
                f"latest: {latest.id} {latest.version} in {latest.environment}: "
                f"{latest.phase.value.replace('_', ' ')}"
            )
        return EXIT_OK
    from coordinator.cli.follow import bake_words

    rows: list[tuple[str, ...]] = [("ID", "ENV", "VERSION", "STRATEGY", "STATE", "STEP", "BAKE")]
    for d in active:
        rows.append(
            (
                d.id,
                d.environment,
                f"{d.from_version or '-'} -> {d.version}",
                d.strategy,
                d.phase.value.replace("_", " "),
                f"{d.step_name or '-'} ({d.step + 1}/{d.steps_total})",
                bake_words(d) or "-",
            )
        )
    print_table(rows)
    for d in active:
        if d.summary:
            print(f"{d.id}: {d.summary}")
    return EXIT_OK


def _status_one(
    client: Client, deployment: DeploymentView, *, json_out: bool, exit_by_state: bool
) -> int:
    from coordinator.cli.follow import status_text

    events = get_events(client, deployment.id)
    code = OUTCOME_CODES.get(deployment.phase, EXIT_OK) if exit_by_state else EXIT_OK
    if json_out:
        print_json({"deployment": deployment, "events": events})
        return code
    print(status_text(deployment, events, now=time.time()))
    return code


def cmd_history(args: argparse.Namespace) -> int:
    from coordinator.report.words import duration

    query = f"?limit={args.limit}"
    if args.env:
        query += f"&environment={quote_path(args.env)}"
    path = f"/api/v1/deployments{query}"
    deployments = client_for(args).request("GET", path, DeploymentList).deployments
    if args.json:
        print_json({"deployments": deployments})
        return EXIT_OK
    if not deployments:
        print("no deployments yet")
        return EXIT_OK
    rows: list[tuple[str, ...]] = [
        ("ID", "STARTED (UTC)", "ENV", "VERSION", "STRATEGY", "OUTCOME", "BY", "TOOK")
    ]
    for d in deployments:
        rows.append(
            (
                d.id,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.created)),
                d.environment,
                f"{d.from_version or '-'} -> {d.version}",
                d.strategy,
                d.phase.value.replace("_", " "),
                d.actor or "-",
                duration(d.finished - d.created) if d.finished else "-",
            )
        )
    print_table(rows)
    return EXIT_OK


def _act(args: argparse.Namespace, action: str) -> int:
    client = client_for(args)
    body: dict[str, Any] = {}
    if getattr(args, "reason", None):
        body["reason"] = args.reason
    step = getattr(args, "step", None)
    if step is None and action in ("promote", "approve"):
        # Promote (approve) what the operator sees now: a retry, or a step the engine
        # promoted in the meantime, is then acknowledged instead of skipping a bake.
        current = get_deployment(client, args.id)
        if action == "promote" and current.phase in (Phase.BAKING, Phase.HELD):
            step = current.step
        elif action == "approve" and current.phase is Phase.AWAITING_APPROVAL:
            step = current.step + 1
    if step is not None:
        body["step"] = step
    path = f"/api/v1/deployments/{quote_path(args.id)}/{action}"
    reply = client.request("POST", path, OperatorReplyView, body)
    if args.json:
        print_json(reply)
        return EXIT_OK
    if reply.changed:
        print(f"{args.id}: {reply.message}")
    else:
        print(f"{args.id}: nothing to do: {reply.message}")
    if reply.deployment is not None:
        now = reply.deployment
        print(f"now {now.phase.value.replace('_', ' ')}: {now.summary}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from coordinator.report import build_report, render

    fmt = args.format
    output: str | None = args.output
    if fmt is None:
        suffix = Path(output).suffix.lower().lstrip(".") if output and output != "-" else ""
        fmt = {"htm": "html", "html": "html", "md": "md", "markdown": "md", "json": "json"}.get(
            suffix, "html"
        )
    client = client_for(args)
    deployment = get_deployment(client, args.id)
    events = get_events(client, args.id)
    hosts = client.request("GET", "/api/v1/hosts", HostList).hosts
    report = build_report(deployment, events, hosts, generated=time.time())
    text = render(report, fmt)
    if output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(output or f"rollguard-report-{deployment.id}.{fmt}")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc
    state = deployment.phase.value.replace("_", " ")
    print(f"report of {deployment.id} ({state}) written to {path.resolve()}")
    return EXIT_OK


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
        help=f"API token file (default $ROLLGUARD_TOKEN_FILE or {DEFAULT_TOKEN_FILE}; "
        "$ROLLGUARD_TOKEN overrides both)",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"{what}; exit 0 completed, 3 rolled back, 1 failed or refused",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        metavar="SECONDS",
        help="with --wait: stop waiting (exit 1, the deployment keeps running) after this",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rollguard",
        description="Operate rollguard deployments through the coordinator's HTTP API.",
        epilog="Exit codes: 0 done, 1 failure, 2 usage or config error, 3 rolled back "
        "(with --wait).",
    )
    parser.add_argument("--version", action="version", version=f"rollguard {__version__}")
    _connection_options(parser, None)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    common = _Parser(add_help=False)
    _connection_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        json_flag: bool = False,
        remote: bool = True,
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name, help=help_, description=help_, parents=[common] if remote else []
        )
        command.set_defaults(func=func)
        if json_flag:
            command.add_argument("--json", action="store_true", help="print JSON")
        return command

    deploy = add("deploy", cmd_deploy, "start a deployment of VERSION", json_flag=True)
    deploy.add_argument("version", metavar="VERSION")
    deploy.add_argument(
        "--env",
        default="production",
        choices=["development", "staging", "production"],
        help="environment (default production)",
    )
    deploy.add_argument(
        "--strategy",
        choices=["canary", "blue-green", "direct"],
        help="default: the environment's (production canary, staging blue-green, "
        "development direct)",
    )
    deploy.add_argument(
        "--hosts",
        action="append",
        metavar="HOST[,HOST...]",
        help="only these hosts of the environment (repeat or separate with commas)",
    )
    deploy.add_argument("--reason", default="", help="why, for the record")
    _wait_options(deploy, "follow it with live progress until it is over")

    status = add(
        "status", cmd_status, "one deployment in detail, or the running ones", json_flag=True
    )
    status.add_argument("id", nargs="?", metavar="ID", help="deployment id (default: running)")
    _wait_options(status, "follow the deployment until it is over")

    history = add("history", cmd_history, "past deployments, newest first", json_flag=True)
    history.add_argument("--env", choices=["development", "staging", "production"])
    history.add_argument("--limit", type=int, default=20, help="how many (default 20)")

    for action, help_ in (
        ("promote", "end the current step's bake now and go on (if every rule passes)"),
        ("rollback", "return every host the deployment changed to the last stable version"),
        ("pause", "stop promoting (a breach still rolls back)"),
        ("resume", "resume a paused or held deployment"),
        ("approve", "approve the step that waits for an operator"),
    ):
        command = add(action, functools.partial(_act, action=action), help_, json_flag=True)
        command.add_argument("id", metavar="ID")
        command.add_argument("--reason", default="", help="why, for the record")
        if action in ("promote", "approve"):
            command.add_argument(
                "--step",
                type=int,
                help="the step index meant (default: the one running now), so a retry "
                "never skips a bake",
            )

    report = add("report", cmd_report, "write the report of a deployment")
    report.add_argument("id", metavar="ID")
    report.add_argument(
        "--format", choices=["html", "md", "json"], help="default: from -o's suffix, else html"
    )
    report.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it ('-' for stdout; default rollguard-report-ID.FORMAT)",
    )

    add("hosts", cmd_hosts, "list the hosts the coordinator sees", json_flag=True)

    alerts = add("alerts", cmd_alerts, "firing alerts, then recent resolved ones", json_flag=True)
    alerts.add_argument("--limit", type=int, default=20, help="how many resolved ones (default 20)")

    config = sub.add_parser("config", help="configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    check = config_sub.add_parser("check", help="validate an agent or coordinator config")
    check.add_argument("file")
    check.add_argument("--kind", choices=["agent", "coordinator"], help="default: detect")
    check.add_argument("--json", action="store_true", help="print the parsed config as JSON")
    check.add_argument(
        "--syntax-only",
        action="store_true",
        help="check only the config itself, not the files it names (for a config written "
        "on another machine)",
    )
    check.add_argument(
        "--unit",
        default=AGENT_UNIT,
        metavar="FILE",
        help="the agent's systemd unit, whose ReadWritePaths must allow deploy.root "
        "(default: %(default)s, when installed)",
    )
    check.set_defaults(func=cmd_config_check)

    keys = sub.add_parser("keys", help="command-signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    generate = keys_sub.add_parser("generate", help="create an Ed25519 key pair in DIR")
    generate.add_argument("dir")
    generate.set_defaults(func=cmd_keys_generate)

    credentials = add(
        "credentials", cmd_credentials, "create broker credentials for hosts", remote=False
    )
    credentials.add_argument("dir", help="directory for the passwd file and password files")
    credentials.add_argument("hosts", nargs="*", help="host ids")
    credentials.add_argument(
        "--coordinator",
        action="append",
        default=[],
        metavar="NODE",
        help="a credential _coordinator-NODE for the coordinator on NODE (one per node of "
        "an HA pair; repeatable)",
    )
    credentials.add_argument(
        "--reader",
        action="append",
        default=[],
        metavar="NAME",
        help="a read-only credential _operator-NAME (one per dashboard or mosquitto_sub "
        "that runs at the same time as another; repeatable)",
    )

    _setup_parser(sub)

    demo = add(
        "demo",
        cmd_demo,
        "run a broker, the coordinator, six agents and a demo app here, and roll a good "
        "and a bad version out, narrated",
        remote=False,
    )
    demo.add_argument("--dir", default=".demo", help="working directory (default .demo)")
    demo.add_argument(
        "--hosts",
        type=int,
        default=6,
        choices=range(2, 13),
        metavar="N",
        help="how many agents (2-12, default 6)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running afterwards, to try the CLI against it (Ctrl-C stops)",
    )
    return parser


def _setup_parser(sub: Any) -> None:
    from coordinator.setup import install

    setup = sub.add_parser(
        "setup",
        help="create the files a broker, coordinator or agent reads, owned and moded for "
        "its user (idempotent; --dry-run prints what it would do)",
    )
    roles = setup.add_subparsers(dest="role", required=True, parser_class=_Parser)

    def role(name: str, help_: str, user: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = roles.add_parser(name, help=help_, description=help_)
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would change; change nothing"
        )
        parser.add_argument("--user", default=user, help=f"the daemon's user (default {user})")
        parser.set_defaults(func=cmd_setup)
        return parser

    broker = role(
        "broker",
        "passwords for the service users and HOSTs, and the ACL, readable by Mosquitto",
        install.BROKER_USER,
    )
    broker.add_argument("--dir", default=install.BROKER_DIR, help=f"default {install.BROKER_DIR}")
    broker.add_argument("hosts", nargs="*", metavar="HOST", help="host ids")
    broker.add_argument(
        "--coordinator",
        action="append",
        default=[],
        metavar="NODE",
        help="a credential _coordinator-NODE for each node of an HA pair (repeatable)",
    )
    broker.add_argument(
        "--reader",
        action="append",
        default=[],
        metavar="NAME",
        help="a read-only credential _operator-NAME per dashboard or mosquitto_sub that "
        "runs beside another (repeatable)",
    )

    coordinator = role(
        "coordinator",
        "the signing keys, the broker password and the API token, for the coordinator's user",
        install.COORDINATOR_USER_NAME,
    )
    coordinator.add_argument(
        "--group",
        help="the operators' group that may read the API token (default: the user's primary group)",
    )
    coordinator.add_argument(
        "--state-dir",
        default=install.COORDINATOR_STATE_DIR,
        help=f"default {install.COORDINATOR_STATE_DIR}",
    )

    agent = role(
        "agent",
        "the broker password, the coordinator's public key, the state directory and the "
        "releases root, for the agent's user",
        install.AGENT_USER_NAME,
    )
    agent.add_argument("host", metavar="HOST", help="this host's id (its broker username)")
    agent.add_argument(
        "--public-key", metavar="FILE", help="the coordinator's coordinator.pub to install"
    )
    agent.add_argument(
        "--state-dir",
        default=install.AGENT_STATE_DIR,
        help=f"default {install.AGENT_STATE_DIR}",
    )
    agent.add_argument(
        "--deploy-root",
        default=install.DEPLOY_ROOT,
        help=f"the releases root, deploy.root (default {install.DEPLOY_ROOT})",
    )
    for parser in (coordinator, agent):
        parser.add_argument(
            "--config-dir", default=install.CONFIG_DIR, help=f"default {install.CONFIG_DIR}"
        )
        parser.add_argument(
            "--mqtt-password",
            metavar="FILE",
            help="the broker password file to install (from `rollguard setup broker`)",
        )
        parser.add_argument("--ca", metavar="FILE", help="the broker's CA certificate to install")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        for reason in exc.reasons:
            print(f"  - {reason}", file=sys.stderr)
        return exc.code
    except RollguardError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `rollguard history | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
