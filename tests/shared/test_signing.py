from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from shared.errors import SignatureError
from shared.messages import Command, decode, encode
from shared.signing import generate_keypair, load_private_key, load_public_key, sign, verify

COMMAND = Command(
    id="cmd-0001abcd",
    host="web-1",
    deployment="d1",
    action="deploy",
    version="1.3.0",
    issued=1000.0,
    expires=1600.0,
    fencing=4,
)


@pytest.fixture
def keys(tmp_path: Path):  # type: ignore[no-untyped-def]
    private, public = generate_keypair(tmp_path / "keys")
    return load_private_key(private), load_public_key(public)


def test_signed_command_verifies_after_the_wire(keys) -> None:  # type: ignore[no-untyped-def]
    private, public = keys
    signed = sign(COMMAND, private)
    verify(decode(Command, encode(signed)), public)


def test_field_order_and_whitespace_do_not_matter(keys) -> None:  # type: ignore[no-untyped-def]
    private, public = keys
    raw = msgspec.json.decode(encode(sign(COMMAND, private)))
    reordered = (
        b"{ "
        + b", ".join(
            msgspec.json.encode(k) + b" : " + msgspec.json.encode(v)
            for k, v in reversed(raw.items())
        )
        + b" }"
    )
    verify(decode(Command, reordered), public)


@pytest.mark.parametrize(
    "field", [("version", "6.6.6"), ("host", "web-2"), ("expires", 99999.0), ("fencing", 9)]
)
def test_tampering_any_field_breaks_the_signature(keys, field) -> None:  # type: ignore[no-untyped-def]
    private, public = keys
    tampered = msgspec.structs.replace(sign(COMMAND, private), **{field[0]: field[1]})
    with pytest.raises(SignatureError, match="does not verify"):
        verify(tampered, public)


def test_unsigned_and_garbage_signatures_are_refused(keys) -> None:  # type: ignore[no-untyped-def]
    _, public = keys
    with pytest.raises(SignatureError, match="unsigned"):
        verify(COMMAND, public)
    with pytest.raises(SignatureError, match="base64"):
        verify(msgspec.structs.replace(COMMAND, signature="!!!"), public)


def test_another_key_does_not_verify(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    private, _ = keys
    _, other_public = generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError):
        verify(sign(COMMAND, private), load_public_key(other_public))


def test_keypair_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(SignatureError, match="already exists"):
        generate_keypair(tmp_path)
    with pytest.raises(SignatureError, match=r"not an Ed25519 private key|cannot load"):
        load_private_key(public)
