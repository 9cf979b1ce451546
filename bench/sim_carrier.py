"""Carrier simulator throughput: submit_sm per second and CPU per submit_sm.

    python -m bench.sim_carrier [--seconds 5] [--window 4096] [--clients 1] [--record count]

Three processes: this one orchestrates; one runs the simulator (uvloop, as
``smsrouter sim carrier`` does); each client process is a minimal ESME on a
raw blocking socket that binds as a transceiver, keeps ``--window``
submit_sm pipelined (registered_delivery 1, every text different, the way
the router sends them) and answers each receipt with a deliver_sm_resp.
The clients run in other processes so that their CPU is not counted against
the simulator's; the simulator's CPU seconds are read from the kernel
(psutil when installed, else ``/proc/<pid>/stat``) over the measured window.

Prints one JSON line:

* ``submits_per_s``: submit_sm_resp received per wall-clock second;
* ``receipts_per_s``: receipts (deliver_sm) received per second;
* ``sim_cpu_us_per_submit``: simulator CPU (user + system) per submit_sm,
  its receipt included;
* ``sim_cpu_share``: simulator CPU seconds per wall second; below 1.0 the
  simulator had spare time (or, on a shared machine, was not given more);
* ``sim_system_cpu_fraction``: the part of it spent in the kernel (socket I/O);
* ``submits_per_cpu_s``: what one fully busy core of simulator handles at
  that cost (1e6 / sim_cpu_us_per_submit), steadier than the rate on a
  shared machine;
* ``client_cpu_share``: the clients' CPU seconds per wall second, summed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import struct
import time
from multiprocessing.connection import Connection
from typing import Any

_HEADER = struct.Struct(">IIII")
_BIND_TRANSCEIVER = 0x00000009
_SUBMIT_SM = 0x00000004
_SUBMIT_SM_RESP = 0x80000004
_DELIVER_SM = 0x00000005
_DELIVER_SM_RESP = 0x80000005
_ENQUIRE_LINK = 0x00000015
_ENQUIRE_LINK_RESP = 0x80000015
_GENERIC_NACK = 0x80000000

# submit_sm body (SMPP 3.4 §4.4.1) around an 8-digit counter in the text:
# service_type "", source 1/1 "14155550101", destination 1/1 "14155550123",
# esm_class 0, protocol_id 0, priority 0, no schedule/validity,
# registered_delivery 1, replace 0, data_coding 0, sm_default_msg_id 0.
_TEXT_PREFIX = b"bench message "
_BODY_HEAD = (
    b"\0\x01\x0114155550101\0\x01\x0114155550123\0\0\0\0\0\0\x01\0\0\0"
    + bytes([len(_TEXT_PREFIX) + 8])
    + _TEXT_PREFIX
)
_SUBMIT_LENGTH = 16 + len(_BODY_HEAD) + 8


# ---------------------------------------------------------------------------
# The simulator process


def _serve_simulator(conn: Connection, options: dict[str, Any]) -> None:
    import asyncio

    import uvloop

    from smsrouter.sims.carrier import CarrierSimulator

    async def serve() -> None:
        sim = CarrierSimulator(**options)
        await sim.start("127.0.0.1", 0)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        conn.send(sim.port)
        await stop.wait()
        await sim.stop()

    uvloop.run(serve())


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid` so far."""
    try:
        import psutil
    except ImportError:
        # /proc/<pid>/stat fields 14 and 15 (utime, stime) in clock ticks;
        # the command name (field 2) may hold spaces, so split after it.
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    times = psutil.Process(pid).cpu_times()
    return float(times.user), float(times.system)


# ---------------------------------------------------------------------------
# A client process: a minimal pipelined ESME on a blocking socket


def _recv_frames(sock: socket.socket, rest: bytes) -> tuple[list[tuple[int, int, int]], bytes]:
    data = rest + sock.recv(1 << 20)
    if len(data) == len(rest):
        raise ConnectionError("the simulator closed the connection")
    frames = []
    pos, n = 0, len(data)
    unpack = _HEADER.unpack_from
    while n - pos >= 16:
        length, command_id, status, seq = unpack(data, pos)
        if n - pos < length:
            break
        frames.append((command_id, status, seq))
        pos += length
    return frames, data[pos:]


def _run_client(
    port: int,
    window: int,
    counters: Any,
    stop: Any,
    ready: Any,
) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"bench\0secret\0\0\x34\0\0\0"
    sock.sendall(_HEADER.pack(16 + len(body), _BIND_TRANSCEIVER, 0, 1) + body)
    frames, rest = _recv_frames(sock, b"")
    while not frames:
        frames, rest = _recv_frames(sock, rest)
    if frames[0][1] != 0:
        raise SystemExit(f"bind refused: 0x{frames[0][1]:08X}")
    ready.release()
    pack_header = _HEADER.pack
    resp_head = struct.Struct(">IIII")
    seq = 1
    outstanding = 0
    ok = errors = receipts = 0
    answers: list[bytes] = []
    while not stop.is_set():
        out = answers
        answers = []
        room = window - outstanding
        if room > 0:
            for _ in range(room):
                seq += 1
                out.append(
                    pack_header(_SUBMIT_LENGTH, _SUBMIT_SM, 0, seq) + _BODY_HEAD + b"%08d" % seq
                )
            outstanding += room
        if out:
            sock.sendall(b"".join(out))
        frames, rest = _recv_frames(sock, rest)
        for command_id, status, frame_seq in frames:
            if command_id == _SUBMIT_SM_RESP:
                outstanding -= 1
                if status:
                    errors += 1
                else:
                    ok += 1
            elif command_id == _DELIVER_SM:
                receipts += 1
                # deliver_sm_resp with an empty message_id (§4.6.2).
                answers.append(resp_head.pack(17, _DELIVER_SM_RESP, 0, frame_seq) + b"\0")
            elif command_id == _ENQUIRE_LINK:
                answers.append(resp_head.pack(16, _ENQUIRE_LINK_RESP, 0, frame_seq))
        counters[0] = ok
        counters[1] = errors
        counters[2] = receipts
        counters[3] = int(time.process_time() * 1e6)
    sock.close()


# ---------------------------------------------------------------------------
# The orchestrator


def _snapshot(counters: list[Any], sim_pid: int) -> tuple[float, tuple[float, float], list[int]]:
    return (
        time.monotonic(),
        _cpu_seconds(sim_pid),
        [sum(c[i] for c in counters) for i in range(4)],
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    options: dict[str, Any] = {
        "system_id": "bench",
        "password": "secret",
        "receipt_delay": args.receipt_delay,
        "seed": 1,
        # Receipts in flight per bind: enough for the clients' round trip,
        # so receipts keep pace with submits instead of queueing.
        "window": args.sim_window,
    }
    if args.record != "full":
        options["record"] = args.record
    parent, child = ctx.Pipe()
    sim = ctx.Process(target=_serve_simulator, args=(child, options), daemon=True)
    sim.start()
    if not parent.poll(30):
        raise SystemExit("the simulator did not start")
    port = parent.recv()
    assert sim.pid is not None
    stop = ctx.Event()
    ready = ctx.Semaphore(0)
    counters = [ctx.Array("q", 4, lock=False) for _ in range(args.clients)]
    clients = [
        ctx.Process(target=_run_client, args=(port, args.window, c, stop, ready), daemon=True)
        for c in counters
    ]
    for client in clients:
        client.start()
    try:
        for _ in clients:
            if not ready.acquire(timeout=30):
                raise SystemExit("a client did not bind")
        time.sleep(args.warmup)
        t0, cpu0, n0 = _snapshot(counters, sim.pid)
        time.sleep(args.seconds)
        t1, cpu1, n1 = _snapshot(counters, sim.pid)
    finally:
        stop.set()
        for client in clients:
            client.join(10)
            if client.is_alive():
                client.terminate()
        os.kill(sim.pid, signal.SIGTERM)
        sim.join(10)
        if sim.is_alive():
            sim.terminate()
    wall = t1 - t0
    submits = n1[0] - n0[0]
    cpu = sum(cpu1) - sum(cpu0)
    us_per_submit = cpu / submits * 1e6 if submits else float("nan")
    return {
        "bench": "sim_carrier",
        "python": platform.python_version(),
        "clients": args.clients,
        "window": args.window,
        "sim_window": args.sim_window,
        "record": args.record,
        "receipt_delay": args.receipt_delay,
        "seconds": round(wall, 3),
        "submits_per_s": round(submits / wall),
        "submit_errors_per_s": round((n1[1] - n0[1]) / wall),
        "receipts_per_s": round((n1[2] - n0[2]) / wall),
        "sim_cpu_us_per_submit": round(us_per_submit, 2),
        "sim_cpu_share": round(cpu / wall, 3),
        "sim_system_cpu_fraction": round((cpu1[1] - cpu0[1]) / cpu, 3) if cpu else 0.0,
        "submits_per_cpu_s": round(1e6 / us_per_submit) if submits else 0,
        "client_cpu_share": round((n1[3] - n0[3]) / 1e6 / wall, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measured window")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds before measuring")
    # Deep pipelines keep the simulator fed between two reads of the client;
    # shallower ones measure the ping-pong of two processes more than it.
    p.add_argument("--window", type=int, default=4096, help="submit_sm in flight per client")
    p.add_argument("--clients", type=int, default=1, help="client processes, one bind each")
    p.add_argument("--receipt-delay", type=float, default=0.2)
    p.add_argument("--record", choices=["full", "count"], default="full")
    p.add_argument("--sim-window", type=int, default=16384, help="receipts in flight per bind")
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
