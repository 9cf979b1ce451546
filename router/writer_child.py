"""The writer process: the router's group-commit writers in a process of
their own (protocol in router/writer_wire.py).

The router starts it with one end of a socket pair, whose descriptor is
its only argument. It takes no signals: it ends when the router closes
its end of the socket (a drain, or the router's death), after committing
everything it was given, so that a Ctrl-C or a service manager's SIGTERM
to the whole group never cuts a commit short while the router drains.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import socket
import sys
from typing import Any

import asyncpg
import structlog
import uvloop

from router import writer_wire as wire
from router.notifications import plan_notifications
from router.store import GroupCommit, Notification
from smsrouter.logs import configure_logging

log = structlog.get_logger("writer")


class WriterService(wire.FramedProtocol):
    """The router's requests in, their outcomes out; one frame of replies
    per loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.hello: asyncio.Future[wire.Hello | None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.writers: list[GroupCommit] = []
        self._results: list[tuple[int, wire.Result]] = []
        self._notifications: list[Notification] = []
        self._commits: list[tuple[int, float, int]] = []
        self._scheduled = False

    # ------------------------------------------------------------ the socket

    def received(self, doc: bytes) -> None:
        if not self.hello.done():
            self.hello.set_result(wire.hello_decoder.decode(doc))
            return
        for request in wire.requests_decoder.decode(doc):
            self._submit(request)

    def unreadable(self, exc: Exception) -> None:
        log.error("writer process: unreadable request; closing", error=str(exc))
        self.transport.close()

    def eof_received(self) -> bool:
        # Keep our half open: the outcomes of what is in hand still go back.
        self._end()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.hello.done():
            self.hello.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    # ------------------------------------------------------------ the writers

    def attach(self, writers: list[GroupCommit]) -> None:
        self.writers = writers
        for index, writer in enumerate(writers):
            writer.on_commit = functools.partial(self._committed, index)
        writers[wire.STATUS].on_notifications = self._created

    def _submit(self, request: wire.Request) -> None:
        fut = self.writers[request.writer].submit(request.op)
        fut.add_done_callback(functools.partial(self._done, request.seq))

    def _done(self, seq: int, fut: asyncio.Future[Any]) -> None:
        exc = fut.exception()
        self._results.append((seq, wire.Failed(str(exc)) if exc is not None else fut.result()))
        self._schedule()

    def _created(self, notifications: list[Notification]) -> None:
        self._notifications.extend(notifications)
        self._schedule()

    def _committed(self, writer: int, seconds: float, operations: int) -> None:
        self._commits.append((writer, seconds, operations))
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not (self._results or self._notifications or self._commits):
            return
        replies = wire.Replies(self._results, self._notifications, self._commits)
        self._results, self._notifications, self._commits = [], [], []
        if not self.transport.is_closing():
            self.send(replies)


async def serve(fd: int) -> int:
    loop = asyncio.get_running_loop()
    service = WriterService(loop)
    await loop.create_unix_connection(lambda: service, sock=socket.socket(fileno=fd))
    hello = await service.hello
    if hello is None:
        return 1
    configure_logging(hello.log_level, hello.log_format)
    structlog.contextvars.bind_contextvars(process="writer")
    try:
        pool = await asyncpg.create_pool(
            hello.dsn, min_size=1, max_size=hello.ingest_connections + 1, command_timeout=60
        )
    except Exception as exc:
        service.send(wire.Failed(f"cannot connect to PostgreSQL: {exc}"))
        service.transport.close()
        return 1
    ingest = GroupCommit(
        pool, max_batch=hello.max_batch, name="ingest", connections=hello.ingest_connections
    )
    status = GroupCommit(
        pool,
        max_batch=hello.max_batch,
        plan_notifications=plan_notifications(hello.retry_hours),
        min_interval=hello.status_flush_interval,
    )
    service.attach([ingest, status])
    ingest.start()
    status.start()
    service.send(wire.Ready(os.getpid()))
    log.info("writer process ready", pid=os.getpid())
    # As in the router (smsrouter/daemon.py): what start-up built out of
    # the collector's sight, and few young-generation collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    await service.closed
    await ingest.stop()
    await status.stop()
    service.flush()
    service.transport.close()
    await pool.close()
    return 0


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return uvloop.run(serve(int(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
