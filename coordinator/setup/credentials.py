"""Broker credentials: random passwords for hosts and service users, written as a
mosquitto password file plus one password file per user for the clients to read.

The hash is mosquitto 2.x's own ``$7$`` format (PBKDF2-SHA512, 101 iterations), so
no ``mosquitto_passwd`` binary is needed on the machine that generates them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from shared.topics import validate_host_id

COORDINATOR_USER: Final = "_coordinator"
OPERATOR_USER: Final = "_operator"
SERVICE_USERS: Final = (COORDINATOR_USER, OPERATOR_USER)
PASSWD_NAME: Final = "passwd"
_ITERATIONS: Final = 101


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


def generate(directory: Path, hosts: Iterable[str]) -> Path:
    """Create (or extend) credentials in ``directory`` for ``hosts`` and the service
    users; keep any password that already exists. Returns the mosquitto passwd path.

    Every host id is validated before anything is written, so a bad id changes nothing.
    """
    users = [validate_host_id(host) for host in hosts]
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
