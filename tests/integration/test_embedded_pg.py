"""The embedded PostgreSQL launcher against real processes: no mocks.

Each scenario starts its own server in its own data dir and stops every
process it started, by PID, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from smsrouter.embedded_pg import (
    SHARED_DIR,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    _children_of,
    _processes_in_cluster,
)
from smsrouter.pg_supervisor import PostgresSupervisor

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's may wait for PID 1)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def is_postgres(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(argv0.decode()).name == "postgres"


def kill_if_postgres(pid: int | None) -> None:
    """Last-resort cleanup of a server a failed test left behind, by its PID."""
    if pid is not None and running(pid) and is_postgres(pid):
        os.kill(pid, signal.SIGKILL)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: pytest's base temp dir is 0700, which as root would send
    # every scenario down the relocation path (tested on its own below).
    top = Path(tempfile.mkdtemp(prefix="smsrouter-pg-test-"))
    top.chmod(0o711)
    try:
        yield top / "pg"
    finally:
        shutil.rmtree(top, ignore_errors=True)


@contextlib.asynccontextmanager
async def launched(data_dir: Path, **kwargs: object) -> AsyncIterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(data_dir, start_timeout=START_TIMEOUT, **kwargs)  # type: ignore[arg-type]
    try:
        await pg.start()
        yield pg
    finally:
        pid = pg.pid
        await pg.stop()
        kill_if_postgres(pid)


async def test_first_start_creates_the_cluster_and_stop_frees_everything(data_dir: Path) -> None:
    async with launched(data_dir) as pg:
        pid, port = pg.pid, pg.port
        assert pid is not None and running(pid)
        assert pg.dsn.startswith("postgresql://smsrouter:") and f"@127.0.0.1:{port}/" in pg.dsn
        conn = await asyncpg.connect(pg.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT current_database() AS db, current_user AS usr,"
                " current_setting('fsync') AS fsync,"
                " current_setting('synchronous_commit') AS sync_commit,"
                " current_setting('listen_addresses') AS listen,"
                " current_setting('max_connections') AS max_conn,"
                " current_setting('shared_buffers') AS shared_buffers,"
                " current_setting('password_encryption') AS pw_enc"
            )
        finally:
            await conn.close()
        assert dict(row) == {
            "db": "smsrouter",
            "usr": "smsrouter",
            "fsync": "on",
            "sync_commit": "on",
            "listen": "127.0.0.1",
            "max_conn": "100",
            "shared_buffers": "128MB",
            "pw_enc": "scram-sha-256",
        }
        assert stat.S_IMODE((data_dir / "password").stat().st_mode) == 0o600
        assert (data_dir / "port").read_text().strip() == str(port)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(pg.dsn.replace("smsrouter:", "smsrouter:wrong", 1))
    assert not running(pid)
    assert port_free(port)
    assert not (pg.pgdata / "postmaster.pid").exists()
    assert pg.pid is None
    await pg.stop()  # idempotent


async def test_restart_keeps_data_and_port_and_rotates_a_big_log(data_dir: Path) -> None:
    async with launched(data_dir) as pg:
        first_port, first_pid = pg.port, pg.pid
        conn = await asyncpg.connect(pg.dsn)
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")
        await conn.close()
    # Pretend a long life: a log beyond the rotation size.
    with (data_dir / "server.log").open("ab") as log:
        log.write(b"x" * (10 * 1024 * 1024 + 1))

    async with launched(data_dir) as pg:
        assert pg.port == first_port
        assert pg.pid != first_pid
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "hello"
        finally:
            await conn.close()
    assert (data_dir / "server.log.1").stat().st_size > 10 * 1024 * 1024
    assert (data_dir / "server.log").stat().st_size < 1024 * 1024


async def test_a_second_launcher_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    async with launched(data_dir) as first:
        second = EmbeddedPostgres(data_dir, start_timeout=START_TIMEOUT)
        with pytest.raises(EmbeddedPostgresError, match="in use by another launcher"):
            await second.start()
        assert second.pid is None
        conn = await asyncpg.connect(first.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()


async def test_a_server_that_ignores_fast_shutdown_is_killed_and_recovers(data_dir: Path) -> None:
    async with launched(data_dir) as pg:
        conn = await asyncpg.connect(pg.dsn)
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('committed')")
        await conn.close()
        pid = pg.pid
        assert pid is not None
        backends = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and running(int(p.name)) and _parent_of(int(p.name)) == pid
        ]
        assert backends, "a running postmaster has auxiliary processes"
        os.kill(pid, signal.SIGSTOP)  # deaf to SIGINT until killed
        await pg.stop(timeout=0.5)
        assert not running(pid)
        assert not any(running(b) for b in backends)

    # The next start goes through crash recovery and keeps committed rows.
    async with launched(data_dir) as pg:
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "committed"
        finally:
            await conn.close()


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# The daemon in miniature: start the server, write a row, report, then wait
# to be SIGKILLed like a crashed daemon.
CRASHING_DAEMON = """
import asyncio, sys
from pathlib import Path
import asyncpg
from smsrouter.embedded_pg import EmbeddedPostgres

async def main():
    pg = EmbeddedPostgres(Path(sys.argv[1]))
    await pg.start()
    conn = await asyncpg.connect(pg.dsn)
    await conn.execute("CREATE TABLE survivor (v text); INSERT INTO survivor VALUES ('committed')")
    await conn.close()
    print("READY", pg.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_after_a_crash_the_orphaned_server_is_stopped_and_replaced(data_dir: Path) -> None:
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_DAEMON,
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    orphan: int | None = None
    try:
        async with asyncio.timeout(60):
            assert daemon.stdout is not None
            while orphan is None:
                line = await daemon.stdout.readline()
                assert line, "the child exited before its server was ready"
                if line.startswith(b"READY "):
                    orphan = int(line.split()[1])
        daemon.kill()  # SIGKILL, by the child's own PID
        await asyncio.wait_for(daemon.wait(), 10)
        assert running(orphan), "the server should outlive its crashed launcher"
        assert (data_dir / "pgdata" / "postmaster.pid").exists()

        with structlog.testing.capture_logs() as logs:
            async with launched(data_dir) as pg:
                assert not running(orphan)
                assert pg.pid is not None and pg.pid != orphan
                conn = await asyncpg.connect(pg.dsn)
                try:
                    assert await conn.fetchval("SELECT v FROM survivor") == "committed"
                finally:
                    await conn.close()
        stopped = [e for e in logs if e["event"].startswith("stopping orphaned postgres")]
        assert [e["pid"] for e in stopped] == [orphan]
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await asyncio.wait_for(daemon.wait(), 10)
        kill_if_postgres(orphan)


async def test_a_stale_pid_file_of_a_dead_server_is_removed(data_dir: Path) -> None:
    async with launched(data_dir) as pg:
        old_pid = pg.pid
        pid_file_text = (pg.pgdata / "postmaster.pid").read_text()
    # As a SIGKILL (or a power cut) leaves it: a pid file naming a dead server.
    (pg.pgdata / "postmaster.pid").write_text(pid_file_text)
    assert not running(old_pid)  # type: ignore[arg-type]

    async with launched(data_dir) as pg:
        assert pg.pid is not None
        assert (pg.pgdata / "postmaster.pid").read_text().split()[0] == str(pg.pid)


async def test_a_pid_file_naming_an_unrelated_live_process_spares_that_process(
    data_dir: Path,
) -> None:
    async with launched(data_dir) as pg:
        pid_file_text = (pg.pgdata / "postmaster.pid").read_text()
    # After a reboot the old pid may belong to anything: it must not be killed.
    bystander = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        lines = pid_file_text.splitlines()
        lines[0] = str(bystander.pid)
        (pg.pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
        async with launched(data_dir) as pg:
            assert bystander.returncode is None and running(bystander.pid)
            conn = await asyncpg.connect(pg.dsn)
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
        assert bystander.returncode is None and running(bystander.pid)
    finally:
        bystander.kill()
        await asyncio.wait_for(bystander.wait(), 10)


async def test_a_taken_port_fails_start_with_the_server_log(data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        pg = EmbeddedPostgres(data_dir, port=port, start_timeout=START_TIMEOUT)
        try:
            with pytest.raises(EmbeddedPostgresError) as failure:
                await pg.start()
        finally:
            pid = pg.pid
            await pg.stop()
            kill_if_postgres(pid)
    message = str(failure.value)
    assert f"port {port}" in message and "could not bind" in message
    assert pg.pid is None
    # The lock went with the failure: a later start on a free port works.
    async with launched(data_dir) as pg:
        assert pg.port != port


@pytest.mark.skipif(os.geteuid() != 0, reason="relocation only happens as root")
async def test_a_data_dir_under_a_private_directory_is_relocated_not_opened_up() -> None:
    private = Path(tempfile.mkdtemp(prefix="smsrouter-private-"))  # mode 0700
    data_dir = private / "var" / "pg"
    cluster: Path | None = None
    try:
        with structlog.testing.capture_logs() as logs:
            async with launched(data_dir) as pg:
                cluster = pg.pgdata
                assert pg.relocated
                assert cluster.parent == SHARED_DIR / "clusters"
                conn = await asyncpg.connect(pg.dsn)
                await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('here')")
                await conn.close()
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["cluster_dir"] for e in warnings] == [str(cluster)]
        assert warnings[0]["data_dir"] == str(data_dir)
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
        assert (data_dir / "password").exists() and (data_dir / "server.log").exists()
        assert not (data_dir / "pgdata").exists()

        async with launched(data_dir) as pg:
            assert pg.pgdata == cluster
            conn = await asyncpg.connect(pg.dsn)
            try:
                assert await conn.fetchval("SELECT v FROM kept") == "here"
            finally:
                await conn.close()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if cluster is not None:
            shutil.rmtree(cluster, ignore_errors=True)


# -- supervision: a postmaster that dies is started again (CONTRACT §11) ----------

RESTART_BOUND = 5.0  # CONTRACT §11: restarted within 5 s


async def _restarted(logs: list[dict[str, Any]], within: float) -> dict[str, Any]:
    """The supervisor's "restarted" line, once it is logged."""
    async with asyncio.timeout(within):
        while True:
            for entry in logs:
                if entry["event"] == "embedded postgresql restarted":
                    return entry
            await asyncio.sleep(0.02)


def _kill_leftovers(pg: EmbeddedPostgres) -> None:
    """Last-resort cleanup: every postgres process still working in the cluster."""
    for pid in _processes_in_cluster(pg.pgdata):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_killed_postmaster_is_restarted_and_a_pool_made_before_serves_again(
    data_dir: Path,
) -> None:
    async with launched(data_dir) as pg:
        supervisor = PostgresSupervisor(pg, poll_interval=0.5)
        pool = await asyncpg.create_pool(pg.dsn, min_size=4, max_size=4)
        busy: asyncio.Task[object] | None = None
        try:
            await pool.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('committed')")
            supervisor.start()
            # One connection busy with a long query that never looks at its
            # postmaster: its backend outlives the kill and, left alone,
            # keeps the next postmaster from starting.
            busy = asyncio.create_task(
                pool.fetchval("SELECT count(*) FROM generate_series(1, 2000000000)")
            )
            await asyncio.sleep(0.5)
            old, port = pg.pid, pg.port
            assert old is not None
            backends = _children_of(old)
            with structlog.testing.capture_logs() as logs:
                os.kill(old, signal.SIGKILL)  # as the OOM killer does
                killed_at = asyncio.get_running_loop().time()
                new = (await _restarted(logs, within=RESTART_BOUND))["pid"]
                took = asyncio.get_running_loop().time() - killed_at
                assert new is not None and new != old and new == pg.pid
                # The broken connections are dropped as they come back; the
                # pool's next ones reach the new server, all four at once.
                with pytest.raises((asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)):
                    await asyncio.wait_for(busy, 10)
                async with asyncio.timeout(10):
                    values = await asyncio.gather(
                        *(pool.fetchval("SELECT v FROM kept, pg_sleep(0.1)") for _ in range(4))
                    )
            assert values == ["committed"] * 4
            assert took < RESTART_BOUND
            assert pg.port == port  # the same: the pool's DSN stays valid
            assert not any(running(b) for b in backends)
            died = [e for e in logs if e["event"] == "embedded postgresql died"]
            assert [(e["exit_status"], e["signal"], e["log_level"]) for e in died] == [
                (-signal.SIGKILL, "SIGKILL", "error")
            ]
            restarted = [e for e in logs if e["event"] == "embedded postgresql restarted"]
            assert len(restarted) == 1 and restarted[0]["pid"] == new
            assert 0 < restarted[0]["seconds"] < RESTART_BOUND
            assert supervisor.restarts == 1
            assert [e["event"] for e in logs if e["event"].startswith("killing backends")] == [
                "killing backends left by a dead postmaster"
            ]
        finally:
            await supervisor.stop()
            if busy is not None:
                busy.cancel()
                with contextlib.suppress(BaseException):
                    await busy
            pool.terminate()
            _kill_leftovers(pg)


async def test_a_failed_restart_is_tried_again_until_it_succeeds(data_dir: Path) -> None:
    async with launched(data_dir) as pg:
        supervisor = PostgresSupervisor(pg, poll_interval=0.1)
        password = data_dir / "password"
        hidden = data_dir / "password.hidden"
        try:
            supervisor.start()
            old = pg.pid
            assert old is not None
            with structlog.testing.capture_logs() as logs:
                # Without its password file the cluster cannot be started.
                password.rename(hidden)
                os.kill(old, signal.SIGKILL)
                async with asyncio.timeout(10):
                    while True:
                        if len([e for e in logs if e["event"].endswith("restart failed")]) >= 2:
                            break
                        await asyncio.sleep(0.02)
                assert pg.pid is None
                hidden.rename(password)
                new = (await _restarted(logs, within=15))["pid"]
            conn = await asyncpg.connect(pg.dsn)
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
            failed = [e for e in logs if e["event"] == "embedded postgresql restart failed"]
            assert failed[0]["error_type"] == "EmbeddedPostgresError"
            assert "password" in failed[0]["error"]
            assert [e["retry_in"] for e in failed[:2]] == [0.5, 1.0]  # backing off
            restarted = [e for e in logs if e["event"] == "embedded postgresql restarted"]
            assert [e["pid"] for e in restarted] == [new]
            assert restarted[0]["attempts"] == len(failed) + 1
        finally:
            await supervisor.stop()
            if hidden.exists():
                hidden.rename(password)
            _kill_leftovers(pg)


async def test_a_server_back_on_another_port_gets_the_pool_pointed_at_it(data_dir: Path) -> None:
    async with launched(data_dir) as pg:
        pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2, command_timeout=30)
        supervisor = PostgresSupervisor(
            pg, pool=pool, connect_kwargs={"command_timeout": 30}, poll_interval=1.0
        )
        squatter = socket.socket()
        try:
            supervisor.start()
            old, old_port = pg.pid, pg.port
            assert old is not None
            with structlog.testing.capture_logs() as logs:
                os.kill(old, signal.SIGKILL)
                # Someone takes the port while the server is down.
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                async with asyncio.timeout(5):
                    while True:
                        try:
                            squatter.bind(("127.0.0.1", old_port))
                            break
                        except OSError:
                            await asyncio.sleep(0.01)
                squatter.listen()
                await _restarted(logs, within=RESTART_BOUND + 1)
            assert pg.port != old_port
            assert [e["port"] for e in logs if e["event"].endswith("moved to another port")] == [
                pg.port
            ]
            async with asyncio.timeout(10):
                assert await pool.fetchval("SELECT current_setting('port')") == str(pg.port)
            async with pool.acquire() as conn:
                # The pool's own connection arguments were kept.
                assert conn._config.command_timeout == 30
        finally:
            squatter.close()
            await supervisor.stop()
            pool.terminate()
            _kill_leftovers(pg)


async def test_stopping_the_supervisor_during_a_restart_leaves_no_server_running(
    data_dir: Path,
) -> None:
    async with launched(data_dir) as pg:
        supervisor = PostgresSupervisor(pg, poll_interval=0.05)
        try:
            supervisor.start()
            old = pg.pid
            assert old is not None
            with structlog.testing.capture_logs() as logs:
                os.kill(old, signal.SIGKILL)
                async with asyncio.timeout(RESTART_BOUND):
                    while True:
                        if pg.pid not in (None, old):
                            break
                        await asyncio.sleep(0.002)
                spawned = pg.pid
                assert spawned is not None
                # The daemon stops while the new server is still starting up.
                await supervisor.stop()
            assert not [e for e in logs if e["event"] == "embedded postgresql restarted"]
            assert pg.pid is None
            assert not running(spawned)
            assert _processes_in_cluster(pg.pgdata) == []
        finally:
            await supervisor.stop()
            _kill_leftovers(pg)
