"""Where the router's time goes under a scenario: py-spy, summed by function.

A separate pass after the measured one (the profiler stops the process for
each sample and slows it; the measured figures are taken without it): the
same load (scenario 1's by default, scenario 2's with
``--profile-scenario scenario2``) runs while ``py-spy record -p PID -f raw --native``
samples the daemon for a few seconds. The raw output (one line per
distinct stack: frames separated by ';', then the sample count) is summed
here by function (see `summarize`). Samples in which the process only
waits (epoll, an idle pool thread) are left out, so shares are of busy
time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.install import CACHE_DIR
from bench.procs import Spawned
from bench.scenarios import run_client

if TYPE_CHECKING:
    from bench.router import SmsrouterSystem

TOOLS_VENV = CACHE_DIR / "tools"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def py_spy() -> str:
    """The py-spy binary: on PATH, or installed once into the bench's tools venv."""
    found = shutil.which("py-spy")
    if found:
        return found
    binary = TOOLS_VENV / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(TOOLS_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"],
            check=True,
            timeout=600,
        )
    return str(binary)


def _area(path: str) -> str:
    """A package-level name for a source file: router, connectors, asyncpg, stdlib ..."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    for top in ("router", "connectors", "sms", "smsrouter", "sims"):
        if top in parts:
            return top
    if "lib" in parts and any(p.startswith("python3") for p in parts):
        return "stdlib"
    return parts[-1] if parts else "?"


# A function of a compiled module (the mypyc build) as py-spy --native
# names it: CPyDef_ or CPyPy_ (the Python-callable wrapper), then the
# module's path and the name, joined by "___", in a file __native*.c.
_NATIVE_FUNC = re.compile(r"^CPy(?:Def|Py)_(?P<path>(?:router|connectors|sms)___.+)$")
# The environment class of a compiled coroutine: <method>_<Class>_gen.
_COROUTINE = re.compile(r"^(?P<method>.+?)_(?P<cls>[A-Z]\w*)_gen$")


def compiled_frame(func: str, file: str) -> tuple[str, str] | None:
    """(function, source file) of a frame in a compiled module, as an
    interpreted frame of it would read, e.g. ("HttpApi.send",
    "connectors/http_api.py"); None for any other frame."""
    name = Path(file).name
    match = _NATIVE_FUNC.match(func)
    if match is None or not (name.startswith("__native") and name.endswith(".c")):
        return None
    parts = match.group("path").split("___")
    # The module ends at its file's own name (__native_<module>.c), else
    # after the package's first level.
    short = name.removeprefix("__native_").removesuffix(".c")
    end = parts.index(short, 1) + 1 if short in parts[1:] else 2
    module, rest = parts[:end], [p for p in parts[end:] if not p.startswith("__mypyc")]
    if len(rest) == 1 and (coroutine := _COROUTINE.match(rest[0])) is not None:
        rest = [coroutine.group("cls"), coroutine.group("method")]
    elif len(rest) == 1 and rest[0].endswith("_gen"):
        rest = [rest[0].removesuffix("_gen")]
    return ".".join(rest) or "<module>", "/".join(module) + ".py"


# Stacks in which the process waits rather than works: the event loop in
# epoll, an idle thread-pool worker on its queue. py-spy's --native mode
# samples them as busy.
_IDLE_LEAVES = ("epoll_wait", "epoll_pwait")
_IDLE_FRAMES = ("_queue_SimpleQueue_get",)


def summarize(raw: str, top: int = 25) -> dict[str, Any]:
    """Sum py-spy's raw (collapsed) stacks by function.

    * self: the frame on top of the stack (a C function of CPython, libc or
      an extension when sampled with --native);
    * python_self: the innermost Python frame, that is the Python function
      whose own code or native callees (syscalls, GC, C extensions) ran; a
      function of a compiled module counts as the Python function it is
      compiled from (`compiled_frame`);
    * inclusive: the router's own functions (router/, connectors/, sms/) anywhere
      in the stack, once per stack;
    * self_by_package: `self` grouped by package or library;
    * native_callers: for the top native leaves, the Python functions that
      led to them.
    """
    own: Counter[str] = Counter()
    python_own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    total = 0
    idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";")]
        if frames[-1].split(" (")[0] in _IDLE_LEAVES or any(
            f.startswith(_IDLE_FRAMES) for f in frames
        ):
            idle += count
            continue
        total += count
        names: list[str] = []
        files: list[str] = []
        for frame in frames:
            match = _FRAME.match(frame)
            if match is None:
                continue  # process / thread header frames
            func, file = match.group("func"), match.group("file").rsplit(":", 1)[0]
            compiled = compiled_frame(func, file)
            if compiled is not None:
                func, file = compiled
            names.append(f"{func} ({_short(file)})")
            files.append(file)
        if not names:
            continue
        leaf = names[-1]
        own[leaf] += count
        areas[_area(files[-1])] += count
        python = [n for n, f in zip(names, files, strict=True) if f.endswith(".py")]
        if python:
            python_own[python[-1]] += count
            if not files[-1].endswith(".py"):
                callers.setdefault(leaf, Counter())[" <- ".join(reversed(python[-3:]))] += count
        # Inclusive time of the router's own functions (the frames every
        # stack shares, the event loop and the entry point, tell nothing).
        for name, file in set(zip(names, files, strict=True)):
            if _area(file) in ("router", "connectors", "sms") and file.endswith(".py"):
                inclusive[name] += count

    def share(counter: Counter[str], n: int = top) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": k, "pct": round(100.0 * k / total, 1)}
            for name, k in counter.most_common(n)
        ]

    native = [name for name, _ in own.most_common(top) if name in callers][:6]
    return {
        "samples": total,
        "idle_samples": idle,
        "self": share(own),
        "python_self": share(python_own),
        "inclusive": share(inclusive),
        "self_by_package": [
            {"package": name, "pct": round(100.0 * k / total, 1)}
            for name, k in areas.most_common(15)
        ]
        if total
        else [],
        "native_callers": {
            name: [
                {"python": chain, "pct": round(100.0 * k / total, 1)}
                for chain, k in callers[name].most_common(3)
            ]
            for name in native
        },
    }


def _short(path: str) -> str:
    parts = Path(path).parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    for top in ("router", "connectors", "sms", "smsrouter", "sims"):
        if top in parts:
            return "/".join(parts[parts.index(top) :])
    return "/".join(parts[-2:])


async def profile_router(
    system: SmsrouterSystem,
    tool: str,
    client_args: list[str],
    workdir: Path,
    *,
    scenario: str,
    seconds: float,
) -> dict[str, Any]:
    """Run a scenario's load (`smsrouter sim TOOL ARGS`) again with py-spy on
    the daemon (with --workers N, on its first worker); the summary."""
    pid = system.profiled_pid
    if pid is None:
        raise RuntimeError("the router is not running")
    binary = await asyncio.to_thread(py_spy)
    raw_path = workdir / f"profile-{scenario}.txt"
    load = asyncio.create_task(run_client(tool, client_args, workdir / "profile-client.log"))
    try:
        await asyncio.sleep(2.0)  # past the ramp-up
        spy = Spawned(
            "py-spy",
            [
                binary,
                "record",
                "-p",
                str(pid),
                "-f",
                "raw",
                "-d",
                str(int(seconds)),
                "-r",
                "100",
                # C frames too (syscalls, the garbage collector, uvloop); this
                # stops the process for each sample (no --nonblocking), which
                # is why this pass is not the measured one.
                "--native",
                "-o",
                str(raw_path),
            ],
            workdir / "py-spy.log",
        )
        await spy.start()
        try:
            assert spy.proc is not None
            async with asyncio.timeout(seconds + 60):
                await spy.proc.wait()
        finally:
            await spy.stop()
        summary_client, _ = await load
    finally:
        if not load.done():
            load.cancel()
    raw = raw_path.read_text() if raw_path.exists() else ""
    if not raw:
        raise RuntimeError("py-spy wrote no profile:\n" + spy.tail())
    out = summarize(raw)
    out.update(
        {
            "scenario": scenario,
            "seconds": seconds,
            "raw_file": str(raw_path),
            # Accepted per second (HTTP) or answered submit_sm per second (SMPP).
            "load_accepted_per_s": summary_client.get(
                "messages_per_s", summary_client.get("submits_per_s")
            ),
            "command": f"py-spy record -p PID -f raw -d {int(seconds)} -r 100 --native",
        }
    )
    return out
