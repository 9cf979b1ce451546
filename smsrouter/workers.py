"""`smsrouter run --workers N`: N router processes on one host (CONTRACT §1, §9).

The parent is a small supervisor. It starts what the workers share, once:
the embedded PostgreSQL when `[database] url` is empty (watched and restarted
as the daemon watches its own, smsrouter/pg_supervisor.py) and the config's
`[[simulators]]`. Then it starts N workers, each `smsrouter run` on the same
config in a fresh interpreter (no fork of a running event loop): a whole
router, with `[instance] id` `<id or host name>-w<i>`, the embedded
server's URL in `SMSROUTER_DATABASE_URL`, and `SMSROUTER_REUSE_PORT=1`, so
that its listeners bind with SO_REUSEPORT and the kernel spreads
connections over the workers (connectors/acceptor.py). The parent itself
holds each of those ports bound, never listening: a port configured as 0 is
chosen once for all the workers, and no other program takes a port while a
worker restarts.

A worker learns its place from `WORKER_ENV`: its index, the parent's PID
(it drains and exits when the parent is gone: a killed parent leaves no
router behind) and a pipe on which it writes one JSON line once it is ready
and handles SIGHUP. The parent:

- restarts a worker that dies, logging its exit status, after a delay that
  doubles while it keeps dying young (`RestartBackoff`);
- forwards SIGHUP to every ready worker (to a starting one once it is ready:
  until then SIGHUP would end it);
- on SIGTERM or SIGINT sends SIGTERM to every worker, gives them
  `[shutdown] drain_seconds` plus `STOP_MARGIN_SECONDS`, kills what is left,
  stops the simulators and the PostgreSQL, and exits 0;
- logs "smsrouter ready" (with `workers=N`) once every worker is ready.

Workers run in sessions of their own: a Ctrl-C on the terminal reaches the
parent alone, which stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from smsrouter.connectors.acceptor import REUSE_PORT_ENV
from smsrouter.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError
from smsrouter.pg_supervisor import PostgresSupervisor
from smsrouter.router.config import Config, parse_listen

log = structlog.get_logger("workers")

# "<index>:<parent pid>:<ready fd>", set by the parent for each worker.
WORKER_ENV = "SMSROUTER_WORKER"
DATABASE_URL_ENV = "SMSROUTER_DATABASE_URL"
INSTANCE_ID_ENV = "SMSROUTER_INSTANCE_ID"
# Beyond [shutdown] drain_seconds, what a worker's stop takes after its drain:
# the dispatcher (up to 5 s), closing its pool (up to 5 s,
# daemon.POOL_CLOSE_SECONDS), and its interpreter's exit.
STOP_MARGIN_SECONDS = 15.0
# How often a worker checks that its parent still runs.
PARENT_POLL_SECONDS = 1.0
# How often the parent checks whether its embedded PostgreSQL came back on
# another port (pg_supervisor.py: when its old one was taken meanwhile).
DSN_POLL_SECONDS = 1.0


# ---------------------------------------------------------------- the worker side


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What the parent tells a worker through `WORKER_ENV`."""

    index: int
    parent_pid: int
    ready_fd: int

    def encode(self) -> str:
        return f"{self.index}:{self.parent_pid}:{self.ready_fd}"

    @classmethod
    def decode(cls, text: str) -> WorkerRole:
        """ValueError unless `text` is three integers joined by ':'."""
        index, parent_pid, ready_fd = (int(part) for part in text.split(":"))
        return cls(index, parent_pid, ready_fd)


def worker_role(environ: Mapping[str, str]) -> WorkerRole | None:
    """This process's role when a `--workers` parent started it, else None."""
    text = environ.get(WORKER_ENV)
    return WorkerRole.decode(text) if text else None


def report_ready(role: WorkerRole, info: Mapping[str, Any]) -> None:
    """One JSON line on the ready pipe, which is then closed: the parent
    counts this worker ready and forwards SIGHUP to it from now on."""
    line = (json.dumps(dict(info), separators=(",", ":")) + "\n").encode()
    try:
        os.write(role.ready_fd, line)  # far below PIPE_BUF: one write
    except OSError as exc:
        log.warning("ready not reported to the parent", error=str(exc))
    finally:
        with contextlib.suppress(OSError):
            os.close(role.ready_fd)


async def watch_parent(
    role: WorkerRole, gone: Callable[[], None], interval: float = PARENT_POLL_SECONDS
) -> None:
    """Call `gone` once the parent has ended (this process was handed to
    another): a parent killed without a word must not leave workers serving
    on its ports and its database."""
    while True:
        if os.getppid() != role.parent_pid:
            log.warning("parent gone; draining", parent_pid=role.parent_pid)
            gone()
            return
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- decisions


def worker_instance_id(configured: str, host: str, index: int) -> str:
    """`[instance] id` of worker `index`: the configured id (else the host
    name) and its index, the same across its restarts (CONTRACT §9: an
    instance restarted with its id resumes as that instance)."""
    return f"{configured or host}-w{index}"


@dataclass
class RestartBackoff:
    """When a worker that died is started again: a crash loop must not spin.

    A worker that lived `stable_seconds` or more is started again after
    `first_delay`; each death sooner than that after its start doubles the
    delay, up to `max_delay`.
    """

    clock: Callable[[], float]
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_seconds: float = 30.0
    quick_deaths: int = 0
    started_at: float = 0.0

    def started(self) -> None:
        self.started_at = self.clock()

    def died(self) -> float:
        """Seconds to wait before the next start."""
        if self.clock() - self.started_at >= self.stable_seconds:
            self.quick_deaths = 0
        delay = min(self.max_delay, self.first_delay * 2**self.quick_deaths)
        self.quick_deaths += 1
        return delay


# What the parent does once a worker has ended (`after_exit`).
STOPPED = "stopped"  # the parent is stopping: nothing more
START_FAILED = "start_failed"  # before the router was ever ready: stop all, exit 1
RESTART = "restart"  # start it again, after a delay


def after_exit(
    *, stopping: bool, retiring: bool, announced: bool, backoff: RestartBackoff
) -> tuple[str, float]:
    """(what to do, seconds to wait first) once a worker has ended.

    A worker the parent stopped to give it a new database URL starts again
    at once; one that ends before every worker was first ready fails the
    start, as a lone daemon whose start fails exits 1; any other starts
    again after `backoff`'s delay.
    """
    if stopping:
        return STOPPED, 0.0
    if retiring:
        return RESTART, 0.0
    if not announced:
        return START_FAILED, 0.0
    return RESTART, backoff.died()


def exit_status(returncode: int) -> dict[str, Any]:
    """A process's end for the log: its exit status, and the signal that
    ended it when one did (asyncio's negative return code)."""
    if returncode >= 0:
        return {"exit_status": returncode}
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return {"exit_status": returncode, "signal": name}


def stop_deadline(drain_seconds: float) -> float:
    """Seconds the workers get to stop after SIGTERM before SIGKILL."""
    return drain_seconds + STOP_MARGIN_SECONDS


def shared_listeners(config: Config) -> list[tuple[str, str]]:
    """(environment variable, configured host:port) of every listener a
    worker opens: HTTP, SMPP, SMPP over TLS when given a certificate, and
    the operator API when it has a token."""
    listeners = [
        ("SMSROUTER_HTTP_LISTEN", config.http.listen),
        ("SMSROUTER_SMPP_LISTEN", config.smpp.listen),
    ]
    if config.smpp.tls_cert:
        listeners.append(("SMSROUTER_SMPP_TLS_LISTEN", config.smpp.tls_listen))
    if config.admin.tokens:
        listeners.append(("SMSROUTER_ADMIN_LISTEN", config.admin.listen))
    return listeners


def format_listen(host: str, port: int) -> str:
    """The inverse of `parse_listen`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve_port(listen: str) -> tuple[str, socket.socket]:
    """Bind host:port with SO_REUSEPORT, without listening; return the
    host:port to give the workers (the system's choice when the port is 0)
    and the socket, which holds the port until closed. The kernel hands
    connections only to listening sockets: the workers'."""
    host, port = parse_listen(listen)
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return format_listen(host, int(sock.getsockname()[1])), sock


# ---------------------------------------------------------------- the parent


async def read_ready_line(fd: int) -> dict[str, Any] | None:
    """A worker's ready line from its pipe; None when the pipe closes
    without one (the worker ended first)."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)
    reader = asyncio.StreamReader()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        line = await reader.readline()
    finally:
        transport.close()
    try:
        info = json.loads(line) if line else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


@dataclass
class _Worker:
    """One of the N places; its process changes with each restart."""

    index: int
    instance_id: str
    backoff: RestartBackoff
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    # A SIGHUP that came while this process was not ready to take it.
    hup_pending: bool = False
    # Stopped by the parent to start again with the database's new address.
    retiring: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    """The parent of `smsrouter run --workers N`."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        workers: int,
        *,
        log_format: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._argv = [sys.executable, "-m", "smsrouter", "run", "--config", str(config_path)]
        if log_format:
            self._argv += ["--log-format", log_format]
        host = socket.gethostname()
        self._workers = [
            _Worker(i, worker_instance_id(config.instance.id, host, i), RestartBackoff(clock))
            for i in range(workers)
        ]
        # What every worker's environment adds to the parent's.
        self._env: dict[str, str] = {REUSE_PORT_ENV: "1"}
        self._stopping = asyncio.Event()
        self._announced = False
        self._failed = False

    async def run(self) -> int:
        """Until SIGTERM or SIGINT: 0 after a clean stop, 1 if the start failed."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_requested)
        loop.add_signal_handler(signal.SIGHUP, self._forward_hup)
        async with contextlib.AsyncExitStack() as stack:
            try:
                await self._start_shared(stack)
            except Exception:
                log.exception("start failed")
                return 1  # the stack stops what did start
            if not self._stopping.is_set():
                await self._run_workers()
        log.info("stopped")
        return 1 if self._failed else 0

    def _stop_requested(self) -> None:
        if not self._stopping.is_set():
            log.info("stopping", workers=len(self._workers))
            self._stopping.set()

    # ------------------------------------------------------------ shared parts

    async def _start_shared(self, stack: contextlib.AsyncExitStack) -> None:
        """The ports, the embedded PostgreSQL, the simulators; each one's
        stop registered as it starts."""
        for env, listen in shared_listeners(self.config):
            chosen, sock = reserve_port(listen)
            stack.callback(sock.close)
            self._env[env] = chosen
        if not self.config.database.url:
            await self._start_database(stack)
        if self.config.simulators:
            # Imported when a config has simulators, as the daemon runs them.
            from smsrouter.sims.carrier import CarrierSimulator

            for sim in self.config.simulators:
                simulator = CarrierSimulator.from_config(sim)
                await simulator.start("127.0.0.1", sim.port)
                stack.push_async_callback(simulator.stop)
                log.info("carrier simulator listening", name=sim.name, port=simulator.port)

    async def _start_database(self, stack: contextlib.AsyncExitStack) -> None:
        data_dir = self.config.database.data_dir
        embedded = EmbeddedPostgres(Path(data_dir))
        # Registered first: a start that fails half-way still stops it.
        stack.push_async_callback(embedded.stop)
        self._env[DATABASE_URL_ENV] = await embedded.start()
        log.info("embedded postgresql started", data_dir=data_dir)
        supervisor = PostgresSupervisor(embedded)
        supervisor.start()
        stack.push_async_callback(supervisor.stop)
        follow = asyncio.create_task(self._follow_database(embedded), name="follow-database")
        stack.push_async_callback(_cancel_and_wait, follow)

    async def _follow_database(self, embedded: EmbeddedPostgres) -> None:
        """Should the supervised server come back on another port, the
        workers, whose URL names the old one, start again with the new."""
        while True:
            await asyncio.sleep(DSN_POLL_SECONDS)
            if embedded.pid is None:
                continue
            with contextlib.suppress(EmbeddedPostgresError):
                dsn = embedded.dsn
                if dsn != self._env[DATABASE_URL_ENV]:
                    self._env[DATABASE_URL_ENV] = dsn
                    log.warning(
                        "embedded postgresql moved to another port; restarting the workers",
                        port=embedded.port,
                    )
                    for worker in self._workers:
                        if worker.running:
                            worker.retiring = True
                            self._signal(worker, signal.SIGTERM)

    # ------------------------------------------------------------ workers

    async def _run_workers(self) -> None:
        tasks = [
            asyncio.create_task(self._keep_running(worker), name=f"worker-{worker.index}")
            for worker in self._workers
        ]
        await self._stopping.wait()
        for worker in self._workers:
            if worker.running:
                self._signal(worker, signal.SIGTERM)
        deadline = stop_deadline(self.config.shutdown.drain_seconds)
        _, late = await asyncio.wait(tasks, timeout=deadline)
        if late:
            for worker in self._workers:
                if worker.running and worker.proc is not None:
                    log.error(
                        "worker did not stop in time; killed",
                        worker=worker.index,
                        pid=worker.proc.pid,
                        seconds=deadline,
                    )
                    self._signal(worker, signal.SIGKILL)
            await asyncio.wait(late)

    async def _keep_running(self, worker: _Worker) -> None:
        """Worker `index` for as long as the parent runs."""
        while not self._stopping.is_set():
            pid, returncode = await self._run_once(worker)
            status = exit_status(returncode)
            retiring, worker.retiring = worker.retiring, False
            what, delay = after_exit(
                stopping=self._stopping.is_set(),
                retiring=retiring,
                announced=self._announced,
                backoff=worker.backoff,
            )
            if what == STOPPED:
                log.info("worker stopped", worker=worker.index, pid=pid, **status)
                return
            if what == START_FAILED:
                log.error("worker ended during start-up", worker=worker.index, pid=pid, **status)
                self._failed = True
                self._stop_requested()
                return
            if retiring:
                log.info("worker stopped for the database's new address", worker=worker.index)
            else:
                log.error(
                    "worker exited; restarting",
                    worker=worker.index,
                    pid=pid,
                    restart_in=delay,
                    **status,
                )
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _run_once(self, worker: _Worker) -> tuple[int | None, int]:
        """Start the worker's process and wait for its end: (pid, return code)."""
        read_fd, write_fd = os.pipe()
        role = WorkerRole(worker.index, os.getpid(), write_fd)
        env = {
            **os.environ,
            **self._env,
            WORKER_ENV: role.encode(),
            INSTANCE_ID_ENV: worker.instance_id,
        }
        # A new process reads the config as it is now: no reload owed.
        worker.hup_pending = False
        worker.backoff.started()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_fd)
            log.error("worker could not be started", worker=worker.index, error=str(exc))
            return None, 127
        finally:
            os.close(write_fd)  # the worker's copy is the only one left
        worker.proc = proc
        log.info("worker started", worker=worker.index, pid=proc.pid, instance=worker.instance_id)
        if self._stopping.is_set():
            self._signal(worker, signal.SIGTERM)  # the stop came during the spawn
        ready = asyncio.create_task(read_ready_line(read_fd))
        ended = asyncio.create_task(proc.wait())
        await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
        if not ended.done() and ready.exception() is None:
            info = ready.result()
            if info is not None:
                self._worker_ready(worker, info)
        returncode = await ended
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        worker.proc = None
        worker.ready = False
        return proc.pid, returncode

    def _worker_ready(self, worker: _Worker, info: dict[str, Any]) -> None:
        worker.ready = True
        worker.info = info
        if worker.hup_pending:
            worker.hup_pending = False
            self._signal(worker, signal.SIGHUP)
        if not self._announced and all(w.ready for w in self._workers):
            self._announced = True
            where = {k: v for k, v in self._workers[0].info.items() if k not in ("instance", "pid")}
            log.info(
                "smsrouter ready",
                **where,
                workers=len(self._workers),
                instances=[w.instance_id for w in self._workers],
                pids=[w.proc.pid for w in self._workers if w.proc is not None],
            )

    def _forward_hup(self) -> None:
        """SIGHUP to every worker ready to reload; to the others once they are."""
        log.info("reload requested; forwarding SIGHUP to the workers")
        for worker in self._workers:
            if worker.ready and worker.running:
                self._signal(worker, signal.SIGHUP)
            else:
                worker.hup_pending = True

    @staticmethod
    def _signal(worker: _Worker, sig: signal.Signals) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)


async def _cancel_and_wait(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
