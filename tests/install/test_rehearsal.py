"""The README's production walkthrough, rehearsed as root on a throwaway machine.

Every command of the walkthrough that sets something up is taken from the README (the
test fails when one is no longer there) and run with its paths moved under a private
root, one directory per machine (the broker's, the coordinator's, one per host), and
its user names made unique to the run: the wheel is built from a copy of the sources
and installed into fresh virtual environments (the coordinator's with its extra, the
hosts' without); `rollguard setup` creates the files; Mosquitto starts as root from
the README's broker config with TLS (a CA and a server certificate made here) and
drops to the `mosquitto` user; the coordinator and two agents run as their own users
with their units' command lines, umask and environment (`setpriv`; there is no systemd
as PID 1 here), and tell a notify socket they are ready; an operator in the
`rollguard` group runs the CLI without sudo and deploys a good version (promoted) and
a bad one (rolled back). The units pass `systemd-analyze verify` and `security`.

It creates system users, so it runs only as root under CI=true (CI's throwaway
machine) or with ROLLGUARD_REHEARSAL=1; not as root it fails under CI=true and skips
otherwise, saying why.
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coordinator.devfleet.broker import free_port, mosquitto_binary
from coordinator.devfleet.fleet import FAST_ENGINE, FAST_POLICY, PROFILES, STABLE, to_toml
from tests.conftest import IN_CI, service_missing
from tests.install.test_wheel_demo import LEFT_OUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
HOSTS = ("web-1", "web-2")
PIP_TIMEOUT = 900
# `sudo python3` runs the system's Python (sudo's secure_path): the daemons' users must
# be able to run the interpreter their virtual environment links to, which a Python
# under root's home (pyenv) is not.
SYSTEM_PYTHON = "/usr/bin/python3"


def readme(command: str) -> str:
    """``command``, which must be in the README's walkthrough as it is written here."""
    assert command in README, f"the README no longer says: {command}"
    return command


class Machine:
    """One machine of the walkthrough: its absolute paths, under a private root."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root / name

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")


def guard() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the installation rehearsal needs root (CI runs it on a throwaway machine)")
        pytest.skip("the installation rehearsal needs root: it creates system users")
    if not IN_CI and os.environ.get("ROLLGUARD_REHEARSAL") != "1":
        pytest.skip(
            "the installation rehearsal creates system users and runs daemons as them: "
            "only under CI=true or with ROLLGUARD_REHEARSAL=1 on a throwaway machine"
        )
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    if not Path(SYSTEM_PYTHON).exists():
        service_missing(f"{SYSTEM_PYTHON} (apt-get install python3-venv)")
    for tool in ("setpriv", "useradd", "userdel", "usermod", "install", "systemd-analyze"):
        if shutil.which(tool) is None:
            service_missing(f"{tool} (scripts/ensure-system installs it)")


def run(
    argv: list[str],
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    code: int = 0,
) -> str:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
        )
    except subprocess.TimeoutExpired as timed_out:
        raise AssertionError(
            f"{argv}: no exit after {timeout} s\n"
            f"{_text(timed_out.stdout)}\n{_text(timed_out.stderr)}"
        ) from None
    assert result.returncode == code, (
        f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def as_user(user: str, argv: list[str]) -> list[str]:
    """``argv`` as ``user`` with its groups, no capabilities, no new privileges: what
    the units' User=, Group=, CapabilityBoundingSet= and NoNewPrivileges= give."""
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={pwd.getpwnam(user).pw_gid}",
        "--init-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *argv,
    ]


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rehearsal CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, crt_path, key_path = (
        directory / "ca.pem",
        directory / "mqtt.internal.crt",
        directory / "mqtt.internal.key",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    crt_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, crt_path, key_path


def broker_config(broker: Machine, port: int) -> str:
    """The README's production broker config, its paths moved under ``broker``."""
    match = re.search(r"```\n(# /etc/mosquitto/conf.d/rollguard.conf\n.*?)```", README, re.S)
    assert match, "the README's broker config block"
    text = match.group(1)
    assert "\nlistener 8883\n" in text and "certfile " in text and "keyfile " in text
    text = text.replace("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n")
    for path in ("/etc/mosquitto", "/var/lib/mosquitto"):
        text = text.replace(path, str(broker.at(path)))
    return text + "log_dest stderr\n"


def unit(machine: Machine, name: str, replacements: dict[str, str]) -> tuple[Path, str]:
    """``deploy/NAME`` installed on ``machine`` as `cp ... /etc/systemd/system/` does,
    its paths and users moved; returns the path and the text."""
    text = (ROOT / "deploy" / name).read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, f"{name} no longer has {old}"
        text = text.replace(old, new)
    path = machine.at(f"/etc/systemd/system/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, text


def unit_setting(text: str, key: str) -> str:
    match = re.search(rf"^{key}=(.*)$", text, re.M)
    assert match, key
    return match.group(1).strip()


def verify_unit(path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if path.name in line]
    assert result.returncode == 0 and not lines, result.stdout + result.stderr
    security = run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)], timeout=120
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security)
    assert match and float(match.group(1)) <= 2.0, security


class Notify:
    """A notify socket the daemons (other users) may write to."""

    def __init__(self, path: Path, opened: list[Notify]) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        opened.append(self)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)
        self.sock.settimeout(60)

    def wait_ready(self) -> bytes:
        """The READY=1 message, or b"" if none comes within the timeout."""
        while True:
            try:
                message = self.sock.recv(4096)
            except TimeoutError:
                return b""
            if message.startswith(b"READY=1"):
                return message


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, umask: int = -1
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                umask=umask,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def log(self, name: str, tail: int = 3000) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")[-tail:]
        return f"--- {name}.log (last {tail} characters)\n{text}\n"

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def unit_env(text: str, notify: Notify) -> dict[str, str]:
    """What systemd gives the service: a plain PATH, the notify socket and watchdog."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "NOTIFY_SOCKET": str(notify.path),
    }
    watchdog = re.search(r"^WatchdogSec=(\d+)$", text, re.M)
    if watchdog:
        env["WATCHDOG_USEC"] = str(int(watchdog.group(1)) * 1_000_000)
    return env


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def sandbox() -> Iterator[tuple[Path, str]]:
    """A private root, world-traversable (the daemons' users read under it), and a
    name unique to the run for the users; both removed afterwards."""
    guard()
    root = Path(tempfile.mkdtemp(prefix="rollguard-rehearsal-", dir="/var/tmp"))
    root.chmod(0o755)
    name = f"rg{secrets.token_hex(3)}"
    try:
        yield root, name
    finally:
        for user in (f"{name}-op", f"{name}-agent", name):
            subprocess.run(["userdel", user], capture_output=True, timeout=60, check=False)
        for group in (name, f"{name}-agent", f"{name}-op"):
            subprocess.run(["groupdel", group], capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_the_readme_walkthrough_installs_a_working_fleet(sandbox: tuple[Path, str]) -> None:
    top, name = sandbox
    old_umask = os.umask(0o022)
    try:
        rehearse(top, name)
    finally:
        os.umask(old_umask)


def rehearse(top: Path, name: str) -> None:
    coordinator_user, agent_user, operator = name, f"{name}-agent", f"{name}-op"
    broker, coord = Machine(top, "broker"), Machine(top, "coordinator")
    hosts = {host: Machine(top, host) for host in HOSTS}
    work = top / "work"
    work.mkdir()
    logs = top / "logs"
    logs.mkdir()
    processes = Processes(logs)
    sockets: list[Notify] = []
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROLLGUARD_", "PYTHON", "VIRTUAL_ENV"))
    }
    try:
        # -- 1. Install rollguard ---------------------------------------------------
        source = work / "source"
        shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
        build = shlex.split(readme("python3 -m pip wheel --no-deps -w dist ."))
        run([sys.executable, *build[1:]], cwd=source, env=env, timeout=300)
        wheel = source / "dist" / "rollguard-0.1.0-py3-none-any.whl"
        assert wheel.exists(), sorted(p.name for p in (source / "dist").iterdir())
        readme("sudo python3 -m venv /opt/rollguard")
        readme(
            "sudo /opt/rollguard/bin/pip install 'dist/rollguard-0.1.0-py3-none-any.whl[coordinator]'"  # noqa: E501
        )
        readme("sudo /opt/rollguard/bin/pip install dist/rollguard-0.1.0-py3-none-any.whl")
        readme("sudo ln -s /opt/rollguard/bin/rollguard /usr/local/bin/rollguard")
        host_machine = Machine(top, "hosts")  # one installation serves both agents
        for machine, target in ((coord, f"{wheel}[coordinator]"), (host_machine, str(wheel))):
            venv = machine.at("/opt/rollguard")
            run([SYSTEM_PYTHON, "-m", "venv", str(venv)], env=env, timeout=120)
            run(
                [str(venv / "bin" / "pip"), "install", "--quiet", target],
                env=env,
                timeout=PIP_TIMEOUT,
            )
            link = machine.at("/usr/local/bin/rollguard")
            link.parent.mkdir(parents=True)
            link.symlink_to(venv / "bin" / "rollguard")
        cli = str(coord.at("/usr/local/bin/rollguard"))
        host_cli = str(host_machine.at("/usr/local/bin/rollguard"))
        for script in ("rollguard", "rollguard-agent", "rollguard-coordinator"):
            assert run([str(coord.at(f"/opt/rollguard/bin/{script}")), "--version"]) == (
                f"{script} 0.1.0\n"
            )
        # A host's installation has the agent and the CLI, not the coordinator's libraries.
        probe = "import importlib.util as u; print(u.find_spec('aiohttp') is None, u.find_spec('nacl') is not None)"  # noqa: E501
        assert (
            run([str(host_machine.at("/opt/rollguard/bin/python")), "-c", probe]) == "True True\n"
        )
        assert (coord.at("/opt/rollguard/share/doc/rollguard/README.md")).exists()

        # -- 2. Secure the broker ------------------------------------------------------
        broker_dir = broker.at("/etc/mosquitto/rollguard")
        setup_broker = shlex.split(readme("sudo rollguard setup broker web-1 web-2 web-3"))[1:]
        broker_argv = [cli, *setup_broker[1:3], "--dir", str(broker_dir), *setup_broker[3:]]
        dry = run([*broker_argv, "--dry-run"])
        assert "would create broker passwords" in dry and not broker_dir.exists()
        run(broker_argv)
        assert run(broker_argv).strip() == "nothing to change: already set up"
        ca, crt, key = make_certificates(work)
        certs = broker.at("/etc/mosquitto/certs")
        for command, args in (
            ("sudo install -d -m 0750 -g mosquitto /etc/mosquitto/certs", [str(certs)]),
            (
                "sudo install -m 0644 mqtt.internal.crt /etc/mosquitto/certs/mqtt.internal.crt",
                [str(crt), str(certs / crt.name)],
            ),
            (
                "sudo install -m 0640 -g mosquitto mqtt.internal.key /etc/mosquitto/certs/mqtt.internal.key",  # noqa: E501
                [str(key), str(certs / key.name)],
            ),
        ):
            words = shlex.split(readme(command))[1:]
            options = [w for w in words[1:] if "/" not in w and not w.startswith("mqtt.internal")]
            run(["install", *options, *args])
        mosquitto_data = broker.at("/var/lib/mosquitto")
        mosquitto_data.mkdir(parents=True)
        shutil.chown(mosquitto_data, "mosquitto", "mosquitto")
        port = free_port()
        config = broker.at("/etc/mosquitto/conf.d/rollguard.conf")
        config.parent.mkdir(parents=True)
        config.write_text(broker_config(broker, port), encoding="utf-8")
        mosquitto = processes.start("mosquitto", [str(mosquitto_binary()), "-c", str(config)])
        wait_for(lambda: _port_open(port), 30, "mosquitto to listen\n" + processes.log("mosquitto"))
        # Started as root, it runs as mosquitto, and still read its passwd, ACL and key.
        assert uid_of(mosquitto.pid) == pwd.getpwnam("mosquitto").pw_uid
        assert mosquitto.poll() is None, processes.log("mosquitto")

        # -- 3. Run the coordinator ------------------------------------------------------
        useradd = shlex.split(
            readme(
                "sudo useradd --system --home /var/lib/rollguard --shell /usr/sbin/nologin rollguard"  # noqa: E501
            )
        )[1:]
        run(
            [
                coord_path if word == "/var/lib/rollguard" else word
                for word in [*useradd[:-1], coordinator_user]
                for coord_path in [str(coord.at("/var/lib/rollguard"))]
            ]
        )
        setup = shlex.split(
            readme(
                "sudo rollguard setup coordinator --mqtt-password "
                "/etc/mosquitto/rollguard/_coordinator.password --ca ca.pem"
            )
        )[1:]
        coordinator_argv = [
            cli,
            "setup",
            "coordinator",
            "--user",
            coordinator_user,
            "--config-dir",
            str(coord.at("/etc/rollguard")),
            "--state-dir",
            str(coord.at("/var/lib/rollguard")),
            "--mqtt-password",
            str(broker_dir / "_coordinator.password"),
            "--ca",
            str(ca),
        ]
        assert setup[1:3] == ["setup", "coordinator"]
        run(coordinator_argv)
        assert run(coordinator_argv).strip() == "nothing to change: already set up"
        http_port = free_port()
        coordinator_config = coord.at("/etc/rollguard/coordinator.toml")
        readme("sudo cp deploy/examples/coordinator.toml /etc/rollguard/coordinator.toml")
        coordinator_config.write_text(to_toml(coordinator_settings(coord, port, http_port)))
        readme("sudo rollguard config check /etc/rollguard/coordinator.toml")
        run([cli, "config", "check", str(coordinator_config)])
        # As its own user it reads every file its config names.
        run(as_user(coordinator_user, [cli, "config", "check", str(coordinator_config)]))
        readme("sudo cp deploy/rollguard-coordinator.service /etc/systemd/system/")
        coordinator_unit, coordinator_text = unit(
            coord,
            "rollguard-coordinator.service",
            {
                "/opt/rollguard": str(coord.at("/opt/rollguard")),
                "/etc/rollguard/coordinator.toml": str(coordinator_config),
                "User=rollguard": f"User={coordinator_user}",
                "Group=rollguard": f"Group={coordinator_user}",
            },
        )
        verify_unit(coordinator_unit)
        readme("sudo systemctl daemon-reload && sudo systemctl enable --now rollguard-coordinator")
        assert unit_setting(coordinator_text, "Type") == "notify"
        coordinator_notify = Notify(work / "coordinator.notify", sockets)
        coordinator_process = processes.start(
            "coordinator",
            as_user(coordinator_user, shlex.split(unit_setting(coordinator_text, "ExecStart"))),
            env=unit_env(coordinator_text, coordinator_notify),
            umask=int(unit_setting(coordinator_text, "UMask"), 8),
        )
        assert coordinator_notify.wait_ready().startswith(b"READY=1"), processes.log("coordinator")
        assert uid_of(coordinator_process.pid) == pwd.getpwnam(coordinator_user).pw_uid
        usermod = shlex.split(readme("sudo usermod -aG rollguard alice"))[1:]
        run(["useradd", "--no-create-home", "--shell", "/bin/sh", operator])
        run([usermod[0], "-aG", coordinator_user, operator])
        assert operator in grp.getgrnam(coordinator_user).gr_mem

        # -- 4. Install the agent on a host ---------------------------------------------
        useradd = shlex.split(
            readme(
                "sudo useradd --system --no-create-home --shell /usr/sbin/nologin rollguard-agent"
            )
        )[1:]
        run([*useradd[:-1], agent_user])
        readme(
            "sudo rollguard setup agent web-1 --mqtt-password web-1.password "
            "--public-key coordinator.pub --ca ca.pem"
        )
        readme("sudo cp agent.toml /etc/rollguard/agent.toml")
        readme("sudo cp deploy/rollguard-agent.service /etc/systemd/system/")
        readme("sudo rollguard config check /etc/rollguard/agent.toml")
        readme("sudo systemctl daemon-reload && sudo systemctl enable --now rollguard-agent")
        apps = work / "apps"  # the demo app serves every host's current release
        apps.mkdir()
        (work / "profiles.json").write_text(json.dumps(PROFILES))
        app_port = free_port()
        processes.start(
            "app",
            [
                str(coord.at("/opt/rollguard/bin/python")),
                "-m",
                "coordinator.devfleet.demo_app",
                "--root",
                str(apps),
                "--port",
                str(app_port),
                "--profiles",
                str(work / "profiles.json"),
                # Enough traffic that the bakes of seconds below decide: the error rate
                # passes only when its 99 % bound is under 1 %, which takes about 700
                # requests without an error. At the default 100/s per host, the last
                # step's 2 s bake and its extension saw about 730, and 2.0.0's one
                # error in 2,000 made it inconclusive and held for an operator in one
                # run in five or so (--wait then waits for the operator).
                "--rps",
                "1000",
            ],
        )
        agents: dict[str, subprocess.Popen[bytes]] = {}
        for index, host in enumerate(HOSTS):
            machine = hosts[host]
            run(
                [
                    host_cli,
                    "setup",
                    "agent",
                    host,
                    "--user",
                    agent_user,
                    "--config-dir",
                    str(machine.at("/etc/rollguard")),
                    "--state-dir",
                    str(machine.at("/var/lib/rollguard-agent")),
                    "--deploy-root",
                    str(machine.at("/srv/app")),
                    "--mqtt-password",
                    str(broker_dir / f"{host}.password"),
                    "--public-key",
                    str(coord.at("/etc/rollguard/keys/coordinator.pub")),
                    "--ca",
                    str(ca),
                ]
            )
            releases = machine.at("/srv/app")
            for version in PROFILES:
                (releases / "releases" / version).mkdir(parents=True)
            (releases / "current").symlink_to(Path("releases") / STABLE)
            (apps / host).symlink_to(releases)
            agent_config = machine.at("/etc/rollguard/agent.toml")
            agent_config.write_text(
                to_toml(agent_settings(machine, host, index, port, app_port)), encoding="utf-8"
            )
            agent_unit, agent_text = unit(
                machine,
                "rollguard-agent.service",
                {
                    "/opt/rollguard": str(host_machine.at("/opt/rollguard")),
                    "/etc/rollguard/agent.toml": str(agent_config),
                    "User=rollguard-agent": f"User={agent_user}",
                    "Group=rollguard-agent": f"Group={agent_user}",
                    "ReadWritePaths=-/srv/app": f"ReadWritePaths=-{machine.at('/srv/app')}",
                },
            )
            verify_unit(agent_unit)
            run([host_cli, "config", "check", str(agent_config), "--unit", str(agent_unit)])
            notify = Notify(work / f"{host}.notify", sockets)
            agents[host] = processes.start(
                host,
                as_user(agent_user, shlex.split(unit_setting(agent_text, "ExecStart"))),
                env=unit_env(agent_text, notify),
                umask=int(unit_setting(agent_text, "UMask"), 8),
            )
            assert notify.wait_ready().startswith(b"READY=1"), processes.log(host)
            assert uid_of(agents[host].pid) == pwd.getpwnam(agent_user).pw_uid

        # -- 5. A first canary, as an operator without sudo ------------------------------
        token = coord.at("/var/lib/rollguard/api.token")
        operator_env = {
            "PATH": env.get("PATH", "/usr/bin:/bin"),
            "ROLLGUARD_URL": f"http://127.0.0.1:{http_port}",
            "ROLLGUARD_TOKEN_FILE": str(token),
        }

        def operator_cli(*args: str, code: int = 0, timeout: float = 120) -> str:
            try:
                return run(
                    as_user(operator, [cli, *args]), env=operator_env, code=code, timeout=timeout
                )
            except AssertionError as failed:
                logs = "".join(processes.log(n, 20_000) for n in ("coordinator", *HOSTS))
                raise AssertionError(f"{failed}\n{logs}") from None

        # The group gives the token and nothing else: not the signing key.
        run(
            as_user(operator, ["cat", str(coord.at("/etc/rollguard/keys/coordinator.key"))]), code=1
        )

        def fleet_ready() -> bool:
            listed = json.loads(operator_cli("hosts", "--json"))["hosts"]
            return len(listed) == len(HOSTS) and all(
                h["online"] and h["version"] == STABLE and "application" in h["checks"]
                for h in listed
            )

        wait_for(
            fleet_ready,
            60,
            "both hosts online at 1.0.0 with their application check\n"
            + processes.log("coordinator")
            + processes.log("web-1"),
        )
        good = json.loads(
            operator_cli(
                *shlex.split(readme('rollguard deploy 2.0.0 --reason "CHG-1234" --wait'))[1:],
                "--json",
                timeout=300,
            )
        )
        assert good["deployment"]["state"] == "completed", good
        bad = json.loads(
            operator_cli(
                "deploy", "2.1.0", "--reason", "bad", "--wait", "--json", code=3, timeout=300
            )
        )
        assert bad["deployment"]["state"] == "rolled_back", bad
        for host in HOSTS:
            assert os.readlink(hosts[host].at("/srv/app/current")) == "releases/2.0.0"
        for name_, process in [
            ("mosquitto", mosquitto),
            ("coordinator", coordinator_process),
            *agents.items(),
        ]:
            assert process.poll() is None, processes.log(name_)
        # A good start, a good release and a rollback are not errors in anyone's log.
        for name_ in ("coordinator", *HOSTS):
            lines = (logs / f"{name_}.log").read_text(errors="replace").splitlines()
            errors = [line for line in lines if re.search(r'"level":"(error|critical)"', line)]
            assert errors == [], f"{name_}:\n" + "\n".join(errors)
    finally:
        processes.stop()
        for notify in sockets:
            notify.sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def coordinator_settings(coord: Machine, port: int, http_port: int) -> dict[str, Any]:
    """The coordinator's config: the files `rollguard setup coordinator` made, the
    broker over TLS, and bakes of seconds instead of hours."""
    return {
        "node": "coord-1",
        "state_dir": str(coord.at("/var/lib/rollguard")),
        "private_key_file": str(coord.at("/etc/rollguard/keys/coordinator.key")),
        "command_ttl": 120.0,
        "mqtt": {
            "host": "localhost",
            "port": port,
            "username": "_coordinator",
            "password_file": str(coord.at("/etc/rollguard/_coordinator.password")),
            "keepalive": 5,
            "tls": {"ca_file": str(coord.at("/etc/rollguard/ca.pem"))},
        },
        "log": {"level": "info", "format": "json"},
        "http": {"listen": "127.0.0.1", "port": http_port},
        "engine": FAST_ENGINE,
        "alerts": {"cpu_percent": 100.0},
        "environments": {
            "production": {
                **FAST_POLICY,
                "canary": {"first_bake": 4.0, "step_bake": 2.0, "post_watch": 2.0},
            },
        },
    }


def agent_settings(
    machine: Machine, host: str, index: int, port: int, app_port: int
) -> dict[str, Any]:
    app = f"http://127.0.0.1:{app_port}/{host}"
    return {
        "host": host,
        "environment": "production",
        "state_dir": str(machine.at("/var/lib/rollguard-agent")),
        "public_key_file": str(machine.at("/etc/rollguard/keys/coordinator.pub")),
        "labels": {"zone": "ab"[index % 2]},
        "mqtt": {
            "host": "localhost",
            "port": port,
            "username": host,
            "password_file": str(machine.at(f"/etc/rollguard/{host}.password")),
            "keepalive": 5,
            "tls": {"ca_file": str(machine.at("/etc/rollguard/ca.pem"))},
        },
        "log": {"level": "info", "format": "json"},
        "checks": {
            "jitter": 0.05,
            "cpu": {"interval": 1.0},
            "memory": {"interval": 1.0},
            "disk": {"interval": 2.0, "mounts": ["/"]},
            "system": {"interval": 2.0},
            "application": {
                "url": f"{app}/health",
                "metrics_url": f"{app}/metrics",
                "interval": 1.0,
                "timeout": 1.0,
                "requests": 5,
            },
        },
        "deploy": {
            "strategy": "releases",
            "root": str(machine.at("/srv/app")),
            "restart_command": ["/bin/true"],
            "timeout": 20.0,
        },
    }
