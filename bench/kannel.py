"""Kannel (Debian's bearerbox + smsbox) as a system under test.

Process handling and the config writer are the end-to-end tests' own
(`tests.e2e.kannel.Kannel`); the bench only changes what a production
set-up would: log levels at warning instead of debug, and the SMSC
connection's window (`max-pending-submits`) equal to the router's carrier
window. bearerbox binds to the bench's carrier simulator as a transceiver;
smsbox takes `sendsms` requests and calls each message's dlr-url.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.procs import CpuMeter
from bench.router import CARRIER_WINDOW
from tests.e2e.kannel import Kannel, SendsmsUser, SmscGroup

USERNAME = "bench"
PASSWORD = "bench-pw"
# Kannel log levels: 0 debug, 1 info, 2 warning, 3 error, 4 panic.
LOG_LEVEL = 2

SMSC_OPTIONS: dict[str, str | int | bool] = {
    "transceiver-mode": True,
    "interface-version": 34,
    "system-type": "VMA",  # bearerbox does not start without one
    "source-addr-ton": 3,
    "source-addr-npi": 0,
    "source-addr-autodetect": False,
    "dest-addr-ton": 1,
    "dest-addr-npi": 1,
    # Outstanding submit_sm on the bind (default 10): the router's window.
    "max-pending-submits": CARRIER_WINDOW,
    "reconnect-delay": 1,
}
USER_OPTIONS: dict[str, str | int | bool] = {"max-messages": 5, "concatenation": True}
# The final reports only (1 delivered, 2 undelivered, 16 rejected by the
# SMSC), as smsrouter and Jasmin (dlr-level 2) call back once per message.
DLR_MASK = 19


class BenchKannel(Kannel):
    """`tests.e2e.kannel.Kannel` logging warnings only, and no access logs.

    smsrouter runs at log level warning with no access log; Kannel gets the
    same: its log files at level 2, its stderr (`-v`) at 2, and no
    `access-log` lines (bearerbox and smsbox write one line per message
    there).
    """

    def config_text(self) -> str:
        text = super().config_text()
        text = re.sub(r"^log-level = \d+$", f"log-level = {LOG_LEVEL}", text, flags=re.M)
        return re.sub(r"^access-log = .*\n", "", text, flags=re.M)

    async def _spawn(self, name: str) -> None:
        with (self.workdir / f"{name}.out").open("ab") as out:
            self._procs[name] = await asyncio.create_subprocess_exec(
                str(self.bin_dir / name), "-v", str(LOG_LEVEL), str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.workdir,
            )  # fmt: skip


class KannelSystem:
    """bearerbox + smsbox, bound to the carrier simulator."""

    name = "kannel"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cpu = CpuMeter()
        self.kannel: BenchKannel | None = None
        self.settings: dict[str, Any] = {
            "boxes": "bearerbox + smsbox (Debian kannel), dlr-storage internal",
            "smsc group": {k: v for k, v in SMSC_OPTIONS.items()},
            "sendsms-user": dict(USER_OPTIONS),
            "log-level": f"{LOG_LEVEL} (warning) in every group and on stderr (-v {LOG_LEVEL})",
            "access-log": "none (smsrouter writes no access log either)",
            "dlr-mask": f"{DLR_MASK} (final reports only)",
            "throughput": "not set (no limit)",
        }

    async def start(self, carrier_port: int, system_id: str, password: str) -> None:
        bearerbox = shutil.which("bearerbox") or "/usr/sbin/bearerbox"
        self.kannel = BenchKannel(
            self.workdir / "kannel",
            SmscGroup(
                port=carrier_port, system_id=system_id, password=password, options=SMSC_OPTIONS
            ),
            SendsmsUser(username=USERNAME, password=PASSWORD, options=USER_OPTIONS),
            bin_dir=Path(bearerbox).parent,
        )
        await self.kannel.start()
        try:
            await self.kannel.wait_online(timeout=30)
        except BaseException:
            await self.kannel.stop()
            raise
        for name, proc in self.kannel._procs.items():
            self.cpu.add(name, proc.pid)

    async def stop(self) -> None:
        if self.kannel is not None:
            await self.kannel.stop()

    def versions(self) -> dict[str, str]:
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "kannel"],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            ).stdout.strip()
        except OSError:
            out = "?"
        return {"kannel": out or "?"}

    def http_args(self) -> list[str]:
        assert self.kannel is not None
        return [
            "--api",
            "kannel",
            "--url",
            f"http://127.0.0.1:{self.kannel.sendsms_port}",
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "--dlr-mask",
            str(DLR_MASK),
        ]
