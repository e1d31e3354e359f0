"""The agent's Ed25519 verification (libsodium) agrees with ``cryptography`` and RFC 8032."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import signature
from shared import signing
from shared.errors import SignatureError
from shared.messages import Command

# The order of the Ed25519 group.
L = 2**252 + 27742317777372353535851937790883648493

# RFC 8032, section 7.1, tests 1 to 3: (public key, message, signature).
RFC_VECTORS = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("key", "message", "sig"), RFC_VECTORS)
def test_rfc_8032_vectors(key: str, message: str, sig: str) -> None:
    k, m, s = bytes.fromhex(key), bytes.fromhex(message), bytes.fromhex(sig)
    assert signature.verify_bytes(k, m, s)
    assert not signature.verify_bytes(k, m + b"x", s)
    assert not signature.verify_bytes(k, m, s[:63] + bytes([s[63] ^ 1]))


def test_a_malleable_signature_with_s_plus_l_is_refused() -> None:
    key, message, sig = (bytes.fromhex(x) for x in RFC_VECTORS[1])
    s = int.from_bytes(sig[32:], "little") + L
    assert not signature.verify_bytes(key, message, sig[:32] + s.to_bytes(32, "little"))


def test_non_points_and_wrong_lengths_are_refused() -> None:
    key, message, sig = (bytes.fromhex(x) for x in RFC_VECTORS[0])
    not_a_point = (2**255 - 19 + 1).to_bytes(32, "little")  # y >= p
    assert not signature.verify_bytes(not_a_point, message, sig)
    assert not signature.verify_bytes(key, message, not_a_point + sig[32:])
    assert not signature.verify_bytes(key[:31], message, sig)
    assert not signature.verify_bytes(key, message, sig[:63])


@settings(max_examples=40, deadline=None)
@given(message=st.binary(max_size=300), seed=st.binary(min_size=32, max_size=32))
def test_agrees_with_cryptography(message: bytes, seed: bytes) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = private.sign(message)
    assert signature.verify_bytes(public, message, sig)
    assert not signature.verify_bytes(public, message + b"\0", sig)
    flipped = bytearray(sig)
    flipped[len(message) % 64] ^= 0x40
    assert not signature.verify_bytes(public, message, bytes(flipped))


def command(**changes: object) -> Command:
    base = Command(
        id="cmd-12345678",
        host="host-a",
        deployment="dep-1",
        action="deploy",
        version="1.2.3",
        issued=1000.0,
        expires=2000.0,
        args={"b": "2", "a": "1"},
    )
    return msgspec.structs.replace(base, **changes)


def test_checking_a_signature_does_not_load_cryptography() -> None:
    # The agent shares the canonical bytes with shared.signing without paying for
    # cryptography's ~8 MB; a fresh interpreter shows what the import really loads.
    code = (
        "import sys, agent.signature, agent.executor\n"
        "assert 'cryptography' not in sys.modules, sorted(m for m in sys.modules if 'crypto' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_commands_signed_by_the_coordinator_verify(tmp_path: Path) -> None:
    private_path, public_path = signing.generate_keypair(tmp_path)
    key = signature.load_public_key(public_path)
    signed = signing.sign(command(), signing.load_private_key(private_path))
    signature.verify(signed, key)
    with pytest.raises(SignatureError, match="does not verify"):
        signature.verify(msgspec.structs.replace(signed, version="6.6.6"), key)
    with pytest.raises(SignatureError, match="unsigned"):
        signature.verify(command(), key)
    with pytest.raises(SignatureError, match="base64"):
        signature.verify(command(signature="***"), key)


def test_public_key_files_are_checked(tmp_path: Path) -> None:
    _, public_path = signing.generate_keypair(tmp_path / "k")
    der = base64.b64decode("".join(public_path.read_text().splitlines()[1:-1]))
    assert signature.load_public_key(public_path) == der[-32:]
    cases = {
        "missing.pem": None,
        "text.pem": "hello\n",
        "rsa.pem": "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAL\n"
        "-----END PUBLIC KEY-----\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(SignatureError):
            signature.load_public_key(path)
