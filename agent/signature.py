"""Checking a command's signature against the coordinator's public key.

The signed bytes and the signature's parsing come from ``shared.signing`` (which
imports ``cryptography`` only inside the functions the agent does not call); the
verification is libsodium's, through PyNaCl: about 1.3 MB resident, against 9 MB for
``cryptography``. libsodium refuses non-canonical and small-order keys and R values
and an S at or above the group order (no malleable signatures).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Final

from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import BadSignatureError

from shared.errors import SignatureError
from shared.messages import Command
from shared.signing import canonical_bytes, signature_bytes

# DER SubjectPublicKeyInfo of an Ed25519 key: this prefix, then the 32 key bytes.
_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
_PEM_BEGIN: Final = "-----BEGIN PUBLIC KEY-----"
_PEM_END: Final = "-----END PUBLIC KEY-----"
KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64


def load_public_key(path: str | Path) -> bytes:
    """The raw 32-byte key from a PEM ``PUBLIC KEY`` file (as ``rollguard keys
    generate`` writes it); SignatureError says what is wrong with the file."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"cannot read public key {path}: {exc}") from exc
    begin, end = text.find(_PEM_BEGIN), text.find(_PEM_END)
    if begin == -1 or end < begin:
        raise SignatureError(f"{path} is not a PEM public key (no {_PEM_BEGIN} block)")
    try:
        der = base64.b64decode("".join(text[begin + len(_PEM_BEGIN) : end].split()), validate=True)
    except binascii.Error as exc:
        raise SignatureError(f"{path}: the PEM block is not valid base64") from exc
    if len(der) != len(_SPKI_PREFIX) + KEY_BYTES or not der.startswith(_SPKI_PREFIX):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    key = der[len(_SPKI_PREFIX) :]
    if not crypto_core_ed25519_is_valid_point(key):
        raise SignatureError(f"{path} does not hold a valid Ed25519 point")
    return key


def verify_bytes(key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``message`` verifies against the raw ``key``; wrong
    lengths and non-points are a plain no."""
    if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, key)
    except BadSignatureError:
        return False
    return True


def verify(command: Command, key: bytes) -> None:
    """Return if ``command`` carries a valid signature by ``key``; else raise."""
    if not verify_bytes(key, canonical_bytes(command), signature_bytes(command)):
        raise SignatureError("signature does not verify against the coordinator key")
