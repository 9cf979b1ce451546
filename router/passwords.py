"""SMPP passwords at rest (CONTRACT §8 "SMPP credentials": a slow salted hash).

An SMPP password is short (8 characters, SMPP 3.4 §5.2.2), so a plain digest
of it falls to a dictionary at once; scrypt makes each guess cost memory and
time. The encoding carries its parameters, so that a later change of them
still verifies the hashes stored before it:
``scrypt$<n>$<r>$<p>$<salt base64>$<hash base64>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

SCHEME = "scrypt"
N = 2**14
R = 8
P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# scrypt needs 128·n·r bytes; a stored encoding must not be able to ask for
# more than a few times what we ever write (a bad row is not a memory bomb).
_MAX_MEMORY = 4 * 128 * N * R


@dataclass(frozen=True, slots=True)
class ScryptHash:
    """The parts of an encoded password hash."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_MAX_MEMORY + 1024 * 1024
    )


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    key = _derive(password, salt, N, R, P, KEY_BYTES)
    return "$".join(
        (
            SCHEME,
            str(N),
            str(R),
            str(P),
            base64.b64encode(salt).decode(),
            base64.b64encode(key).decode(),
        )
    )


def _positive_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_hash(encoded: str) -> ScryptHash | None:
    """The parts of `encoded`, or None when it is not a usable scrypt hash."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = (_positive_int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    # scrypt wants n a power of two above 1; the bounds keep a bad row from
    # costing more than a hash we write ourselves (a few times).
    if (
        n < 2
        or n & (n - 1)
        or 128 * n * r > _MAX_MEMORY
        or p > 16
        or not salt
        or not 1 <= len(key) <= 64
    ):
        return None
    return ScryptHash(n=n, r=r, p=p, salt=salt, key=key)


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` is the one `encoded` was made from; False for a
    malformed encoding, never an exception (a bad row refuses a bind, it
    does not crash the SMPP server)."""
    parsed = parse_hash(encoded)
    if parsed is None:
        return False
    try:
        key = _derive(password, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.key))
    except (ValueError, MemoryError):
        return False
    # Constant-time: the comparison's timing says nothing about the key.
    return hmac.compare_digest(key, parsed.key)
