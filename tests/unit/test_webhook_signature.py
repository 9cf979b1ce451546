"""The X-Smsrouter-Signature value (connectors/webhooks.py `sign`)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from smsrouter.connectors import webhooks
from smsrouter.connectors.webhooks import sign


def _reference(secret: str, body: bytes) -> str:
    # RFC 2104 through the standard library's one-shot function.
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


def test_the_signature_is_the_hmac_sha256_of_the_body_under_the_secret() -> None:
    bodies = [b"", b'{"id":"1","status":"delivered"}', bytes(range(256)) * 9]
    secrets = ["demo-secret", "", "ключ", "k" * 200]  # a key longer than a block is hashed
    for _ in range(3):  # a keyed HMAC is copied, never consumed
        for secret in secrets:
            for body in bodies:
                assert sign(secret, body) == _reference(secret, body)
    assert sign("a", b"x") != sign("b", b"x")
    assert sign("a", b"x") == "sha256=" + hmac.new(b"a", b"x", hashlib.sha256).hexdigest()


def test_keyed_hmacs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "_MAX_KEYED", 4)
    webhooks._KEYED.clear()
    for n in range(10):
        assert sign(f"secret-{n}", b"body") == _reference(f"secret-{n}", b"body")
        assert len(webhooks._KEYED) <= 4
