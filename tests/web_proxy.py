"""A small HTTP proxy on 127.0.0.1 for tests of the router's egress
(HTTP_PROXY / HTTPS_PROXY): it records the head of every request it is
asked and serves both ways a client uses a proxy —

* `CONNECT host:port` (RFC 9110 §9.3.6): answers `answer` and, on a 200,
  relays bytes both ways;
* a request in absolute form (`POST http://host:port/path HTTP/1.1`, RFC
  9112 §3.2.2): sends it to the origin in origin form, one request per
  origin connection (`Connection: close`), and relays the answer. The
  client's connection to the proxy stays open for its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@dataclass
class WebProxy:
    url: str = ""
    answer: bytes = ESTABLISHED  # what a CONNECT gets
    asked: list[bytes] = field(default_factory=list)  # every request head, in order
    connections: int = 0  # client connections accepted

    @property
    def request_lines(self) -> list[str]:
        return [head.split(b"\r\n", 1)[0].decode("latin-1") for head in self.asked]

    def header(self, index: int, name: str) -> str | None:
        """A header of the index-th request asked, or None."""
        for line in self.asked[index].split(b"\r\n")[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _origin_form(head: bytes) -> tuple[str, int, bytes]:
    """The origin and the head to send it: origin-form request line, the
    client's headers less Proxy-Authorization and Connection, and
    `Connection: close`."""
    line, _, rest = head.partition(b"\r\n")
    method, target, version = line.split(b" ", 2)
    url = urlsplit(target.decode("latin-1"))
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [
        h
        for h in rest.split(b"\r\n")
        if h and h.split(b":", 1)[0].strip().lower() not in (b"proxy-authorization", b"connection")
    ]
    out = b"\r\n".join([b"%s %s %s" % (method, path.encode(), version), *kept])
    return url.hostname or "", url.port or 80, out + b"\r\nConnection: close\r\n\r\n"


@contextlib.asynccontextmanager
async def web_proxy() -> AsyncIterator[WebProxy]:
    proxy = WebProxy()
    tasks: set[asyncio.Task[None]] = set()

    async def tunnel(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(proxy.answer)
        if not proxy.answer.startswith(b"HTTP/1.1 200"):
            writer.close()
            return
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def forward(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = await reader.readexactly(_content_length(head))
        host, port, origin_head = _origin_form(head)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        up_writer.write(origin_head + body)
        answer = await up_reader.read()  # the origin closes after one answer
        up_writer.close()
        # The client may keep its connection to the proxy: the origin's
        # `Connection: close` is not passed on.
        answer = answer.replace(b"Connection: close\r\n", b"").replace(
            b"connection: close\r\n", b""
        )
        writer.write(answer)

    async def serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                proxy.asked.append(head)
                if head.startswith(b"CONNECT "):
                    await tunnel(head, reader, writer)
                    return
                await forward(head, reader, writer)
        writer.close()

    def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(serve_client(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
