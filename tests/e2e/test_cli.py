"""The command line as users run it: `smsrouter db migrate`, `smsrouter sim carrier`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
import smpplib.client
import smpplib.consts

from tests.pg import PgServer

ROOT = Path(__file__).resolve().parents[2]


def _smsrouter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smsrouter", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


async def test_db_migrate_applies_once(pg_server: PgServer, tmp_path: Path) -> None:
    name = f"blank_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        env = {"SMSROUTER_DATABASE_URL": pg_server.dsn_for(name)}
        first = _smsrouter("db", "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "applied: 0001_messages" in first.stdout
        second = _smsrouter("db", "migrate", env=env)
        assert second.returncode == 0, second.stderr
        assert "nothing (up to date)" in second.stdout
        conn = await asyncpg.connect(pg_server.dsn_for(name))
        try:
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
        finally:
            await conn.close()
        assert {"messages", "carrier_submits", "outbox", "schema_migrations"} <= tables
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sim_process():  # type: ignore[no-untyped-def]
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "smsrouter", "sim", "carrier", "--port", str(port),
            "--system-id", "esme", "--password", "pw", "--receipt-delay", "0.05",
            "--receipts", "UNDELIV=1",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "carrier simulator listening" in line:
                break
            assert line, "simulator exited before listening"
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sim_carrier_answers_and_sends_receipts(sim_process: int) -> None:
    client = smpplib.client.Client(
        "127.0.0.1", sim_process, timeout=10, allow_unknown_opt_params=True
    )
    sent: list = []
    received: list = []
    client.set_message_sent_handler(lambda pdu: sent.append(pdu))
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    client.connect()
    try:
        client.bind_transceiver(system_id="esme", password="pw")
        client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_INTL,
            source_addr="14155550101",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr="14155550123",
            short_message=b"to the sim",
            registered_delivery=1,
        )
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    assert sent and sent[0].message_id
    text = received[0].short_message.decode()
    assert text.startswith(f"id:{sent[0].message_id.decode()} ")
    assert "stat:UNDELIV" in text
