"""A PostgreSQL server of one test's own, for tests that kill or freeze it.

The session's server (tests/pg.py) is shared by every test, so a fault test
must not touch it: this one is started for the test in its temporary
directory, migrated, handed out with the PIDs of its processes, and stopped
(by PID) when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import asyncpg

from smsrouter.embedded_pg import EmbeddedPostgres, _alive, _children_of, _proc_stat_fields
from smsrouter.router.migrations import apply_migrations


class OwnPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = EmbeddedPostgres(data_dir, database="smsrouter")
        self.dsn = ""

    @classmethod
    def in_temporary_dir(cls) -> OwnPostgres:
        """Under the system's temporary directory, not pytest's: pytest takes
        the search bit off its own tree, and as root the server runs as an
        unprivileged user that must enter the data dir (tests/pg.py too)."""
        data_dir = Path(tempfile.mkdtemp(prefix="smsrouter-own-pg-"))
        data_dir.chmod(0o711)
        return cls(data_dir)

    def remove_files(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.server.relocated:
            shutil.rmtree(self.server.pgdata, ignore_errors=True)

    async def start(self) -> str:
        self.dsn = await self.server.start()
        conn = await asyncpg.connect(self.dsn)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        return self.dsn

    @property
    def postmaster(self) -> int:
        pid = self.server.pid
        assert pid is not None, "the server is not running"
        return pid

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends call
        setsid(), so their process group is no handle on them)."""
        postmaster = self.server.pid
        return [] if postmaster is None else [postmaster, *_children_of(postmaster)]

    def freeze(self) -> list[int]:
        """SIGSTOP every process of the server; returns the PIDs stopped.

        The postmaster first, and once it has stopped: a backend it forks for
        a connection opened meanwhile would otherwise be missed by the scan
        and go on answering queries on a "hung" server.
        """
        postmaster = self.postmaster
        os.kill(postmaster, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _state_of(postmaster) not in ("T", None) and time.monotonic() < deadline:
            time.sleep(0.001)
        stopped = [postmaster]
        while True:
            # A child forked just before the stop shows up in /proc only once
            # fork() returned; scan until a scan finds nothing new.
            new = [pid for pid in _children_of(postmaster) if pid not in stopped]
            if not new:
                return stopped
            for pid in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            stopped.extend(new)

    @staticmethod
    def thaw(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def kill_postmaster(self) -> None:
        """SIGKILL of the postmaster alone, as an OOM killer would do; its
        backends notice and exit by themselves. Returns once they have: a
        backend that has not yet noticed would still run (and commit) what
        a client sends it on its open connection."""
        backends = self.pids()[1:]
        os.kill(self.postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.server.pid is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        while any(_alive(pid) for pid in backends) and time.monotonic() < deadline:
            time.sleep(0.02)

    async def restart(self) -> str:
        """Start it again on the same data dir (after kill_postmaster)."""
        await self.server.stop()
        return await self.start()

    async def stop(self) -> None:
        self.thaw(self.pids())  # a frozen server cannot shut down
        await self.server.stop()


def _state_of(pid: int) -> str | None:
    """The process's state letter (T once stopped); None once it is gone."""
    fields = _proc_stat_fields(pid)
    return None if fields is None else fields[0]
