"""Processes the bench starts, and the CPU seconds of the systems it measures.

Every process is started here with its PID kept, and stopped by that PID:
SIGTERM (or the signal the program documents), then SIGKILL after a grace
period, also when the bench is cancelled (Ctrl-C). Nothing is ever looked
up or killed by name.

CPU is read from ``/proc/<pid>/stat`` (fields 14-17: utime, stime, cutime,
cstime, in clock ticks). A system is a set of root PIDs; its CPU is the sum
over every live process in the trees under them. ``cutime``/``cstime`` of a
live process hold the CPU of its children that already exited and were
reaped, so a PostgreSQL backend or a helper that ends between two readings
is still counted, and nothing is counted twice: a process's own time moves
into its parent's ``c*time`` only when it stops being a live member of the
tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on the loopback right now (for programs that want a fixed one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# /proc


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or ')'.
    return raw[raw.rfind(b")") + 2 :].decode().split()


class MachineCpu(NamedTuple):
    """CPU seconds of every core since boot, from /proc/stat."""

    busy: float  # everything but idle and iowait, steal included
    steal: float  # time the hypervisor gave our virtual cores to others
    total: float


def machine_cpu_times(stat: str) -> MachineCpu:
    """The machine's CPU times from the text of /proc/stat.

    Idle and iowait are the time no process wanted a core; everything else
    (user, nice, system, irq, softirq, steal) is counted busy: whatever kept
    a core from the processes under test. Steal is also given alone: on a
    shared virtual machine it is what makes one day's run slower than
    another's.
    """
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal [guest guest_nice]:
            # guest time is already inside user and nice.
            ticks = [int(v) for v in fields[1:9]]
            idle = ticks[3] + ticks[4]
            return MachineCpu(
                (sum(ticks) - idle) / CLOCK_TICKS, ticks[7] / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS
            )
    raise ValueError("no aggregate cpu line in /proc/stat")


def machine_cpu() -> MachineCpu:
    """`machine_cpu_times` of this machine now."""
    return machine_cpu_times(Path("/proc/stat").read_text())


def _parents() -> dict[int, int]:
    """pid → parent pid of every process on the machine now."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            out[int(entry.name)] = int(fields[1])
    return out


def children_of(pid: int) -> list[int]:
    """The live children of `pid`."""
    return [child for child, parent in _parents().items() if parent == pid]


def process_tree(roots: Iterable[int]) -> set[int]:
    """The live processes among `roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    parents = _parents()
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in parents]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return seen


def cpu_seconds_of(pids: Iterable[int]) -> float:
    """utime + stime + cutime + cstime of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # Fields 14-17 of stat(5); fields[0] here is field 3 (state).
        ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU seconds of a system's processes, per part.

    A part is the process trees under some root PIDs (`add`), or a single
    process without its live descendants (`add_process`: their CPU goes to
    the parts that hold them; the exited ones it reaped stay in its own
    ``c*time``). Each process is counted once, under the first part that
    holds it.
    """

    roots: dict[str, list[int]] = field(default_factory=dict)
    single: dict[str, list[int]] = field(default_factory=dict)

    def add(self, part: str, pid: int | None) -> None:
        if pid is not None:
            self.roots.setdefault(part, []).append(pid)

    def add_process(self, part: str, pid: int | None) -> None:
        if pid is not None:
            self.single.setdefault(part, []).append(pid)

    def read(self) -> dict[str, float]:
        """{part: CPU seconds so far}."""
        out: dict[str, float] = {}
        counted: set[int] = set()
        for part, pids in self.single.items():
            counted |= set(pids)
            out[part] = cpu_seconds_of(pids)
        for part, pids in self.roots.items():
            tree = process_tree(pids) - counted
            counted |= tree
            out[part] = cpu_seconds_of(tree)
        return out


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {part: round(after.get(part, 0.0) - before.get(part, 0.0), 3) for part in after}


# ---------------------------------------------------------------------------
# Processes


class Spawned:
    """One child process, its output in a log file, stopped by its PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        capture_stdout: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.capture_stdout = capture_stdout
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"[bench] {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.capture_stdout else log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
                # Its own session: a Ctrl-C on the terminal reaches only the
                # bench, which then stops everything in order, by PID.
                start_new_session=True,
            )
            log.write(f"[bench] {self.name}: pid {self.proc.pid}\n".encode())

    async def stop(self, grace: float = 15.0) -> int | None:
        """The stop signal, then SIGKILL after `grace` seconds; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                pass
            finally:
                # Also when this wait is cancelled: never leave it behind.
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(proc.wait())
        return proc.returncode

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


async def wait_port(port: int, timeout: float, proc: Spawned | None = None) -> None:
    """Until something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.returncode is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}:\n{proc.tail()}")
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            if time.monotonic() > deadline:
                name = proc.name if proc is not None else "server"
                raise RuntimeError(
                    f"{name} did not listen on {port} within {timeout:.0f} s"
                ) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
