"""A partner ESME (smpplib, third-party) sending what partners really send:
long UCS-2 texts by UDH, GSM extension characters, SAR parts, receipts on
failure only, validity periods."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
import smpplib.client
import smpplib.consts
import smpplib.gsm

from smsrouter.sims.carrier import CarrierSimulator
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess

SENDER = "12345"
RECIPIENT = "14155550123"

CONFIG = """
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "partner"
credit = "1000000"
smpp = {{ system_id = "partner", password = "pw-12345", max_binds = 2 }}
[[numbers]]
number = "{sender}"
account = "partner"
type = "short_code"
"""


@pytest.fixture
async def router(start_router: StartRouter, carrier: CarrierSimulator) -> RouterProcess:
    return await start_router(CONFIG.format(sender=SENDER))


class Esme:
    """smpplib in a thread: submits, then collects receipts."""

    def __init__(self, port: int) -> None:
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=10, allow_unknown_opt_params=True
        )
        self.sent: list = []
        self.received: list = []
        self.client.set_message_sent_handler(lambda pdu: self.sent.append(pdu))
        self.client.set_message_received_handler(lambda pdu: self.received.append(pdu))

    def open(self) -> None:
        self.client.connect()
        self.client.bind_transceiver(system_id="partner", password="pw-12345")

    def submit(self, short_message: bytes, **kw: object) -> str:
        before = len(self.sent)
        self.client.send_message(
            source_addr_ton=3,  # short code: network specific (CONTRACT §4)
            source_addr_npi=0,
            source_addr=SENDER,
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr=RECIPIENT,
            short_message=short_message,
            **kw,
        )
        deadline = time.monotonic() + 10
        while len(self.sent) == before and time.monotonic() < deadline:
            self.client.read_once()
        resp = self.sent[-1]
        assert resp.status == 0, resp.status
        return resp.message_id.decode()

    def wait_receipts(self, count: int) -> list:
        deadline = time.monotonic() + 15
        while len(self.received) < count and time.monotonic() < deadline:
            self.client.read_once()
        return self.received

    def close(self) -> None:
        try:
            self.client.unbind()
        finally:
            self.client.disconnect()


def _scenario(port: int) -> tuple[list[str], list[str], list]:
    esme = Esme(port)
    esme.open()
    try:
        long_text = "Привет, мир! Это длинное сообщение. " * 3  # > 70 UCS-2 units
        parts, coding, esm_class = smpplib.gsm.make_parts(long_text)
        assert len(parts) == 2 and coding == 8 and esm_class == 0x40
        udh_ids = [
            esme.submit(p, data_coding=coding, esm_class=esm_class, registered_delivery=1)
            for p in parts
        ]
        gsm_parts, gsm_coding, _ = smpplib.gsm.make_parts("Prices [10] {20} ~5")
        ext_id = esme.submit(gsm_parts[0], data_coding=gsm_coding, registered_delivery=1)
        sar_ids = [
            esme.submit(
                chunk,
                registered_delivery=1,
                sar_msg_ref_num=0x1234,
                sar_total_segments=2,
                sar_segment_seqnum=seq,
            )
            for seq, chunk in ((1, b"first half "), (2, b"second half"))
        ]
        # Receipt only on failure: this one is delivered, so none comes back.
        quiet_id = esme.submit(b"no receipt please", registered_delivery=2)
        receipts = esme.wait_receipts(5)
    finally:
        esme.close()
    return [*udh_ids, ext_id, *sar_ids], [quiet_id], receipts


async def test_partner_long_messages_and_receipts(
    router: RouterProcess, carrier: CarrierSimulator, database_url: str
) -> None:
    ids, quiet, receipts = await asyncio.to_thread(_scenario, router.smpp_port)
    assert len(set(ids)) == 5, "each submit_sm is its own message (CONTRACT §4)"
    by_id = {r.receipted_message_id.decode(): r for r in receipts}
    assert set(by_id) == set(ids)
    assert all(b"stat:DELIVRD" in r.short_message for r in receipts)

    texts = [s.text for s in carrier.submits]
    # The UCS-2 parts reach the carrier with their UDH, one reference.
    ucs2 = [s for s in carrier.submits if s.data_coding == 8]
    assert len(ucs2) == 2
    assert {s.short_message[:5] for s in ucs2} == {ucs2[0].short_message[:5]}
    assert "".join(s.text for s in ucs2) == "Привет, мир! Это длинное сообщение. " * 3
    assert "Prices [10] {20} ~5" in texts
    # SAR parts travel on as UDH parts with the same 16-bit reference.
    sar = [s for s in carrier.submits if s.text in ("first half ", "second half")]
    assert len(sar) == 2
    assert all(s.esm_class & 0x40 and s.short_message[1] == 0x08 for s in sar)
    assert all(s.short_message[3:5] == b"\x12\x34" for s in sar)
    # Addresses as the contract says: the short code TON 3, the number TON 1.
    assert {(s.source_addr_ton, s.source_addr) for s in carrier.submits} == {(3, SENDER)}

    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(100):
            status = await conn.fetchval("SELECT status FROM messages WHERE id = $1", quiet[0])
            if status == "delivered":
                break
            await asyncio.sleep(0.1)
        assert status == "delivered"
        receipts_for_quiet = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE message_id = $1", quiet[0]
        )
    finally:
        await conn.close()
    assert receipts_for_quiet == 0


def _with_nul_octets(port: int) -> list[str]:
    esme = Esme(port)
    esme.open()
    try:
        return [
            esme.submit(b"\x00\x01binary\x00\xff", data_coding=4),  # 8-bit binary
            esme.submit("A\x00B".encode("utf-16-be"), data_coding=8),  # UCS-2 U+0000
            esme.submit(b"caf\xe9\x00", data_coding=3),  # Latin-1
        ]
    finally:
        esme.close()


async def test_short_messages_with_nul_octets_are_stored_and_sent_as_they_came(
    router: RouterProcess, carrier: CarrierSimulator, database_url: str
) -> None:
    """PostgreSQL's text holds no U+0000: a binary SMS full of 0x00 octets
    is still taken (not ESME_RSYSERR, which fails its whole group commit)
    and reaches the carrier octet for octet."""
    ids = await asyncio.to_thread(_with_nul_octets, router.smpp_port)
    assert len(set(ids)) == 3
    for _ in range(100):
        if len(carrier.submits) >= 3:
            break
        await asyncio.sleep(0.1)
    sent = {s.data_coding: s.short_message for s in carrier.submits}
    assert sent == {
        4: b"\x00\x01binary\x00\xff",
        8: "A\x00B".encode("utf-16-be"),
        3: b"caf\xe9\x00",
    }
