"""Opaque list cursors (CONTRACT §3 and §8: `after`), for lists read in the
order of a bigserial id or a text key: the client gets back what it was
given and cannot forge a position that means anything else."""

from __future__ import annotations

import base64


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        return None


def id_cursor(row_id: int) -> str:
    """Where a page of a list in id order ended."""
    return _encode(b"i" + row_id.to_bytes(8, "big", signed=True))


def id_of_cursor(cursor: str) -> int | None:
    raw = _decode(cursor)
    if raw is None or len(raw) != 9 or raw[:1] != b"i":
        return None
    return int.from_bytes(raw[1:], "big", signed=True)


def key_cursor(key: str) -> str:
    """Where a page of a list in text-key order (account ids, numbers) ended."""
    return _encode(b"k" + key.encode())


def key_of_cursor(cursor: str) -> str | None:
    raw = _decode(cursor)
    if raw is None or raw[:1] != b"k":
        return None
    try:
        return raw[1:].decode()
    except UnicodeDecodeError:
        return None
