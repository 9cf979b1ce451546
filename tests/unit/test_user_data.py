"""A short-message PDU's user data (connectors/smpp/user_data.py): octets,
UDH as sent or as the SAR TLVs stand for it, and the concatenation."""

from __future__ import annotations

import pytest

from smsrouter.connectors.carriers import mo_parts
from smsrouter.connectors.smpp import DeliverSm, SubmitSm, Tag, set_tlv
from smsrouter.connectors.smpp.user_data import message_octets, user_data
from smsrouter.sms.text import Concat, concat_udh


def _sar(pdu: SubmitSm | DeliverSm, ref: int, total: int, seq: int) -> None:
    set_tlv(pdu, Tag.SAR_MSG_REF_NUM, ref)
    set_tlv(pdu, Tag.SAR_TOTAL_SEGMENTS, total)
    set_tlv(pdu, Tag.SAR_SEGMENT_SEQNUM, seq)


def test_plain_short_message_or_message_payload() -> None:
    assert user_data(SubmitSm(short_message=b"hi")) == (b"hi", None, None)
    long = SubmitSm()
    set_tlv(long, Tag.MESSAGE_PAYLOAD, b"x" * 300)
    assert message_octets(long) == b"x" * 300
    assert user_data(long) == (b"x" * 300, None, None)


def test_udhi_splits_the_header_as_sent() -> None:
    header = concat_udh(0x1234, 3, 2, sixteen_bit=True)
    pdu = SubmitSm(esm_class=0x40, short_message=header + b"part")
    assert user_data(pdu) == (b"part", header, Concat(0x1234, 3, 2))
    # A header without a concatenation element travels as it is.
    other = bytes((3, 0x24, 1, 0x01))  # TS 23.040 §9.2.3.24.16, national language
    assert user_data(SubmitSm(esm_class=0x40, short_message=other + b"x")) == (b"x", other, None)


@pytest.mark.parametrize("short_message", [b"", b"\x09\x00\x03\x01", b"\x02\x00\x03"])
def test_a_header_that_does_not_fit_is_refused(short_message: bytes) -> None:
    with pytest.raises(ValueError):
        user_data(SubmitSm(esm_class=0x40, short_message=short_message))


@pytest.mark.parametrize(
    ("ref", "sixteen_bit"), [(7, False), (0xFF, False), (0x100, True), (0xFFFF, True)]
)
def test_sar_tlvs_become_the_header_they_stand_for(ref: int, sixteen_bit: bool) -> None:
    pdu = SubmitSm(short_message=b"part")
    _sar(pdu, ref, 3, 3)
    assert user_data(pdu) == (
        b"part",
        concat_udh(ref, 3, 3, sixteen_bit=sixteen_bit),
        Concat(ref, 3, 3),
    )


@pytest.mark.parametrize(("total", "seq"), [(3, 0), (3, 4), (0, 0)])
def test_sar_tlvs_a_receiver_ignores_give_no_header(total: int, seq: int) -> None:
    pdu = SubmitSm(short_message=b"part")
    _sar(pdu, 9, total, seq)
    assert user_data(pdu) == (b"part", None, None)


def test_sar_tlvs_need_all_three() -> None:
    pdu = SubmitSm(short_message=b"part")
    set_tlv(pdu, Tag.SAR_MSG_REF_NUM, 9)
    set_tlv(pdu, Tag.SAR_TOTAL_SEGMENTS, 2)
    assert user_data(pdu) == (b"part", None, None)


def test_an_mo_keeps_a_header_that_does_not_fit_as_its_text() -> None:
    assert mo_parts(DeliverSm(esm_class=0x40, short_message=b"\x09ab")) == (b"\x09ab", None)
    udh = DeliverSm(esm_class=0x40, short_message=concat_udh(5, 2, 1) + b"one")
    assert mo_parts(udh) == (b"one", (5, 2, 1))
    sar = DeliverSm(short_message=b"two")
    _sar(sar, 5, 2, 2)
    assert mo_parts(sar) == (b"two", (5, 2, 2))
