"""What a submit_sm or deliver_sm carries for the handset: its octets, the
user data header that leads them or the SAR TLVs standing in for one, and
its text.

The header itself and the concatenation element are 3GPP TS 23.040's
(smsrouter.sms.text); SMPP 3.4 adds where they travel: short_message or the
message_payload TLV (§5.3.2.32), the esm_class UDHI bit (§5.2.12) saying a
header leads them, or the sar_msg_ref_num, sar_total_segments and
sar_segment_seqnum TLVs (§5.3.2.22-24) instead of a header.
"""

from __future__ import annotations

from smsrouter.sms.text import (
    Concat,
    Encoding,
    concat_info,
    concat_udh,
    decode_short_message,
    split_udh,
)

from .constants import ESM_CLASS_UDHI, Tag
from .pdu import ShortMessagePdu, get_tlv

__all__ = ["message_octets", "smpp_text", "user_data"]

# SMPP 3.4 §5.2.19: data_coding values and the alphabet we store the text in.
_ENCODING_OF_DATA_CODING = {
    0: Encoding.GSM7,
    1: Encoding.GSM7,
    3: Encoding.LATIN1,
    8: Encoding.UCS2,
}


def message_octets(pdu: ShortMessagePdu) -> bytes:
    """short_message, or the message_payload TLV (§5.3.2.32) when it is empty."""
    payload = pdu.short_message
    if not payload:
        long_payload = get_tlv(pdu, Tag.MESSAGE_PAYLOAD)
        payload = long_payload if isinstance(long_payload, bytes) else b""
    return payload


def user_data(pdu: ShortMessagePdu) -> tuple[bytes, bytes | None, Concat | None]:
    """(payload, header, concatenation) of a submit_sm or deliver_sm.

    With UDHI set, the header is the one the message starts with, as sent,
    and the payload what follows it. Without, SAR TLVs become the header
    they stand for (TS 23.040 §9.2.3.24.1, or §9.2.3.24.8 for a reference
    above 255), so that a part travels on in whichever form the next hop
    takes; SAR TLVs that TS 23.040 would have the receiver ignore (a
    sequence number of 0 or above the total) give no header. The
    concatenation is that of the header, or None.

    Raises ValueError when UDHI is set and the header does not fit.
    """
    payload = message_octets(pdu)
    if pdu.esm_class & ESM_CLASS_UDHI:
        ies, body = split_udh(payload)
        return body, payload[: len(payload) - len(body)], concat_info(ies)
    ref = get_tlv(pdu, Tag.SAR_MSG_REF_NUM)
    total = get_tlv(pdu, Tag.SAR_TOTAL_SEGMENTS)
    seq = get_tlv(pdu, Tag.SAR_SEGMENT_SEQNUM)
    if not (isinstance(ref, int) and isinstance(total, int) and isinstance(seq, int)):
        return payload, None, None
    if not 1 <= seq <= total <= 255:
        return payload, None, None
    return payload, concat_udh(ref, total, seq, sixteen_bit=ref > 0xFF), Concat(ref, total, seq)


def smpp_text(data_coding: int, payload: bytes) -> tuple[str, Encoding | str]:
    """An ESME's short_message as text plus the alphabet to re-encode it in.

    Text in a data_coding we do not re-encode (8-bit binary, national
    alphabets) is kept as Latin-1 of its bytes, which maps every byte to one
    code point and back, so the carrier receives exactly what the ESME sent.
    """
    encoding = _ENCODING_OF_DATA_CODING.get(data_coding)
    if encoding is None:
        return payload.decode("latin-1"), "binary"
    return decode_short_message(data_coding, payload), encoding
