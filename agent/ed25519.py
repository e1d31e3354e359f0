"""Ed25519 signature verification (RFC 8032, sections 5.1.3 and 5.1.7), pure Python.

Why not ``cryptography``: loading it costs about 8 MB resident, a quarter of the
agent's 35 MB budget, to check the signature of a handful of commands a day.
Verification handles only public data (key, message, signature), so the constant-
time concerns of signing do not arise; it is the RFC's reference arithmetic, with its
checks: the key and R must decode to curve points (y < p, a square root exists), and
S must be below the group order L (no malleable signatures). The equation is the
cofactorless [S]B = R + [k]A, as OpenSSL (behind ``cryptography``) checks it.
The tests cross-check it against ``cryptography`` on random keys and messages.
A verification costs a few milliseconds.
"""

from __future__ import annotations

import hashlib
from typing import Final

P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493
D: Final = -121665 * pow(121666, P - 2, P) % P
SQRT_M1: Final = pow(2, (P - 1) // 4, P)

# Extended homogeneous coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, x*y = T/Z.
Point = tuple[int, int, int, int]
IDENTITY: Final[Point] = (0, 1, 1, 0)


def _add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    while scalar > 0:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _equal(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def decode_point(data: bytes) -> Point | None:
    """The curve point encoded in 32 bytes, or None if they encode none."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_BASE_Y: Final = 4 * pow(5, P - 2, P) % P
_BASE_X: Final = _recover_x(_BASE_Y, 0)
assert _BASE_X is not None
BASE: Final[Point] = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % P)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by the 32-byte
    ``public_key``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = decode_point(public_key)
    if a is None:
        return False
    r_bytes = signature[:32]
    r = decode_point(r_bytes)
    if r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % L
    return _equal(_multiply(s, BASE), _add(r, _multiply(k, a)))
