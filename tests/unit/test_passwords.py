"""SMPP password hashes (CONTRACT §8): scrypt, salted, verified in constant time."""

from __future__ import annotations

import base64
import hashlib

import pytest

from smsrouter.router.passwords import hash_password, parse_hash, verify_password


def test_the_right_password_verifies() -> None:
    assert verify_password("demo-pass", hash_password("demo-pass"))


def test_a_wrong_password_does_not() -> None:
    encoded = hash_password("demo-pass")
    assert not verify_password("demo-pasS", encoded)
    assert not verify_password("", encoded)


def test_two_hashes_of_one_password_differ_by_their_salt() -> None:
    first, second = hash_password("secret"), hash_password("secret")
    assert first != second
    assert verify_password("secret", first) and verify_password("secret", second)


def test_the_password_is_not_in_the_encoding() -> None:
    assert "hunter22" not in hash_password("hunter22")


def test_parameters_are_written_and_parsed() -> None:
    encoded = hash_password("x")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    parsed = parse_hash(encoded)
    assert parsed is not None
    assert (parsed.n, parsed.r, parsed.p) == (16384, 8, 1)
    assert len(parsed.salt) == 16 and base64.b64decode(salt) == parsed.salt
    assert len(parsed.key) == 32 and base64.b64decode(key) == parsed.key


def test_other_parameters_in_a_stored_hash_are_honoured() -> None:
    # A hash written with other (cheaper) parameters still verifies: the
    # encoding carries them, so they may change without a rehash of every row.
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"pw", salt=salt, n=1024, r=4, p=2, dklen=32)
    encoded = f"scrypt$1024$4$2${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    assert verify_password("pw", encoded)
    assert not verify_password("pW", encoded)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "demo-pass",
        "scrypt$16384$8$1$c2FsdA==",  # a part missing
        "bcrypt$16384$8$1$c2FsdA==$a2V5",  # another scheme
        "scrypt$x$8$1$c2FsdA==$a2V5",  # n not a number
        "scrypt$1000$8$1$c2FsdA==$a2V5",  # n not a power of two
        "scrypt$0$8$1$c2FsdA==$a2V5",
        "scrypt$-16$8$1$c2FsdA==$a2V5",
        "scrypt$16384$8$1$not base64!$a2V5",
        "scrypt$16384$8$1$c2FsdA==$",  # no key
        "scrypt$1073741824$8$1$c2FsdA==$a2V5",  # a memory bomb
        "scrypt$16384$8$1$c2FsdA==$a2V5$extra",
    ],
)
def test_a_malformed_encoding_is_false_not_an_exception(encoded: str) -> None:
    assert parse_hash(encoded) is None
    assert verify_password("demo-pass", encoded) is False
