"""A private Mosquitto started from the project's ``mosquitto.conf``.

Used by the tests, the benchmarks and ``rollguard demo``: it renders the project's
config with only the listener port and the password/ACL paths changed, so what runs
is the real auth and ACL, on a free port (1883 belongs to the machine's broker).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from coordinator.setup import credentials
from shared.errors import RollguardError

# The broker config and ACL ship inside the package (the checkout's ``mosquitto.conf`` and
# ``deploy/mosquitto/acl`` point here), so ``rollguard demo`` works from an installed wheel.
BROKER_FILES: Final = Path(__file__).resolve().parent / "mosquitto"
PROJECT_CONF: Final = BROKER_FILES / "mosquitto.conf"
PROJECT_ACL: Final = BROKER_FILES / "acl"


class BrokerError(RollguardError):
    """The private broker could not be started or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def render_config(
    template: str, *, port: int, passwd: Path, acl: Path, persistence: Path | None = None
) -> str:
    """The project's config with the listener port and the file paths replaced."""
    out: list[str] = []
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {passwd}",
        "acl_file": f"acl_file {acl}",
    }
    if persistence is not None:
        replacements["persistence_location"] = f"persistence_location {persistence}/"
    for line in template.splitlines():
        out.append(replacements.get(line.split(" ", 1)[0], line))
    if os.geteuid() == 0:
        # As root mosquitto drops to the `mosquitto` user, which cannot read a
        # private temporary directory; the private broker keeps running as root.
        out.append("user root")
    return "\n".join(out) + "\n"


class LocalBroker:
    """Start with :meth:`start`; credentials for ``hosts`` are in ``directory``."""

    def __init__(
        self,
        directory: Path,
        hosts: list[str],
        *,
        port: int | None = None,
        services: list[str] | None = None,
    ) -> None:
        self.directory = directory
        self.hosts = hosts
        # Service users beyond _coordinator and _operator (coordinator_user(node),
        # reader_user(name)): one per client that runs at the same time.
        self.services: list[str] = list(services or [])
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "mosquitto.log"

    def password_file(self, user: str) -> Path:
        return credentials.password_path(self.directory, user)

    def add_hosts(self, hosts: list[str]) -> None:
        credentials.generate(self.directory, hosts)
        self.hosts.extend(h for h in hosts if h not in self.hosts)
        self._reload()

    def add_services(self, users: list[str]) -> None:
        """Credentials (and ACL entries) for further service users, e.g. a second
        coordinator's ``_coordinator-<node>`` or a reader's ``_operator-<name>``."""
        new = [u for u in users if u not in self.services]
        if not new:
            return
        credentials.generate(self.directory, [], new)
        self.services.extend(new)
        credentials.write_acl(self.directory, PROJECT_ACL.read_text(encoding="utf-8"))
        self._reload()

    def _reload(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(1)  # SIGHUP: mosquitto reloads passwd and ACL

    @property
    def persistence_dir(self) -> Path:
        return self.directory / "persistence"

    def start(self, timeout: float = 10.0) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        passwd = credentials.generate(self.directory, self.hosts, self.services)
        acl = credentials.write_acl(self.directory, PROJECT_ACL.read_text(encoding="utf-8"))
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            render_config(
                PROJECT_CONF.read_text(encoding="utf-8"),
                port=self.port,
                passwd=passwd,
                acl=acl,
                persistence=self.persistence_dir,
            ),
            encoding="utf-8",
        )
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self._process.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None
