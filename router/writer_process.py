"""The router's side of the writer process (router/writer_child.py).

The router is one event loop on one core; the group-commit writers and
asyncpg took a sixth to a fifth of it (bench/PROFILING.md) while the
machine's other core had room. Here they run in a child process: an
operation crosses a Unix socket as msgpack and its outcome comes back the
same way, each direction one write per loop turn, so the router's cost
per operation is an encode and a decode of a few hundred bytes.

The parts of the router see the same `Writer` as before (`submit(op)`
returns a future resolved once the operation is committed). If the
writer process dies, the operations it held fail with StoreError, as when
the database drops a connection; operations not yet handed to it wait, and
a new writer process is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from router import metrics
from router import writer_wire as wire
from router.store import Notification, Operation, StoreError

log = structlog.get_logger("writer")

# The directory that holds the `router` package, for the child's imports
# whatever its working directory.
_SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)


class RemoteWriter:
    """One writer (ingest or status) of the writer process."""

    def __init__(self, process: WriterProcess, index: int) -> None:
        self.name = wire.WRITER_NAMES[index]
        self._process = process
        self._index = index
        self.on_notifications: Callable[[list[Notification]], None] | None = None

    def submit(self, op: Operation) -> asyncio.Future[Any]:
        return self._process.submit(self._index, op)

    async def run(self, op: Operation) -> Any:
        return await self.submit(op)


class _Link(wire.FramedProtocol):
    """The socket to one writer process."""

    def __init__(self, owner: WriterProcess) -> None:
        super().__init__()
        self._owner = owner
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[wire.Ready | wire.Failed] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def received(self, doc: bytes) -> None:
        if not self.started.done():
            self.started.set_result(wire.start_decoder.decode(doc))
        else:
            self._owner._replied(wire.replies_decoder.decode(doc))

    def unreadable(self, exc: Exception) -> None:
        log.error("writer process: unreadable reply; restarting it", error=str(exc))
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_result(wire.Failed("it exited before it was ready"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner._lost(self)


class WriterProcess:
    """Starts, feeds, restarts and stops the writer process."""

    def __init__(
        self,
        hello: wire.Hello,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 60.0,
        restart_delay: float = 1.0,
    ) -> None:
        self._hello = hello
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._restart_delay = restart_delay
        self.ingest = RemoteWriter(self, wire.INGEST)
        self.status = RemoteWriter(self, wire.STATUS)
        self._writers = (self.ingest, self.status)
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outgoing: list[wire.Request] = []
        self._scheduled = False
        self._link: _Link | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._restart: asyncio.Task[None] | None = None
        self._stopping = False
        self.pid: int | None = None

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        """Start the writer process; StoreError if it cannot start."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE_ROOT, env.get("PYTHONPATH")]))
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "router.writer_child",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        link = _Link(self)
        await self._loop.create_unix_connection(lambda: link, sock=ours)
        link.send(self._hello)
        try:
            started = await asyncio.wait_for(asyncio.shield(link.started), self._start_timeout)
        except TimeoutError:
            started = wire.Failed(f"not ready after {self._start_timeout:g} s")
        if isinstance(started, wire.Failed):
            link.transport.abort()
            await self._reap(proc, timeout=5)
            raise StoreError(f"writer process could not start: {started.error}")
        self._link, self._proc, self.pid = link, proc, started.pid
        log.info("writer process started", pid=started.pid)
        if self._outgoing:
            self._schedule()

    async def stop(self) -> None:
        """Hand over what is waiting, let the writer process commit it all,
        and wait for it to exit."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        link, proc = self._link, self._proc
        if link is not None:
            self._send()
            if link.transport.can_write_eof():
                link.transport.write_eof()
            try:
                await asyncio.wait_for(asyncio.shield(link.closed), self._stop_timeout)
            except TimeoutError:
                log.error("writer process did not finish its commits in time; killing it")
                link.transport.abort()
        if proc is not None:
            await self._reap(proc, timeout=10)
        self._fail(list(self._pending), "the writer process stopped")
        self._outgoing.clear()

    @staticmethod
    async def _reap(proc: asyncio.subprocess.Process, *, timeout: float) -> None:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _lost(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._link = None
        # What it held may or may not have been committed: it fails, as
        # when the database drops a connection mid-commit. What it was
        # never given waits for the next writer process.
        unsent = {r.seq for r in self._outgoing}
        self._fail([seq for seq in self._pending if seq not in unsent], "the writer process exited")
        if self._stopping:
            return
        code = self._proc.returncode if self._proc is not None else None
        log.error("writer process exited; starting another", pid=self.pid, returncode=code)
        self._restart = self._loop.create_task(self._respawn(), name="writer-restart")

    async def _respawn(self) -> None:
        if self._proc is not None:
            await self._reap(self._proc, timeout=5)
        delay = self._restart_delay
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                return
            except (StoreError, OSError) as exc:
                log.error("writer process restart failed", error=str(exc))
                delay = min(delay * 2, 30.0)

    def _fail(self, seqs: list[int], reason: str) -> None:
        for seq in seqs:
            fut = self._pending.pop(seq)
            if not fut.done():
                fut.set_exception(StoreError(reason))

    # ------------------------------------------------------------ operations

    def submit(self, writer: int, op: Operation) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self._stopping and self._link is None:
            fut.set_exception(StoreError("the writer process stopped"))
            return fut
        self._seq += 1
        self._pending[self._seq] = fut
        self._outgoing.append(wire.Request(self._seq, writer, op))
        if not self._scheduled:
            self._schedule()
        return fut

    def _schedule(self) -> None:
        # Everything submitted during this loop turn goes in one frame.
        self._scheduled = True
        self._loop.call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        link = self._link
        if link is None or not self._outgoing:
            return
        outgoing, self._outgoing = self._outgoing, []
        link.send(outgoing)

    def _replied(self, replies: wire.Replies) -> None:
        pending = self._pending
        for seq, result in replies.results:
            fut = pending.pop(seq, None)
            if fut is None or fut.done():
                continue
            if type(result) is wire.Failed:
                fut.set_exception(StoreError(result.error))
            else:
                fut.set_result(result)
        if replies.notifications and self.status.on_notifications is not None:
            self.status.on_notifications(replies.notifications)
        for writer, seconds, operations in replies.commits:
            name = wire.WRITER_NAMES[writer]
            metrics.commit_latency(name).observe(seconds)
            metrics.commit_batch(name).observe(operations)
