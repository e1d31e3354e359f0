"""``rollguard setup broker|coordinator|agent``: the files each daemon reads, owned and
moded for the user that reads them.

Mosquitto 2 drops to the ``mosquitto`` user before it reads its password file and
ACL; the coordinator runs as ``rollguard``, the agent as ``rollguard-agent``. Files
written as root 0600 are then unreadable to the daemon that needs them. A setup is a
plan of steps (a directory, a file with its content, owner and mode, broker
credentials, a key pair); each step looks at what is there and does only what is
missing or wrong, so a second run changes nothing. ``--dry-run`` prints the plan's
changes without making any.

Who reads what:

* broker: its directory ``root:mosquitto 0750``, ``passwd`` and ``acl``
  ``root:mosquitto 0640``; the per-user password files stay ``root 0600`` (they are
  copied to the hosts and the coordinator).
* coordinator: ``keys/coordinator.key`` and ``_coordinator.password`` owned by
  ``rollguard``, 0600; the state directory ``rollguard:rollguard 0750`` with the API
  token ``0640``: the ``rollguard`` group is the operators' group, whose members run
  the CLI without sudo (the coordinator's other files there are 0600, by its umask).
* agent: ``<host>.password`` ``root:rollguard-agent 0640``, the public key and CA
  0644, its state directory ``0700`` and its releases root owned by
  ``rollguard-agent``.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final, Protocol

from coordinator.setup.credentials import (
    COORDINATOR_USER,
    PASSWD_NAME,
    SERVICE_USERS,
    coordinator_user,
    generate,
    password_path,
    reader_user,
    render_acl,
)
from shared.errors import RollguardError
from shared.topics import validate_host_id

BROKER_DIR: Final = "/etc/mosquitto/rollguard"
BROKER_USER: Final = "mosquitto"
CONFIG_DIR: Final = "/etc/rollguard"
COORDINATOR_STATE_DIR: Final = "/var/lib/rollguard"
COORDINATOR_USER_NAME: Final = "rollguard"
AGENT_STATE_DIR: Final = "/var/lib/rollguard-agent"
AGENT_USER_NAME: Final = "rollguard-agent"
DEPLOY_ROOT: Final = "/srv/app"
ACL_NAME: Final = "acl"
TOKEN_NAME: Final = "api.token"
KEYS_DIR: Final = "keys"
PRIVATE_KEY: Final = "coordinator.key"
PUBLIC_KEY: Final = "coordinator.pub"
CA_NAME: Final = "ca.pem"
ROOT: Final = "root"


class SetupError(RollguardError):
    """A setup step cannot be planned or applied; the message says which and why."""


@dataclass(frozen=True)
class Owner:
    user: str
    group: str

    def ids(self) -> tuple[int, int]:
        try:
            uid = pwd.getpwnam(self.user).pw_uid
        except KeyError:
            raise SetupError(
                f"no user `{self.user}`: create it first "
                f"(useradd --system --no-create-home --shell /usr/sbin/nologin {self.user})"
            ) from None
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise SetupError(f"no group `{self.group}`: create it first") from None
        return uid, gid

    def __str__(self) -> str:
        return f"{self.user}:{self.group}"

    @classmethod
    def of(cls, user: str) -> Owner:
        """``user`` with its primary group (useradd names it after the user)."""
        try:
            gid = pwd.getpwnam(user).pw_gid
        except KeyError:
            return cls(user, user)  # ids() says the user is missing
        try:
            return cls(user, grp.getgrgid(gid).gr_name)
        except KeyError:
            raise SetupError(f"the primary group {gid} of user `{user}` does not exist") from None


class Step(Protocol):
    def changes(self) -> list[str]:
        """What applying this step would change; empty when it is already done."""

    def apply(self) -> None: ...


def _ownership(path: Path, owner: Owner, mode: int) -> list[str]:
    """What differs between ``path``'s owner and mode and the wanted ones."""
    uid, gid = owner.ids()
    st = path.stat()
    changes = []
    if (st.st_uid, st.st_gid) != (uid, gid):
        changes.append(f"chown {owner} {path}")
    if st.st_mode & 0o7777 != mode:
        changes.append(f"chmod {mode:04o} {path}")
    return changes


def _set_ownership(path: Path, owner: Owner, mode: int) -> None:
    uid, gid = owner.ids()
    try:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    except OSError as exc:
        raise SetupError(
            f"cannot set {owner} {mode:04o} on {path}: {exc.strerror or exc} (run as root)"
        ) from exc


@dataclass(frozen=True)
class Directory:
    path: Path
    owner: Owner
    mode: int

    def changes(self) -> list[str]:
        if not self.path.exists():
            return [f"mkdir {self.path} ({self.owner} {self.mode:04o})"]
        if not self.path.is_dir():
            raise SetupError(f"{self.path} exists and is not a directory")
        return _ownership(self.path, self.owner, self.mode)

    def apply(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        _set_ownership(self.path, self.owner, self.mode)


@dataclass(frozen=True)
class File:
    """A file with ``content`` (None: it must already exist, made by an earlier step);
    ``replace`` rewrites a file whose content differs, else an existing file is kept
    (a password, a token) and only its owner and mode are set."""

    path: Path
    owner: Owner
    mode: int
    content: Callable[[], bytes] | None = None
    replace: bool = False
    what: str = ""

    def _wanted(self) -> bytes | None:
        return self.content() if self.content is not None else None

    def changes(self) -> list[str]:
        label = f" ({self.what})" if self.what else ""
        if not self.path.exists():
            if self.content is None:
                return [f"set {self.owner} {self.mode:04o} on {self.path}{label}"]
            return [f"write {self.path}{label} ({self.owner} {self.mode:04o})"]
        if self.path.is_dir():
            raise SetupError(f"{self.path} is a directory, not a file")
        changes = []
        if self.replace:
            wanted = self._wanted()
            if wanted is not None and self.path.read_bytes() != wanted:
                changes.append(f"rewrite {self.path}{label}")
        return changes + _ownership(self.path, self.owner, self.mode)

    def apply(self) -> None:
        exists = self.path.exists()
        if not exists and self.content is None:
            raise SetupError(f"{self.path} is missing")
        if not exists or self.replace:
            data = self._wanted()
            if data is not None and (not exists or self.path.read_bytes() != data):
                _write_atomic(self.path, data)
        _set_ownership(self.path, self.owner, self.mode)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SetupError(f"cannot write {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Credentials:
    """Broker passwords for the service users and ``hosts``; existing ones are kept."""

    directory: Path
    hosts: tuple[str, ...]
    # Further service users: coordinator_user(node), reader_user(name).
    services: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        passwd = self.directory / PASSWD_NAME
        known: set[str] = set()
        if passwd.exists():
            for line in passwd.read_text(encoding="utf-8").splitlines():
                user, sep, _ = line.partition(":")
                if sep:
                    known.add(user)
        return [
            user
            for user in (*SERVICE_USERS, *self.services, *self.hosts)
            if user not in known or not password_path(self.directory, user).exists()
        ]

    def changes(self) -> list[str]:
        missing = self.missing()
        if not missing:
            return []
        return [f"create broker passwords in {self.directory} for {', '.join(missing)}"]

    def apply(self) -> None:
        try:
            generate(self.directory, self.hosts, self.services)
        except OSError as exc:
            raise SetupError(
                f"cannot write credentials in {self.directory}: {exc.strerror or exc}"
            ) from exc


@dataclass(frozen=True)
class KeyPair:
    """The command-signing key pair; an existing pair is kept (agents trust it)."""

    directory: Path

    def changes(self) -> list[str]:
        private, public = self.directory / PRIVATE_KEY, self.directory / PUBLIC_KEY
        if private.exists() and public.exists():
            return []
        if private.exists() or public.exists():
            raise SetupError(
                f"{self.directory} holds only one half of a key pair; restore the other "
                f"({PRIVATE_KEY}, {PUBLIC_KEY}) or remove it to generate a new pair"
            )
        return [f"generate the command-signing key pair in {self.directory}"]

    def apply(self) -> None:
        if not self.changes():
            return
        try:
            from shared.signing import generate_keypair
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise SetupError(
                "generating keys needs the coordinator's libraries: "
                "pip install 'rollguard[coordinator]'"
            ) from exc
        try:
            generate_keypair(self.directory)
        except ModuleNotFoundError as exc:
            raise SetupError(
                f"generating keys needs {exc.name}: pip install 'rollguard[coordinator]'"
            ) from exc


def _copy_of(source: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return source.read_bytes()
        except OSError as exc:
            raise SetupError(f"cannot read {source}: {exc.strerror or exc}") from exc

    return read


def _new_token() -> bytes:
    return (secrets.token_urlsafe(32) + "\n").encode()


def _check_source(source: Path | None, target: Path, option: str) -> None:
    if source is not None:
        if not source.is_file():
            raise SetupError(f"{option} {source}: no such file")
    elif not target.exists():
        raise SetupError(f"{target} does not exist yet: pass {option} FILE to install it")


def packaged_acl() -> bytes:
    """The broker ACL that ships with rollguard (deploy/mosquitto/acl)."""
    return resources.files("coordinator.devfleet").joinpath("mosquitto", ACL_NAME).read_bytes()


# -- the three plans ----------------------------------------------------------------


def broker_plan(
    directory: Path,
    hosts: Sequence[str],
    *,
    user: str = BROKER_USER,
    coordinator_nodes: Sequence[str] = (),
    reader_names: Sequence[str] = (),
) -> list[Step]:
    """Passwords for the service users and ``hosts``, the ACL, readable by ``user``.

    The broker makes a username the client id, so each node of an HA pair
    (``coordinator_nodes``) and each reader that runs beside another (``reader_names``)
    gets a credential of its own, and an entry in the ACL."""
    checked = tuple(validate_host_id(host) for host in hosts)
    services = tuple(
        [coordinator_user(node) for node in coordinator_nodes]
        + [reader_user(name) for name in reader_names]
    )

    def acl() -> bytes:
        return render_acl(packaged_acl().decode(), services).encode()

    Owner.of(user).ids()
    readers = Owner(ROOT, Owner.of(user).group)
    private = Owner(ROOT, ROOT)
    steps: list[Step] = [
        Directory(directory, readers, 0o750),
        Credentials(directory, checked, services),
        File(directory / PASSWD_NAME, readers, 0o640, what="the broker's password hashes"),
        File(directory / ACL_NAME, readers, 0o640, acl, replace=True, what="ACL"),
    ]
    steps += [
        File(password_path(directory, u), private, 0o600, what="copy it to its host")
        for u in (*SERVICE_USERS, *services, *checked)
    ]
    return steps


def coordinator_plan(
    config_dir: Path,
    state_dir: Path,
    *,
    user: str = COORDINATOR_USER_NAME,
    group: str | None = None,
    mqtt_password: Path | None = None,
    ca_file: Path | None = None,
) -> list[Step]:
    """The signing keys, the broker password and the API token for the coordinator
    running as ``user``; ``group`` (default: the user's primary group) is the operators' group
    that may read the API token."""
    own = Owner.of(user)
    own.ids()
    group = group or own.group
    Owner(user, group).ids()
    password_target = config_dir / f"{COORDINATOR_USER}.password"
    _check_source(mqtt_password, password_target, "--mqtt-password")
    keys = config_dir / KEYS_DIR
    steps: list[Step] = [
        Directory(config_dir, Owner(ROOT, ROOT), 0o755),
        Directory(keys, Owner(ROOT, own.group), 0o750),
        KeyPair(keys),
        File(keys / PRIVATE_KEY, own, 0o600, what="signs commands"),
        File(keys / PUBLIC_KEY, Owner(ROOT, ROOT), 0o644, what="copy it to every host"),
        File(
            password_target,
            own,
            0o600,
            _copy_of(mqtt_password) if mqtt_password else None,
            replace=mqtt_password is not None,
            what="broker password",
        ),
    ]
    if ca_file is not None:
        steps.append(_ca_step(config_dir, ca_file))
    steps += [
        Directory(state_dir, Owner(user, group), 0o750),
        File(
            state_dir / TOKEN_NAME,
            Owner(user, group),
            0o640,
            _new_token,
            what=f"API token, readable by the group {group}",
        ),
    ]
    return steps


def agent_plan(
    host: str,
    config_dir: Path,
    *,
    state_dir: Path,
    deploy_root: Path,
    user: str = AGENT_USER_NAME,
    mqtt_password: Path | None = None,
    public_key: Path | None = None,
    ca_file: Path | None = None,
) -> list[Step]:
    """The broker password, the coordinator's public key (and CA) for the agent of
    ``host`` running as ``user``; its state directory and the releases root."""
    validate_host_id(host)
    own = Owner.of(user)
    own.ids()
    password_target = config_dir / f"{host}.password"
    key_target = config_dir / KEYS_DIR / PUBLIC_KEY
    _check_source(mqtt_password, password_target, "--mqtt-password")
    _check_source(public_key, key_target, "--public-key")
    public = Owner(ROOT, ROOT)
    steps: list[Step] = [
        Directory(config_dir, public, 0o755),
        File(
            password_target,
            Owner(ROOT, own.group),
            0o640,
            _copy_of(mqtt_password) if mqtt_password else None,
            replace=mqtt_password is not None,
            what="broker password",
        ),
        Directory(config_dir / KEYS_DIR, public, 0o755),
        File(
            key_target,
            public,
            0o644,
            _copy_of(public_key) if public_key else None,
            replace=public_key is not None,
            what="the coordinator's public key",
        ),
    ]
    if ca_file is not None:
        steps.append(_ca_step(config_dir, ca_file))
    steps += [
        Directory(state_dir, own, 0o700),
        Directory(deploy_root, own, 0o755),
    ]
    return steps


def _ca_step(config_dir: Path, ca_file: Path) -> Step:
    if not ca_file.is_file():
        raise SetupError(f"--ca {ca_file}: no such file")
    return File(
        config_dir / CA_NAME,
        Owner(ROOT, ROOT),
        0o644,
        _copy_of(ca_file),
        replace=True,
        what="the broker's CA",
    )


def run(steps: Iterable[Step], *, dry_run: bool, echo: Callable[[str], None]) -> int:
    """Apply (or with ``dry_run`` only print) every change; return how many there were.

    Every step is checked before any is applied, so a missing user or source file is
    reported before anything changes."""
    steps = list(steps)
    planned = [step.changes() for step in steps]
    count = 0
    for step, changes in zip(steps, planned, strict=True):
        if not changes:
            continue
        if not dry_run:
            step.apply()
        for change in changes:
            echo(("would " if dry_run else "") + change)
            count += 1
    if count == 0:
        echo("nothing to change: already set up")
    return count
