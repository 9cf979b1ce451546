"""The router as a real subprocess for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class RouterProcess:
    """`python -m smsrouter run --config <file>`; stopped by PID, never by name."""

    def __init__(
        self,
        config_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """`args`: more arguments of `smsrouter run`, e.g. ("--workers", "2")."""
        self.config_path = config_path
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.ready: dict[str, Any] = {}  # the "smsrouter ready" line
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self.http_port = 0
        self.smpp_port = 0
        self.admin_port = 0  # with [admin] tokens: the operator API's port
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, timeout: float = 60.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smsrouter", "run", "--config", str(self.config_path),
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError("router did not become ready:\n" + self.output()) from None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.raw_lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            self.lines.append(event)
            if event.get("event") == "smsrouter ready":
                self.ready = event
                self.http_port = int(event["http"].rsplit(":", 1)[1])
                self.smpp_port = int(event["smpp"].rsplit(":", 1)[1])
                if event.get("admin"):
                    self.admin_port = int(event["admin"].rsplit(":", 1)[1])
                self._ready.set()

    async def wait_for_event(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first log line with this event, waiting for it if need be."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines:
                    if line.get("event") == event:
                        return line
                await asyncio.sleep(0.05)

    def output(self) -> str:
        return "\n".join(self.raw_lines[-200:])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError("router did not exit after SIGTERM:\n" + self.output()) from None
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
