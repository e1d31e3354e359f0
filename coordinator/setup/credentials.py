"""Broker credentials: random passwords for hosts and service users, written as a
mosquitto password file plus one password file per user for the clients to read, and
the broker's ACL for them.

The broker ties every client id to its username (``use_username_as_clientid``), so
one credential is one connection: a second client on the same credential takes the
first one's place. Hence one credential per client that runs at the same time: each
host its own; each coordinator of an HA pair its own (``_coordinator-<node>``); each
operator reader (a dashboard, a ``mosquitto_sub``) its own (``_operator-<name>``), so
readers never kick each other off. ``_coordinator`` and ``_operator`` are the
single-node coordinator's and the first reader's.

The hash is mosquitto 2.x's own ``$7$`` format (PBKDF2-SHA512, 101 iterations), so
no ``mosquitto_passwd`` binary is needed on the machine that generates them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from shared.errors import RollguardError
from shared.topics import validate_host_id

COORDINATOR_USER: Final = "_coordinator"
OPERATOR_USER: Final = "_operator"
SERVICE_USERS: Final = (COORDINATOR_USER, OPERATOR_USER)
PASSWD_NAME: Final = "passwd"
ACL_NAME: Final = "acl"
_ITERATIONS: Final = 101
# A coordinator's node name or a reader's name, as it follows the dash.
_SUFFIX: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CredentialError(RollguardError):
    """A service user name is not one rollguard knows how to grant."""


def coordinator_user(node: str) -> str:
    """The broker user of the coordinator on ``node`` (one per node of an HA pair)."""
    return _service(COORDINATOR_USER, node)


def reader_user(name: str) -> str:
    """The broker user of one read-only client (a dashboard, a ``mosquitto_sub``)."""
    return _service(OPERATOR_USER, name)


def _service(base: str, suffix: str) -> str:
    if not _SUFFIX.fullmatch(suffix):
        raise CredentialError(
            f"{suffix!r} cannot name a broker user: 1-64 of A-Z a-z 0-9 . _ - expected"
        )
    return f"{base}-{suffix}"


def service_role(user: str) -> str | None:
    """``readwrite`` for a coordinator user, ``read`` for a reader, None for a host."""
    for base, role in ((COORDINATOR_USER, "readwrite"), (OPERATOR_USER, "read")):
        if user == base or (
            user.startswith(base + "-") and _SUFFIX.fullmatch(user[len(base) + 1 :])
        ):
            return role
    return None


def _validate_user(user: str) -> str:
    if user.startswith("_"):
        if service_role(user) is None:
            raise CredentialError(
                f"{user!r} is not a service user: _coordinator[-<node>] or _operator[-<name>]"
            )
        return user
    return validate_host_id(user)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_path(directory: Path, user: str) -> Path:
    return directory / f"{user}.password"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def generate(directory: Path, hosts: Iterable[str], services: Iterable[str] = ()) -> Path:
    """Create (or extend) credentials in ``directory`` for ``hosts``, the two default
    service users and any further ``services`` (``coordinator_user(node)``,
    ``reader_user(name)``); keep any password that already exists. Returns the
    mosquitto passwd path.

    Every name is validated before anything is written, so a bad one changes nothing.
    """
    users = [validate_host_id(host) for host in hosts]
    users += [_validate_user(user) for user in services]
    directory.mkdir(parents=True, exist_ok=True)
    passwd = directory / PASSWD_NAME
    entries: dict[str, str] = {}
    if passwd.exists():
        for line in passwd.read_text(encoding="utf-8").splitlines():
            user, sep, hashed = line.partition(":")
            if sep:
                entries[user] = hashed
    for user in (*SERVICE_USERS, *users):
        path = password_path(directory, user)
        if user in entries and path.exists():
            continue
        password = secrets.token_urlsafe(24)
        _write_private(path, password + "\n")
        entries[user] = hash_password(password)
    _write_private(passwd, "".join(f"{u}:{h}\n" for u, h in sorted(entries.items())))
    return passwd


def render_acl(template: str, users: Iterable[str]) -> str:
    """The broker ACL: ``template`` (the project's ACL: host patterns and the two
    default service users) plus a block for every further service user in ``users``:
    coordinators read and write everything under ``rollguard/v1``, readers only read."""
    named = set(re.findall(r"^user\s+(\S+)\s*$", template, flags=re.MULTILINE))
    blocks = []
    for user in sorted(set(users) - named):
        role = service_role(user)
        if role is not None:
            blocks.append(f"user {user}\ntopic {role} rollguard/v1/#\n")
    if not blocks:
        return template
    # A ``pattern`` line applies to every user wherever it stands, so the blocks can
    # simply follow the template.
    return (
        template.rstrip("\n")
        + "\n\n# Further service users (one per client).\n"
        + ("\n".join(blocks))
    )


def write_acl(directory: Path, template: str) -> Path:
    """Write ``directory/acl`` for every service user in ``directory``'s passwd."""
    passwd = directory / PASSWD_NAME
    users = []
    if passwd.exists():
        users = [
            line.partition(":")[0]
            for line in passwd.read_text(encoding="utf-8").splitlines()
            if ":" in line
        ]
    path = directory / ACL_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_acl(template, users), encoding="utf-8")
    os.replace(tmp, path)
    return path
