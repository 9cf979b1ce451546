"""Jasmin 0.11.1 as a system under test, with its own RabbitMQ and Redis.

Processes, all started here on private ports and directories and stopped
by PID:

* ``epmd`` (Erlang's port mapper, in the foreground on a private port, so
  that RabbitMQ does not daemonize one of its own) and ``rabbitmq-server``
  (a private node name, data dir and AMQP port; Erlang schedulers without
  busy-waiting, as RabbitMQ advises on shared machines: ``+sbwt none``);
* ``redis-server`` (no persistence: Jasmin only keeps DLR mappings there);
* ``jasmind.py`` (HTTP API, SMPP server, jCli, router, SMPP client
  connectors), ``dlrlookupd.py`` (matches receipts to messages) and
  ``dlrd.py`` (throws DLRs to dlr-urls and SMPP binds), the split Jasmin's
  documentation recommends over one jasmind doing all; ``deliversmd.py``
  (MO) is not run: no scenario has MO.

Configuration goes through jCli (telnet, authentication off on 127.0.0.1):
a group and a user (HTTP and SMPP credentials), an SMPP client connector to
the carrier simulator with ``submit_throughput 0`` (the default is 1 msg/s)
and a default MT route to it.

Jasmin 0.11.1 has a known fault: it emits no delivery receipts unless an
upstream fix (its issue #1236) is applied. The bench runs it as released and
reports what it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path
from typing import Any

from bench.install import AMQP_SPEC, JASMIN_VENV, deb_version, jasmin_version
from bench.procs import LOOPBACK, CpuMeter, Spawned, free_port, process_tree, wait_port

USERNAME = "bench"
PASSWORD = "bench-pw"  # SMPP 3.4 §5.2.2: at most 8 characters
CONNECTOR = "sim"
LOG_LEVEL = "WARNING"

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\xff[\xfb-\xfe].|\xff[\xf0-\xfa]")
_PROMPTS = ("jcli : ", "> ")

# Every section of jasmin.cfg that logs, and its log file name.
_LOGGING_SECTIONS = {
    "smpp-server": "smpp-server.log",
    "smpp-server-pb": "smpp-server-pb.log",
    "client-management": "smppclient-manager.log",
    "service-smppclient": "service-smppclient.log",
    "sm-listener": "messages.log",
    "dlr": "dlr.log",
    "amqp-broker": "amqp-client.log",
    "http-api": "http-api.log",
    "router": "router.log",
    "deliversm-thrower": "deliversm-thrower.log",
    "dlr-thrower": "dlr-thrower.log",
    "redis-client": "redis-client.log",
    "jcli": "jcli.log",
    "interceptor-client": "interceptor.log",
}


def _erlang_vms(root: int) -> list[int]:
    """The Erlang VMs (beam.smp) under a launcher script's PID."""
    out = []
    for pid in process_tree([root]):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam"):
                out.append(pid)
    return out


class JCli:
    """A jCli session: one command at a time, its output up to the next prompt."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.transcript: list[str] = []

    @classmethod
    async def connect(cls, port: int) -> JCli:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        cli = cls(reader, writer)
        # The banner ends with the session's number; the first prompt only
        # comes with the first answer.
        await cli._until_prompt(("Session ref: ",))
        return cli

    async def _until_prompt(
        self, prompts: tuple[str, ...] = _PROMPTS, timeout: float = 30.0
    ) -> str:
        buf = b""
        async with asyncio.timeout(timeout):
            while True:
                chunk = await self.reader.read(4096)
                if not chunk:
                    raise RuntimeError(
                        "jCli closed the connection:\n" + buf.decode(errors="replace")
                    )
                buf += chunk
                text = _ANSI.sub(b"", buf).decode("utf-8", errors="replace")
                if prompts == _PROMPTS:
                    if text.rstrip("\r\n").endswith(prompts):
                        return text
                elif any(p in text for p in prompts) and text.endswith("\n"):
                    return text

    async def run(self, command: str) -> str:
        self.writer.write(command.encode() + b"\r\n")
        await self.writer.drain()
        out = await self._until_prompt()
        self.transcript.append(f"{command}\n{out}")
        lowered = out.lower()
        if any(word in lowered for word in ("error", "unknown", "invalid", "failed", "cannot")):
            raise RuntimeError(f"jCli refused {command!r}:\n{out}")
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"quit\r\n")
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class JasminSystem:
    """Jasmin's daemons plus the RabbitMQ and Redis they need."""

    name = "jasmin"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / "jasmin"
        self.cpu = CpuMeter()
        self.ports = {
            name: free_port()
            for name in (
                "http",
                "smpp",
                "jcli",
                "smpp-pb",
                "client-management",
                "router-pb",
                "amqp",
                "erlang-dist",
                "epmd",
                "redis",
            )
        }
        self.procs: list[Spawned] = []
        self.rabbit: Spawned | None = None
        self.settings: dict[str, Any] = {
            "daemons": "jasmind.py + dlrlookupd.py + dlrd.py (separate, as documented)",
            "smppccm": {
                "submit_throughput": "0 (no limit; default 1 msg/s)",
                "bind": "transceiver",
                "dlr_msgid": "0 (ids alike in submit_sm_resp and receipt)",
            },
            "mt route": f"DefaultRoute to smppc({CONNECTOR}), rate 0",
            "user": "default credentials (no quota, no throughput limit)",
            "log_level": f"{LOG_LEVEL} in every section",
            "rabbitmq": "private node, Erlang +sbwt none +sbwtdcpu none +sbwtdio none",
            "redis": "no persistence (save '' , appendonly no)",
            "dlr-level": "2 (final receipts only)",
        }

    # ------------------------------------------------------------ config

    def _config_text(self) -> str:
        logs = self.workdir / "log"
        store = self.workdir / "store"
        p = self.ports
        sections: dict[str, dict[str, str | int]] = {
            "smpp-server": {"bind": LOOPBACK, "port": p["smpp"]},
            "smpp-server-pb": {"bind": LOOPBACK, "port": p["smpp-pb"]},
            "client-management": {
                "bind": LOOPBACK,
                "port": p["client-management"],
                "store_path": str(store),
            },
            "router": {"bind": LOOPBACK, "port": p["router-pb"], "store_path": str(store)},
            "http-api": {
                "bind": LOOPBACK,
                "port": p["http"],
                "access_log": str(logs / "http-access.log"),
            },
            "jcli": {"bind": LOOPBACK, "port": p["jcli"], "authentication": "False"},
            "amqp-broker": {"host": LOOPBACK, "port": p["amqp"], "spec": str(AMQP_SPEC)},
            "redis-client": {"host": LOOPBACK, "port": p["redis"], "poolsize": 10},
            "smpp-server-pb-client": {"host": LOOPBACK, "port": p["smpp-pb"]},
            "dlr": {"pid": "dlrlookupd-bench"},
        }
        for section, log_file in _LOGGING_SECTIONS.items():
            values = sections.setdefault(section, {})
            values["log_level"] = LOG_LEVEL
            values["log_file"] = str(logs / log_file)
        lines: list[str] = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {value}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)

    def _env(self) -> dict[str, str]:
        # Jasmin reads `<SECTION>_<KEY>` from the environment before its config
        # file: keep only what a shell needs.
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
        env.update(
            {
                "HOME": str(self.workdir),
                "ROOT_PATH": str(self.workdir),
                "LOG_PATH": str(self.workdir / "log"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # ------------------------------------------------------------ processes

    async def _spawn(self, proc: Spawned, part: str) -> Spawned:
        self.procs.append(proc)
        await proc.start()
        self.cpu.add(part, proc.pid)
        return proc

    async def start(self, carrier_port: int, system_id: str, password: str) -> None:
        try:
            await self._start(carrier_port, system_id, password)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, carrier_port: int, system_id: str, password: str) -> None:
        wd = self.workdir
        for sub in ("log", "store", "rabbitmq", "redis"):
            (wd / sub).mkdir(parents=True, exist_ok=True)
        await self._start_broker_and_store()
        config = wd / "jasmin.cfg"
        config.write_text(self._config_text())
        self._clear_stale_lock()
        bin_dir = JASMIN_VENV / "bin"
        python = str(bin_dir / "python")
        env = self._env()
        jasmind = await self._spawn(
            Spawned(
                "jasmind",
                [python, str(bin_dir / "jasmind.py"), "--config", str(config)],
                wd / "log" / "jasmind.out",
                env=env,
                cwd=wd,
                stop_signal=signal.SIGINT,
            ),
            "jasmin",
        )
        for port in ("jcli", "http", "smpp"):
            await wait_port(self.ports[port], 60, jasmind)
        for daemon in ("dlrlookupd", "dlrd"):
            await self._spawn(
                Spawned(
                    daemon,
                    [
                        python,
                        str(bin_dir / f"{daemon}.py"),
                        "--config",
                        str(config),
                        "--id",
                        f"bench-{os.getpid()}",
                    ],
                    wd / "log" / f"{daemon}.out",
                    env=env,
                    cwd=wd,
                    stop_signal=signal.SIGINT,
                ),
                "jasmin",
            )
        await self._configure(carrier_port, system_id, password)

    async def _start_broker_and_store(self) -> None:
        wd = self.workdir
        p = self.ports
        epmd = await self._spawn(
            Spawned(
                "epmd",
                ["epmd", "-port", str(p["epmd"]), "-address", LOOPBACK],
                wd / "rabbitmq" / "epmd.out",
                env=self._env(),
            ),
            "rabbitmq",
        )
        await wait_port(p["epmd"], 20, epmd)
        (wd / "rabbitmq" / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOOPBACK}:{p['amqp']}\nloopback_users = none\n"
        )
        (wd / "rabbitmq" / "enabled_plugins").write_text("[].\n")
        env = self._env()
        env.update(
            {
                "HOME": str(wd / "rabbitmq"),
                "RABBITMQ_NODENAME": f"bench{os.getpid()}@localhost",
                "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
                "RABBITMQ_NODE_PORT": str(p["amqp"]),
                "RABBITMQ_DIST_PORT": str(p["erlang-dist"]),
                "ERL_EPMD_PORT": str(p["epmd"]),
                "ERL_EPMD_ADDRESS": LOOPBACK,
                "RABBITMQ_MNESIA_BASE": str(wd / "rabbitmq" / "mnesia"),
                "RABBITMQ_LOG_BASE": str(wd / "rabbitmq" / "log"),
                "RABBITMQ_CONFIG_FILE": str(wd / "rabbitmq" / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(wd / "rabbitmq" / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(wd / "rabbitmq" / "rabbitmq.pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-start_epmd false +sbwt none +sbwtdcpu none +sbwtdio none"
                ),
            }
        )
        self.rabbit = await self._spawn(
            Spawned(
                "rabbitmq",
                ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
                wd / "rabbitmq" / "rabbitmq.out",
                env=env,
                cwd=wd / "rabbitmq",
            ),
            "rabbitmq",
        )
        redis = await self._spawn(
            Spawned(
                "redis",
                [
                    "redis-server",
                    "--bind",
                    LOOPBACK,
                    "--port",
                    str(p["redis"]),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(wd / "redis"),
                    "--loglevel",
                    "warning",
                ],
                wd / "redis" / "redis.out",
                env=self._env(),
            ),
            "redis",
        )
        await wait_port(p["redis"], 20, redis)
        await wait_port(p["amqp"], 90, self.rabbit)

    def _clear_stale_lock(self) -> None:
        """jasmind refuses to start while /tmp/jasmind.lock exists (one per machine).

        A lock left by a jasmind that was killed is removed; one held by a
        running jasmind is not, and the start then fails with its message.
        """
        lock = Path("/tmp/jasmind.lock")
        if not lock.exists():
            return
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                if b"jasmind.py" in cmdline:
                    return
        with contextlib.suppress(OSError):
            lock.unlink()

    async def _configure(self, carrier_port: int, system_id: str, password: str) -> None:
        cli = await JCli.connect(self.ports["jcli"])
        try:
            for command in [
                "group -a",
                f"gid {USERNAME}",
                "ok",
                "user -a",
                f"username {USERNAME}",
                f"password {PASSWORD}",
                f"uid {USERNAME}",
                f"gid {USERNAME}",
                "ok",
                "smppccm -a",
                f"cid {CONNECTOR}",
                f"host {LOOPBACK}",
                f"port {carrier_port}",
                f"username {system_id}",
                f"password {password}",
                "bind transceiver",
                "submit_throughput 0",
                "ok",
                f"smppccm -1 {CONNECTOR}",
                "mtrouter -a",
                "type DefaultRoute",
                f"connector smppc({CONNECTOR})",
                "rate 0.00",
                "ok",
            ]:
                await cli.run(command)
        finally:
            (self.workdir / "jcli-transcript.txt").write_text("\n".join(cli.transcript))
            await cli.close()

    async def stop(self) -> None:
        # Jasmin's daemons first (they drain to the broker), then the broker,
        # the store and epmd.
        for proc in reversed(self.procs):
            if proc is self.rabbit:
                await self._stop_rabbit(proc)
            else:
                await proc.stop(grace=15)

    async def _stop_rabbit(self, proc: Spawned) -> None:
        """SIGTERM to the Erlang VM (the launcher script does not forward it)."""
        if proc.pid is None or proc.returncode is not None:
            return
        for pid in _erlang_vms(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        assert proc.proc is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.shield(proc.proc.wait())
        leftovers = process_tree([proc.pid]) if proc.returncode is None else set()
        await proc.stop(grace=5)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ facts

    def versions(self) -> dict[str, str]:
        return {
            "jasmin": jasmin_version(),
            "rabbitmq-server": deb_version("rabbitmq-server") or "?",
            "redis-server": deb_version("redis-server") or "?",
            "erlang": deb_version("erlang-base") or "?",
        }

    def http_args(self) -> list[str]:
        return [
            "--api",
            "jasmin",
            "--url",
            f"http://{LOOPBACK}:{self.ports['http']}",
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "--dlr-level",
            "2",
        ]

    def smpp_args(self) -> list[str]:
        return [
            "--port",
            str(self.ports["smpp"]),
            "--system-id",
            USERNAME,
            "--password",
            PASSWORD,
        ]
