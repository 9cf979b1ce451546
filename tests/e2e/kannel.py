"""Kannel (bearerbox + smsbox) as a partner ESME of the router, for e2e tests.

Kannel is a stack we did not write: its bearerbox binds to our SMPP server
as an ESME, and its smsbox takes messages over the `sendsms` HTTP interface
and calls a `dlr-url` back when bearerbox matched a delivery receipt. Both
run as plain subprocesses (no daemonizing) on config and log files in a
directory of the test's own, listen on 127.0.0.1 only, and are stopped by
their PIDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import yarl
from aiohttp import web

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on the loopback right now (Kannel wants fixed ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _quoted(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _group(name: str, settings: Mapping[str, str | int | bool]) -> str:
    lines = [f"group = {name}"]
    lines += [f"{key} = {_quoted(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


@dataclass
class SmscGroup:
    """The `smsc = smpp` group: how bearerbox binds to the router."""

    port: int
    system_id: str
    password: str
    smsc_id: str = "router"
    host: str = LOOPBACK
    # Every other key of the group (TON/NPI, timers, window ...), as
    # Kannel spells it.
    options: dict[str, str | int | bool] = field(default_factory=dict)


@dataclass
class SendsmsUser:
    username: str = "tester"
    password: str = "tester-pass"
    options: dict[str, str | int | bool] = field(default_factory=dict)


class Kannel:
    """bearerbox + smsbox on configs written to `workdir`."""

    def __init__(
        self,
        workdir: Path,
        smsc: SmscGroup,
        user: SendsmsUser | None = None,
        *,
        bin_dir: Path = Path("/usr/sbin"),
    ) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.smsc = smsc
        self.user = user or SendsmsUser()
        self.admin_password = "admin-pass"
        self.admin_port = free_port()
        self.box_port = free_port()
        self.sendsms_port = free_port()
        self.config_path = workdir / "kannel.conf"
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    # ------------------------------------------------------------ config

    def config_text(self) -> str:
        logs = self.workdir
        core: dict[str, str | int | bool] = {
            "admin-port": self.admin_port,
            "admin-interface": LOOPBACK,
            "admin-password": self.admin_password,
            "status-password": self.admin_password,
            "admin-allow-ip": LOOPBACK,
            "smsbox-port": self.box_port,
            "smsbox-interface": LOOPBACK,
            "box-allow-ip": LOOPBACK,
            "dlr-storage": "internal",
            "log-file": str(logs / "bearerbox.log"),
            "log-level": 0,
            "access-log": str(logs / "access.log"),
        }
        smsc: dict[str, str | int | bool] = {
            "smsc": "smpp",
            "smsc-id": self.smsc.smsc_id,
            "host": self.smsc.host,
            "port": self.smsc.port,
            "smsc-username": self.smsc.system_id,
            "smsc-password": self.smsc.password,
            "log-file": str(logs / "smsc.log"),
            "log-level": 0,
            **self.smsc.options,
        }
        smsbox: dict[str, str | int | bool] = {
            "bearerbox-host": LOOPBACK,
            "bearerbox-port": self.box_port,
            "sendsms-port": self.sendsms_port,
            "sendsms-interface": LOOPBACK,
            "log-file": str(logs / "smsbox.log"),
            "log-level": 0,
            "access-log": str(logs / "smsbox-access.log"),
        }
        user: dict[str, str | int | bool] = {
            "username": self.user.username,
            "password": self.user.password,
            "default-smsc": self.smsc.smsc_id,
            **self.user.options,
        }
        return "\n".join(
            [
                _group("core", core),
                _group("smsc", smsc),
                _group("smsbox", smsbox),
                _group("sendsms-user", user),
            ]
        )

    # ------------------------------------------------------------ processes

    async def start(self, timeout: float = 20.0) -> None:
        """bearerbox, then smsbox; returns once both listen. Stops both on failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        try:
            await self._spawn("bearerbox")
            await self._wait_port("bearerbox", self.box_port, timeout)
            await self._wait_port("bearerbox", self.admin_port, timeout)
            await self._spawn("smsbox")
            await self._wait_port("smsbox", self.sendsms_port, timeout)
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, name: str) -> None:
        # Kannel also logs to stderr; keep that in a file next to its logs.
        with (self.workdir / f"{name}.out").open("ab") as out:
            self._procs[name] = await asyncio.create_subprocess_exec(
                str(self.bin_dir / name), "-v", "1", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.workdir,
            )  # fmt: skip

    async def _wait_port(self, name: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise AssertionError(f"{name} did not listen on {port} in {timeout} s:\n{self.logs()}")

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM smsbox then bearerbox by PID; SIGKILL what does not exit in time."""
        for name in ("smsbox", "bearerbox"):
            proc = self._procs.get(name)
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await proc.wait()
            finally:
                # Also when the wait was cancelled: never leave a box behind.
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()

    async def wait_started(self, timeout: float = 20.0) -> None:
        """Wait for bearerbox's "Start-up done": only from then on does it
        survive an SMSC connection that dies (1.4.5 panics in
        bb_smscconn_killed, gwlist_remove_producer, when a bind is refused
        before it)."""
        deadline = time.monotonic() + timeout
        while "MAIN: Start-up done" not in self.log("bearerbox.log"):
            if time.monotonic() > deadline:
                raise AssertionError(f"bearerbox did not finish its start-up:\n{self.logs()}")
            await asyncio.sleep(0.05)

    def returncodes(self) -> dict[str, int | None]:
        return {name: proc.returncode for name, proc in self._procs.items()}

    # ------------------------------------------------------------ HTTP

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    async def status(self) -> str:
        """bearerbox's /status.txt."""
        url = f"{self.admin_url}/status.txt?password={quote(self.admin_password)}"
        async with (
            aiohttp.ClientSession() as http,
            http.get(yarl.URL(url, encoded=True), timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return await resp.text()

    def smsc_status_line(self, status: str) -> str:
        """The line of /status.txt about our smsc-id, '' if absent."""
        # "<admin-id>[<smsc-id>]    SMPP:host:port/port:user:type (online 20s, ...)"
        for line in (raw.strip() for raw in status.splitlines()):
            if line.split(" ", 1)[0].endswith(f"[{self.smsc.smsc_id}]"):
                return line
        return ""

    async def wait_online(self, timeout: float = 20.0) -> str:
        """Wait until bearerbox reports the SMPP connection online; its status line."""
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                status = await self.status()
                line = self.smsc_status_line(status)
                if "(online" in line:
                    return line
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"smsc {self.smsc.smsc_id!r} not online; status.txt:\n{status}\n{self.logs()}"
        )

    async def sendsms(self, params: Mapping[str, str | int]) -> tuple[int, str]:
        """One GET /cgi-bin/sendsms with our user's credentials; (status, body).

        The query is percent-encoded here ('%20', never '+'), so that text
        and dlr-url reach smsbox byte for byte.
        """
        query = {"username": self.user.username, "password": self.user.password, **params}
        encoded = "&".join(
            f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in query.items()
        )
        url = yarl.URL(
            f"http://{LOOPBACK}:{self.sendsms_port}/cgi-bin/sendsms?{encoded}", encoded=True
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp,
        ):
            return resp.status, await resp.text()

    # ------------------------------------------------------------ logs

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 60) -> str:
        parts = []
        for name in ("bearerbox.out", "smsc.log", "bearerbox.log", "smsbox.out", "smsbox.log"):
            lines = self.log(name).splitlines()[-tail:]
            parts.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(parts)


@dataclass(slots=True)
class DlrCall:
    """One call of a dlr-url: its query, decoded."""

    query: dict[str, str]


class DlrReceiver:
    """The HTTP endpoint smsbox calls for each delivery report (GET dlr-url)."""

    def __init__(self) -> None:
        self.calls: list[DlrCall] = []
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.append(DlrCall(dict(request.query)))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(text="OK")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/dlr", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, **fixed: str) -> str:
        """The dlr-url for sendsms: fixed values plus Kannel's escapes
        (%d report type, %F the SMSC's message id, %A the SMSC's reply,
        %a the report text, %p/%P receiver/sender, %i smsc-id)."""
        tags = "&".join(f"{k}={quote(v, safe='')}" for k, v in fixed.items())
        return (
            f"http://{LOOPBACK}:{self.port}/dlr?{tags}"
            "&type=%d&fid=%F&reply=%A&text=%a&to=%p&from=%P&smsc=%i"
        )

    async def wait_for(self, predicate: Callable[[list[DlrCall]], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: predicate(self.calls))
