"""Ed25519 command signatures over a canonical encoding.

The coordinator holds the private key; agents hold only the public key. The signed
bytes are a domain tag followed by the command's JSON with the ``signature`` field
emptied and keys in sorted order, so both sides derive them identically from the
decoded Struct, whatever the sender's field order or whitespace.

``cryptography`` is imported inside the functions that need it: the agent takes the
canonical encoding and signature parsing from here but verifies with libsodium
(PyNaCl, ``agent.signature``) to stay inside its memory budget.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from shared.errors import SignatureError
from shared.messages import Command

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

_DOMAIN: Final = b"rollguard-cmd-v1\n"
PRIVATE_KEY_NAME: Final = "coordinator.key"
PUBLIC_KEY_NAME: Final = "coordinator.pub"


def canonical_bytes(command: Command) -> bytes:
    unsigned = msgspec.structs.replace(command, signature="")
    return _DOMAIN + msgspec.json.encode(unsigned, order="sorted")


def sign(command: Command, key: Ed25519PrivateKey) -> Command:
    signature = key.sign(canonical_bytes(command))
    return msgspec.structs.replace(command, signature=base64.b64encode(signature).decode())


def signature_bytes(command: Command) -> bytes:
    """The raw signature carried by ``command``; SignatureError if absent or garbled."""
    if not command.signature:
        raise SignatureError("command is unsigned")
    try:
        return base64.b64decode(command.signature, validate=True)
    except binascii.Error as exc:
        raise SignatureError("signature is not valid base64") from exc


def verify(command: Command, key: Ed25519PublicKey) -> None:
    """Return if ``command`` carries a valid signature by ``key``; else raise."""
    from cryptography.exceptions import InvalidSignature

    raw = signature_bytes(command)
    try:
        key.verify(raw, canonical_bytes(command))
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify against the coordinator key") from exc


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write a new key pair into ``directory``; refuse to overwrite an existing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / PRIVATE_KEY_NAME
    public_path = directory / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot load private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot load public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key
