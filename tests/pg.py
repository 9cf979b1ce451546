"""PostgreSQL for the test suite: one server per session, one fresh database per test.

The server is the one named by ``SMSROUTER_TEST_DATABASE_URL`` (its role
needs CREATEDB), else an embedded one in a temporary directory. The schema
is migrated once into a template database; each test gets a copy of it
(``CREATE DATABASE ... TEMPLATE``, a few tens of milliseconds), dropped
afterwards, so tests neither share rows nor pay for migrations.

Names carry a random token per session, so that sessions sharing one
external server (parallel CI jobs) never touch each other's databases.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from smsrouter.embedded_pg import EmbeddedPostgres

ENV_URL = "SMSROUTER_TEST_DATABASE_URL"
# Bound on each administrative step (migrating the template included).
STEP_TIMEOUT = 120.0

T = TypeVar("T")


class Portal:
    """An event loop of its own in a background thread, callable from sync code.

    The session's objects (the server, the admin connection) must live in one
    loop for the whole session, while pytest-asyncio gives each test its own
    loop. A session-scoped async fixture would need loop_scope="session" and
    would drag every test that uses it onto the session loop; a private loop
    keeps the fixtures independent of the loop a test runs in, and usable
    from sync tests and from inside async tests alike.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pg-fixtures", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            # Timed out or interrupted here: cancel the work in the loop too
            # rather than let it run on unowned.
            future.cancel()
            raise

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


class PgServer:
    """The session's server: DSNs, and fresh migrated databases on demand."""

    def __init__(self, admin_dsn: str, *, embedded: EmbeddedPostgres | None, portal: Portal):
        self.admin_dsn = admin_dsn
        self.embedded = embedded
        self._portal = portal
        self._token = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._admin: asyncpg.Connection | None = None
        self._template: str | None = None
        self._tmp_dir: Path | None = None

    @classmethod
    def start(cls) -> PgServer:
        portal = Portal()
        try:
            url = os.environ.get(ENV_URL)
            if url:
                return cls(url, embedded=None, portal=portal)
            tmp_dir = Path(tempfile.mkdtemp(prefix="smsrouter-test-pg-"))
            # mkdtemp makes 0700 directories; as root the server runs as an
            # unprivileged user that must enter this one (our own directory,
            # nobody else's), or the launcher would relocate the cluster.
            tmp_dir.chmod(0o711)
            embedded = EmbeddedPostgres(tmp_dir, database="postgres")
            try:
                # The launcher's own bounds (initdb, readiness) fire first and
                # clean up after themselves; this one is only a backstop.
                portal.run(embedded.start(), timeout=2 * STEP_TIMEOUT + 60)
            except BaseException:
                with contextlib.suppress(Exception):
                    portal.run(embedded.stop())
                _remove_files(tmp_dir, embedded)
                raise
            server = cls(embedded.dsn_for("postgres"), embedded=embedded, portal=portal)
            server._tmp_dir = tmp_dir
            atexit.register(server._stop_at_exit)
            return server
        except BaseException:
            portal.close()
            raise

    def dsn_for(self, dbname: str) -> str:
        """The admin DSN with its database replaced (query options kept)."""
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))

    def create_database(self) -> str:
        """A new database with the migrated schema; returns its name."""
        template = self._ensure_template()
        name = f"test_{self._token}_{next(self._counter)}"
        self._portal.run(
            self._admin_execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}")
        )
        return name

    def drop_database(self, name: str) -> None:
        # FORCE ends connections a test left open (a daemon under test, a pool
        # not closed), which would otherwise make the drop fail.
        self._portal.run(
            self._admin_execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        )

    def close(self) -> None:
        """Drop the template, stop the embedded server, remove its files."""
        atexit.unregister(self._stop_at_exit)
        try:
            self._portal.run(self._close_async())
        finally:
            self._portal.close()
            _remove_files(self._tmp_dir, self.embedded)

    def _stop_at_exit(self) -> None:
        """Last resort if the session ends without the fixture's teardown.

        The server runs in a session of its own, so neither a Ctrl-C nor
        the end of pytest reaches it: without this, a pytest that dies of an
        internal error would leave a postmaster behind for good.
        """
        embedded = self.embedded
        if embedded is not None and (pid := embedded.pid) is not None:
            os.kill(pid, signal.SIGINT)  # fast shutdown, by the PID we started
            deadline = time.monotonic() + 10
            while embedded.pid is not None and time.monotonic() < deadline:
                time.sleep(0.02)
        _remove_files(self._tmp_dir, self.embedded)

    # -- in the portal's loop --------------------------------------------------

    def _ensure_template(self) -> str:
        if self._template is None:
            name = f"smsrouter_template_{self._token}"
            self._portal.run(self._make_template(name))
            self._template = name
        return self._template

    async def _make_template(self, name: str) -> None:
        # Imported here, not at the top: tests without a database keep
        # running while the schema module is broken.
        from smsrouter.router.migrations import apply_migrations

        await self._admin_execute(f"CREATE DATABASE {_ident(name)}")
        try:
            conn = await asyncpg.connect(self.dsn_for(name))
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
            # A connection left open on the template would make every CREATE
            # DATABASE ... TEMPLATE fail; refusing connections rules that out.
            await self._admin_execute(
                f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
        except BaseException:
            # Half made: drop it, so the next test retries and reports the
            # migration's own error rather than "already exists".
            await self._admin_execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            raise

    async def _admin_execute(self, sql: str) -> None:
        if self._admin is None or self._admin.is_closed():
            self._admin = await asyncpg.connect(self.admin_dsn)
        await self._admin.execute(sql)

    async def _close_async(self) -> None:
        try:
            if self._template is not None:
                template = _ident(self._template)
                await self._admin_execute(f"ALTER DATABASE {template} WITH IS_TEMPLATE false")
                await self._admin_execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
        finally:
            if self._admin is not None:
                await self._admin.close(timeout=10)
            if self.embedded is not None:
                await self.embedded.stop()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _remove_files(tmp_dir: Path | None, embedded: EmbeddedPostgres | None) -> None:
    """An embedded server's data dir, and its cluster if it was relocated."""
    if tmp_dir is not None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if embedded is not None and embedded.relocated:
        shutil.rmtree(embedded.pgdata, ignore_errors=True)
