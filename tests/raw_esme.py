"""A partner ESME as a raw TCP connection speaking SMPP through our codec and
nothing more: it reads only when the test says so, so that it can do what
no well-behaved library does (never read, pipeline without a window)."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from smsrouter.connectors.smpp import Pdu, decode, encode

#: Upper bound of any single wait, in seconds.
BOUND = 15.0


class RawEsme:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seq = 0  # the latest sequence number given out

    @classmethod
    async def connect(cls, port: int) -> RawEsme:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), BOUND)
        return cls(reader, writer)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, pdu: Pdu) -> int:
        """Write the PDU (numbered next unless it has its number); its number."""
        if not pdu.sequence_number:
            pdu.sequence_number = self.next_seq()  # type: ignore[misc]
        self.writer.write(encode(pdu))
        return pdu.sequence_number

    async def read(self, timeout: float = BOUND) -> Pdu | None:
        """The next PDU from the router; None once it closed the connection."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                return decode(head + await self.reader.readexactly(length - 4))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None

    async def bind(self, kind: type[Pdu], system_id: str, password: str) -> int:
        """Bind; the command_status of the answer."""
        self.send(kind(system_id=system_id, password=password))  # type: ignore[call-arg]
        resp = await self.read()
        assert resp is not None, "connection closed instead of a bind response"
        return resp.command_status

    async def closed_by_peer(self, timeout: float = BOUND) -> bool:
        """True when the router closes the connection (EOF) within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
