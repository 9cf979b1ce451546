"""What we send carriers and how we read their answers (sans-IO parts)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from smsrouter.connectors.carriers import build_submit_sm, canonical_message_id, receipt_of
from smsrouter.connectors.smpp import DeliverSm, MessageState, Tag, get_tlv, set_tlv
from smsrouter.router.config import CarrierConfig
from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.sms.text import (
    concat_info,
    decode_short_message,
    split_udh,
    unpack_septets,
)


def _message(text: str, parts: int, *, encoding: str = "gsm7", data_coding: int = 0) -> Message:
    return Message(
        id=new_message_id(), account_id="a", ingress="http", sender="+14155550101",
        recipient="+14155550123", body=text, encoding=encoding, data_coding=data_coding,
        parts=parts, price=Decimal(0), created_at=datetime.now(UTC),
    )  # fmt: skip


def _carrier(**kw: object) -> CarrierConfig:
    return CarrierConfig(name="c", **kw)  # type: ignore[arg-type]


def test_single_part_addresses_and_text() -> None:
    pdu = build_submit_sm(_message("hello", 1), 0, _carrier())
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (1, 1, "14155550101")
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (1, 1, "14155550123")
    assert pdu.esm_class == 0 and pdu.short_message == b"hello"
    assert pdu.registered_delivery == 1


@pytest.mark.parametrize(("mode", "iei"), [("udh8", 0x00), ("udh16", 0x08)])
def test_long_text_parts_carry_one_concat_reference(mode: str, iei: int) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(300))
    message = _message(text, 2)
    pdus = [build_submit_sm(message, i, _carrier(concatenation=mode)) for i in range(2)]
    infos = []
    texts = []
    for pdu in pdus:
        assert pdu.esm_class & 0x40
        ies, payload = split_udh(pdu.short_message)
        assert ies[0][0] == iei
        infos.append(concat_info(ies))
        texts.append(decode_short_message(0, payload))
    assert [(i.total, i.seq) for i in infos if i] == [(2, 1), (2, 2)]
    assert infos[0] is not None and infos[1] is not None and infos[0].ref == infos[1].ref
    assert "".join(texts) == text


def test_sar_carriers_get_tlvs_and_no_udh() -> None:
    message = _message("x" * 200, 2)
    pdus = [build_submit_sm(message, i, _carrier(concatenation="sar")) for i in range(2)]
    assert [p.esm_class for p in pdus] == [0, 0]
    assert [get_tlv(p, Tag.SAR_SEGMENT_SEQNUM) for p in pdus] == [1, 2]
    assert {get_tlv(p, Tag.SAR_TOTAL_SEGMENTS) for p in pdus} == {2}
    assert len({get_tlv(p, Tag.SAR_MSG_REF_NUM) for p in pdus}) == 1
    assert b"".join(p.short_message for p in pdus) == b"x" * 200


def test_packed_gsm_for_carriers_that_want_it() -> None:
    pdu = build_submit_sm(_message("hello world", 1), 0, _carrier(gsm_packed=True))
    assert len(pdu.short_message) == 10  # 11 septets in 10 octets
    assert unpack_septets(pdu.short_message, 11) == b"hello world"


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [("abc", "string", "abc"), ("1A", "hex", "26"), ("001a", "hex", "26"), ("26", "decimal", "26"),
     ("0026", "decimal", "26"), ("x-1", "hex", "x-1")],
)  # fmt: skip
def test_numeric_ids_meet_whatever_base_each_side_uses(value: str, fmt: str, expected: str) -> None:
    assert canonical_message_id(value, fmt) == expected


def _receipt_pdu(
    text: str | None, *, tlv_id: str | None = None, state: int | None = None
) -> DeliverSm:
    pdu = DeliverSm(esm_class=0x04, short_message=(text or "").encode())
    if tlv_id is not None:
        set_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID, tlv_id)
    if state is not None:
        set_tlv(pdu, Tag.MESSAGE_STATE, state)
    return pdu


def test_receipts_in_text_tlvs_or_both() -> None:
    text = "id:1A sub:001 dlvrd:001 submit date:2611211200 done date:2611211201 stat:DELIVRD err:000 text:x"
    by_text = receipt_of("c", _receipt_pdu(text), "hex")
    assert by_text is not None
    assert (by_text.carrier_message_id, by_text.status, by_text.error_code) == (
        "26", Status.DELIVERED, None,
    )  # fmt: skip
    by_tlv = receipt_of(
        "c", _receipt_pdu(None, tlv_id="26", state=MessageState.UNDELIVERABLE), "decimal"
    )
    assert by_tlv is not None
    assert (by_tlv.carrier_message_id, by_tlv.status, by_tlv.error_code) == (
        "26", Status.UNDELIVERED, "dlr:000",
    )  # fmt: skip
    wild = receipt_of("c", _receipt_pdu("id:77 stat:EXPIRED err:045", tlv_id="77"))
    assert wild is not None and wild.status == Status.EXPIRED and wild.error_code == "dlr:045"
    enroute = receipt_of("c", _receipt_pdu("id:77 stat:ENROUTE err:000"))
    assert enroute is None  # not final: ends nothing
