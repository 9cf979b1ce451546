"""A TCP proxy in front of PostgreSQL that can lose the answer to a commit:
the commit reaches the server and lands, and the client sees its
connection drop instead of the answer (a network fault, a failover at the
wrong moment). The one fault no server-side kill can make on purpose.

asyncpg ends a transaction with a simple Query message, `COMMIT;`, and a
COPY that is its own transaction with a CopyDone message; the proxy looks
for the one it is armed for in what the client sends, forwards it, and
closes both sides when the server's answer arrives, without passing it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

_COMMIT = b"Q" + struct.pack("!I", 4 + len(b"COMMIT;\x00")) + b"COMMIT;\x00"
_COPY_DONE = b"c" + struct.pack("!I", 4)


class PgProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._armed: bytes | None = None  # the message whose answer is to be lost
        self.dropped = 0  # answers lost
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def lose_next_commit_answer(self) -> None:
        self._armed = _COMMIT

    def lose_next_copy_answer(self) -> None:
        self._armed = _COPY_DONE

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        self._writers.update((client_w, server_w))
        committing = asyncio.Event()  # a COMMIT whose answer is to be lost went out

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self._armed is not None and self._armed in data:
                    self._armed = None
                    committing.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if committing.is_set():
                    # The server answered the COMMIT: it landed. Lose it.
                    self.dropped += 1
                    client_w.transport.abort()
                    server_w.close()
                    return
                client_w.write(data)
                await client_w.drain()

        tasks = {asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())}
        self._pipes.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._pipes.difference_update(tasks)
            for w in (client_w, server_w):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()
