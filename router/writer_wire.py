"""What the router and its writer process say to each other (sans-IO).

The writer process runs the group-commit writers (router/store.py) so
that the database work of every message (asyncpg's encoding, the
batching, the round trips) leaves the router's event loop and its core.
Both ends talk over one Unix stream socket in frames: a 4-byte big-endian
length, then one msgpack document (msgspec). The operations cross as they
are: they are msgspec Structs tagged by kind.

    router → writer   Hello, then frames of [Request, ...]
    writer → router   Ready (or Failed), then frames of Replies

A reply may come in any frame after its request; `seq` pairs them.
The frames are plain data; `FramedProtocol` is the thin asyncio end.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec

from router.store import Finished, Notification, Operation

# Which writer of the process runs an operation.
INGEST = 0
STATUS = 1
WRITER_NAMES = ("ingest", "status")

_LENGTH = struct.Struct(">I")
# Far above any batch a loop turn makes (a 500-recipient request is ~150 kB);
# a length beyond it means the stream is out of step.
MAX_FRAME = 256 * 1024 * 1024


class Hello(msgspec.Struct, array_like=True):
    """The writer process's settings; the DSN goes here, never on its
    command line, where any local user could read it."""

    dsn: str
    max_batch: int
    ingest_connections: int
    status_flush_interval: float
    retry_hours: float
    log_level: str = "info"
    log_format: str = "json"


class Ready(msgspec.Struct, tag="ready", array_like=True):
    pid: int


class Failed(msgspec.Struct, tag="failed", array_like=True):
    """An operation (or the start) failed; nothing of it was written."""

    error: str


class Request(msgspec.Struct, array_like=True):
    seq: int
    writer: int  # INGEST or STATUS
    op: Operation


Result = None | bool | Finished | Notification | Failed


class Replies(msgspec.Struct, array_like=True):
    # (seq, what the operation's future resolves to)
    results: list[tuple[int, Result]]
    # Outbox rows the status writer's commits created, for the dispatcher.
    notifications: list[Notification]
    # (writer, seconds, operations) of each commit, for the router's metrics.
    commits: list[tuple[int, float, int]]


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
hello_decoder = msgspec.msgpack.Decoder(Hello)
start_decoder = msgspec.msgpack.Decoder(Ready | Failed)
requests_decoder = msgspec.msgpack.Decoder(list[Request])
replies_decoder = msgspec.msgpack.Decoder(Replies)


def frame(obj: object) -> bytes:
    """One frame: the length, then the document."""
    buf = bytearray(_LENGTH.size)
    _encoder.encode_into(obj, buf, _LENGTH.size)
    _LENGTH.pack_into(buf, 0, len(buf) - _LENGTH.size)
    return bytes(buf)


class FrameError(Exception):
    """The stream no longer splits into frames."""


class FrameReader:
    """Splits a byte stream into frames' documents."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The documents completed by `data`, in order."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        at = 0
        size = _LENGTH.size
        while len(buf) - at >= size:
            (length,) = _LENGTH.unpack_from(buf, at)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length} bytes")
            if len(buf) - at - size < length:
                break
            out.append(bytes(buf[at + size : at + size + length]))
            at += size + length
        if at:
            del buf[:at]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buf)


class FramedProtocol(asyncio.Protocol):
    """A stream of frames on either end: each document goes to `received`;
    a stream out of step, or a document that does not decode, to
    `unreadable`."""

    def __init__(self) -> None:
        self._reader = FrameReader()
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            for doc in self._reader.feed(data):
                self.received(doc)
        except (FrameError, ValueError) as exc:
            # msgspec's DecodeError and ValidationError are ValueErrors.
            self.unreadable(exc)

    def received(self, doc: bytes) -> None:
        raise NotImplementedError

    def unreadable(self, exc: Exception) -> None:
        raise NotImplementedError

    def send(self, obj: object) -> None:
        self.transport.write(frame(obj))
