"""The carrier every system under test sends to, in a process of its own.

``python -m bench.carrier --port 0`` runs `sims.carrier.CarrierSimulator`
(uvloop, as ``smsrouter sim carrier`` does) with its control API, plus two
read-outs the bench needs and the API does not offer, and prints one JSON
line with its ports once it listens:

* ``GET /bench/submits?since=N`` — how many submit_sm were accepted since
  record N, and when the first and last of them arrived (wall clock, from
  the simulator's own record);
* ``GET /bench/senders`` — for each source address, the arrival times of
  its submit_sm in milliseconds after the first one of the run, for the
  per-sender rate check of scenario 4.

Its CPU is not counted against any system: it is the outside world.
`CarrierProcess` starts it, reads it and stops it by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.procs import LOOPBACK, Spawned

SYSTEM_ID = "carrier"
PASSWORD = "secret"


def source_addr(frame: bytes) -> str:
    """source_addr of a submit_sm frame (SMPP 3.4 §4.4.1: after service_type, TON, NPI)."""
    end_service = frame.index(b"\0", 16)
    start = end_service + 3
    return frame[start : frame.index(b"\0", start)].decode("latin-1")


def _bench_routes(app: web.Application, sim: Any) -> None:
    async def submits(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        entries = sim.submits._entries[since:]
        return web.json_response(
            {
                "count": len(entries),
                "first_at": entries[0][3] if entries else None,
                "last_at": entries[-1][3] if entries else None,
                "total": since + len(entries),
            }
        )

    async def senders(request: web.Request) -> web.Response:
        entries = sim.submits._entries
        t0 = entries[0][3] if entries else 0.0
        out: dict[str, list[int]] = {}
        for _, _, frame, at in entries:
            out.setdefault(source_addr(frame), []).append(round((at - t0) * 1000.0))
        return web.json_response({"t0": t0, "senders": out})

    app.router.add_get("/bench/submits", submits)
    app.router.add_get("/bench/senders", senders)


async def _serve(args: argparse.Namespace) -> None:
    from smsrouter.sims.carrier import CarrierSimulator
    from smsrouter.sims.control import ControlApi

    sim = CarrierSimulator(
        system_id=SYSTEM_ID,
        password=PASSWORD,
        receipt_delay=args.receipt_delay,
        receipts={"DELIVRD": 1.0},
        record="full",
        window=args.window,
    )
    await sim.start(LOOPBACK, args.port)
    control = ControlApi(sim)
    _bench_routes(control.app, sim)
    await control.start(LOOPBACK, args.control_port)
    sim.control = control  # stopped with the simulator
    print(json.dumps({"event": "carrier ready", "port": sim.port, "control_port": control.port}))
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--receipt-delay", default="0.2")
    p.add_argument("--window", type=int, default=1024, help="receipts in flight per bind")
    args = p.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(_serve(args))


class CarrierProcess:
    """`python -m bench.carrier` as a child process, and its read-outs."""

    def __init__(self, workdir: Path, *, receipt_delay: str = "0.2") -> None:
        self.proc = Spawned(
            "carrier",
            [sys.executable, "-m", "bench.carrier", "--receipt-delay", receipt_delay],
            workdir / "carrier.log",
            capture_stdout=True,
        )
        self.port = 0
        self.control_port = 0
        self._http: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 20.0) -> None:
        await self.proc.start()
        assert self.proc.proc is not None and self.proc.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.proc.stdout.readline()
                    if not line:
                        raise RuntimeError("carrier simulator exited:\n" + self.proc.tail())
                    event = json.loads(line)
                    if event.get("event") == "carrier ready":
                        break
        except BaseException:
            await self.proc.stop()
            raise
        self.port = int(event["port"])
        self.control_port = int(event["control_port"])
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.proc.stop(grace=10)

    async def _call(self, method: str, path: str) -> Any:
        assert self._http is not None
        url = f"http://{LOOPBACK}:{self.control_port}{path}"
        async with self._http.request(method, url) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def submits(self, since: int = 0) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/bench/submits?since={since}")
        return result

    async def senders(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/bench/senders")
        return result


if __name__ == "__main__":
    main()
