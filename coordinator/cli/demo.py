"""``rollguard demo``: a whole installation on this machine, and two deployments narrated.

A private Mosquitto from the project's ``mosquitto.conf`` (passwords and the per-host
ACL), the coordinator on SQLite, a small demo app whose error rate and latency depend
on the version each host runs, and six agents, each a real process (coordinator.devfleet.fleet).
Then a good version (2.0.0) goes through every canary step, and a bad one (2.1.0) is
rolled back by the coordinator on its own; each decision is told as it happens, with
its evidence. It ends by writing the rolled-back deployment's report.

Bakes are compressed to seconds through the same config keys an operator would set.
Everything started lives under one directory and is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

import msgspec

from coordinator.cli.client import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Client,
    CliError,
    get_deployment,
    get_events,
)
from coordinator.cli.follow import Update, follow
from coordinator.devfleet.broker import BrokerError, mosquitto_binary
from coordinator.devfleet.fleet import PROFILES, STABLE, DevFleet
from coordinator.report import build_report, render
from coordinator.report.words import baseline_of, rate, rule_lines, window_words
from shared.evidence import AnalysisWindow, Evidence, NoEvidence
from shared.phases import Phase
from shared.views import DeploymentView, HostList, OperatorReplyView

GOOD: Final = "2.0.0"
BAD: Final = "2.1.0"
MARKER: Final = ".rollguard-demo"
# A deployment that has not finished by then is reported as stuck.
DEPLOYMENT_TIMEOUT: Final = 150.0
# Canary vs baseline numbers are told at most this often.
NUMBERS_EVERY: Final = 6.0


class Narrator:
    """Tells what happens in plain lines, each stamped with the time since the start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def say(self, text: str = "", *, indent: int = 0) -> None:
        elapsed = time.monotonic() - self.t0
        stamp = f"[{int(elapsed // 60)}:{elapsed % 60:04.1f}]"
        pad = " " * indent
        for index, line in enumerate(text.splitlines() or [""]):
            prefix = stamp if index == 0 else " " * len(stamp)
            self.out.write(f"{prefix} {pad}{line}\n")
        self.out.flush()

    def heading(self, text: str) -> None:
        self.out.write(f"\n== {text} ==\n")
        self.out.flush()


def _version_words(version: str) -> str:
    profile = PROFILES[version]
    return (
        f"{version}: {rate(profile['error_rate'])} errors, "
        f"about {profile['latency_ms']:.0f} ms per request"
    )


def _prepare(directory: Path) -> None:
    """Start from an empty directory; never wipe one the demo did not create."""
    if directory.exists() and any(directory.iterdir()):
        # Ours: the marker, or the layout of an older demo (before the marker).
        ours = (directory / MARKER).exists() or (
            (directory / "coordinator.toml").is_file() and (directory / "broker").is_dir()
        )
        if not ours:
            raise CliError(
                f"{directory} exists and is not a rollguard demo directory; "
                "choose another with --dir",
                2,
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by rollguard demo; removed by the next run\n")


class DemoRun:
    def __init__(self, fleet: DevFleet, narrator: Narrator) -> None:
        self.fleet = fleet
        self.say = narrator.say
        self.narrator = narrator
        token = (fleet.directory / "coordinator" / "api.token").read_text().strip()
        self.client = Client(fleet.api.base, token, "demo")
        self.last_numbers = 0.0
        self.deployment_id = ""

    def start(self) -> None:
        fleet = self.fleet
        self.say(
            f"broker: mosquitto on 127.0.0.1:{fleet.broker.port} with the project's "
            "mosquitto.conf (passwords, per-host ACL)"
        )
        self.say(
            f"coordinator: HTTP API on {fleet.api.base}, state in SQLite under "
            f"{fleet.directory / 'coordinator'}"
        )
        self.say(
            "demo app: stands in for the service on every host; by version:\n"
            + "\n".join(f"  {_version_words(v)}" for v in PROFILES)
        )
        self.say(
            f"agents: {', '.join(fleet.hosts)}, one process each, probing their host's app "
            "and publishing samples over MQTT every second"
        )
        fleet.wait_ready(45)
        hosts = self.client.request("GET", "/api/v1/hosts", HostList).hosts
        zones = sorted({h.labels.get("zone", "-") for h in hosts})
        self.say(
            f"{len(hosts)} hosts online in zones {', '.join(zones)}, all on {STABLE}; "
            "canary bakes are compressed to seconds (10 s first step, 5 s after)"
        )

    def deploy(self, version: str, reason: str) -> DeploymentView:
        body = {"version": version, "reason": reason}
        reply = self.client.request("POST", "/api/v1/deployments", OperatorReplyView, body)
        deployment = reply.deployment
        if deployment is None:
            raise CliError(f"the coordinator accepted {version} but did not show the deployment")
        plan = " → ".join(
            f"{s.name} ({len(s.orders)} host{'s' if len(s.orders) != 1 else ''})"
            for s in deployment.steps
        )
        self.say(f"deploy {version} (deployment {deployment.id}), by canary: {plan}")
        self.deployment_id = deployment.id
        self.last_numbers = 0.0
        deadline = time.monotonic() + DEPLOYMENT_TIMEOUT
        last = deployment
        try:
            for update in follow(
                self.client, deployment.id, initial=deployment, deadline=deadline, poll=0.5
            ):
                last = update.deployment
                self._narrate(update)
        except TimeoutError:
            raise CliError(
                f"deployment {deployment.id} of {version} did not finish within "
                f"{DEPLOYMENT_TIMEOUT:g} s (it is {last.phase.value}: {last.summary})"
            ) from None
        return last

    def _narrate(self, update: Update) -> None:
        for event in update.events:
            kind = event.kind
            try:
                facts = event.facts()
            except msgspec.ValidationError:
                facts = NoEvidence()  # told without its evidence
            if isinstance(facts, AnalysisWindow):
                self._numbers(facts)
                continue
            if kind in ("operator.start", "deployment.created"):
                continue
            if kind.startswith("command."):
                self.say(event.message, indent=2)
                continue
            self.say(event.message)
            self._evidence(kind, facts)

    def _numbers(self, window: AnalysisWindow) -> None:
        canary = window.cohorts.get("canary")
        now = time.monotonic()
        if canary is None or not canary.requests or now - self.last_numbers < NUMBERS_EVERY:
            return
        self.last_numbers = now
        self.say(f"numbers: {window_words(window)}", indent=2)

    def _evidence(self, kind: str, facts: Evidence) -> None:
        """Why the engine decided, in the words of the rules that mattered."""
        lines = rule_lines(facts)
        if kind in ("deployment.bake_passed", "deployment.verified"):
            for line in lines:
                if line.rule in ("error_rate", "latency"):
                    self.say(f"evidence: {line.message}", indent=2)
        elif kind in ("deployment.fail", "deployment.hold", "deployment.extend"):
            shown_verdicts = ("fail",) if kind == "deployment.fail" else ("fail", "inconclusive")
            for line in lines:
                if line.verdict in shown_verdicts and line.enforced:
                    self.say(f"evidence ({line.verdict}): {line.message}", indent=2)
            for rule, shown in baseline_of(facts).items():
                if not isinstance(shown.rule, str):
                    verdict = (
                        "the same breach: fleet-wide, not the release"
                        if shown.same_breach
                        else "not the same breach, so the release is blamed"
                    )
                    self.say(f"baseline ({rule}): {shown.rule.message}: {verdict}", indent=2)
        if kind == "deployment.hold":
            ident = self.deployment_id
            self.say(
                f"a person decides now: rollguard promote {ident} | resume {ident} | "
                f"rollback {ident} (the demo waits)",
                indent=2,
            )

    def check_hosts(self, version: str) -> bool:
        on_disk = {host: self.fleet.linked_version(host) for host in self.fleet.hosts}
        wrong = {h: v for h, v in on_disk.items() if v != version}
        if wrong:
            self.say(
                "NOT every host runs "
                + version
                + ": "
                + ", ".join(f"{h} on {v}" for h, v in sorted(wrong.items()))
            )
            return False
        self.say(
            f"checked on every host's disk: current -> releases/{version} on all {len(on_disk)}"
        )
        return True

    def write_report(self, deployment_id: str) -> Path:
        deployment = get_deployment(self.client, deployment_id)
        events = get_events(self.client, deployment_id)
        hosts = self.client.request("GET", "/api/v1/hosts", HostList).hosts
        report = build_report(deployment, events, hosts, generated=time.time())
        path = self.fleet.directory / f"report-{deployment_id}.html"
        path.write_text(render(report, "html"), encoding="utf-8")
        (path.with_suffix(".md")).write_text(render(report, "md"), encoding="utf-8")
        return path


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached the demo: stop like Ctrl-C does."""


def _terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def run_demo(
    directory: Path, *, hosts: int = 6, keep: bool = False, out: TextIO | None = None
) -> int:
    """Run the demo; SIGINT, SIGTERM and SIGHUP all stop every process it started
    (its processes run in sessions of their own, so only the demo can stop them)."""
    previous = {sig: signal.signal(sig, _terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run_demo(directory, hosts=hosts, keep=keep, out=out)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_demo(directory: Path, *, hosts: int, keep: bool, out: TextIO | None) -> int:
    stream = out or sys.stdout
    narrator = Narrator(stream)
    directory = directory.resolve()
    if mosquitto_binary() is None:
        print(
            "rollguard demo needs the mosquitto broker: sudo apt-get install mosquitto "
            "(or run `make demo` as root, which installs it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    _prepare(directory)
    names = [f"web-{i}" for i in range(1, hosts + 1)]
    fleet = DevFleet(directory, names)
    narrator.say(f"rollguard demo in {directory}: everything below runs on this machine")
    try:
        fleet.start()
        run = DemoRun(fleet, narrator)
        run.start()

        narrator.heading(f"1. A good release: {GOOD}")
        good = run.deploy(GOOD, "demo: a good release")
        good_done = good.phase is Phase.COMPLETED
        good_ok = good_done and run.check_hosts(GOOD)
        narrator.say(
            f"=> {GOOD}: {good.phase.value.replace('_', ' ')}"
            + (" through every step" if good_done else "")
        )

        narrator.heading(f"2. A bad release: {BAD}")
        bad = run.deploy(BAD, "demo: a bad release")
        bad_ok = bad.phase is Phase.ROLLED_BACK and run.check_hosts(GOOD if good_ok else STABLE)
        narrator.say(
            f"=> {BAD}: {bad.phase.value.replace('_', ' ')}"
            + (f" on its own: {bad.rollback_reason}" if bad_ok else "")
        )

        narrator.heading("Report")
        path = run.write_report(bad.id)
        narrator.say(f"the report of the rolled-back deployment: {path}")
        narrator.say(f"(Markdown: {path.with_suffix('.md')}; open the HTML in a browser)")
        if keep:
            _keep(fleet, narrator)
    except (KeyboardInterrupt, Terminated):
        narrator.say("interrupted: stopping every process the demo started")
        return EXIT_INTERRUPTED
    except (BrokerError, CliError, TimeoutError, OSError) as exc:
        narrator.say(f"the demo failed: {exc}")
        narrator.say(f"logs of every process: {directory / 'logs'}")
        return EXIT_FAILURE
    finally:
        # A second signal must not cut the stopping short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            fleet.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        narrator.say(f"stopped every process; logs are in {directory / 'logs'}")
    return EXIT_OK if good_ok and bad_ok else EXIT_FAILURE


def _keep(fleet: DevFleet, narrator: Narrator) -> None:
    token = fleet.directory / "coordinator" / "api.token"
    narrator.say(
        "everything keeps running; in another shell try:\n"
        f"  export ROLLGUARD_URL={fleet.api.base} ROLLGUARD_TOKEN_FILE={token}\n"
        "  rollguard hosts; rollguard history; rollguard deploy 2.0.0 --wait\n"
        f"Ctrl-C here (or kill {os.getpid()}) stops every process."
    )
    while True:
        time.sleep(3600)
