"""SMPP codec throughput against a speed-of-light reference.

    python -m bench.smpp_codec [--seconds 0.1]

Measures encodes and decodes per second of a submit_sm (an MT as the router
sends it to a carrier) and a deliver_sm (a delivery receipt with its
receipted_message_id and message_state TLVs, as carriers send them back),
with ``connectors.smpp.codec`` and with a minimal codec written inline
below: precompiled ``struct`` plus ``bytes.index``, no validation, no
objects built: PDU attributes in, a tuple of fields out.  That reference is about as fast as pure Python
gets for this layout; the codec's target is at least half its speed
(``*_ratio`` >= 0.5).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import timeit
from collections.abc import Callable
from typing import Any

from smsrouter.connectors.smpp import (
    DeliverSm,
    MessageState,
    SubmitSm,
    Tag,
    decode,
    encode,
    set_tlv,
)

# ---------------------------------------------------------------------------
# The reference: the same submit_sm/deliver_sm layout (SMPP 3.4 §4.4.1,
# §4.6.1), nothing checked.

_HEADER = struct.Struct(">IIII")
_TWO = struct.Struct(">BB")
_THREE = struct.Struct(">BBB")
_FIVE = struct.Struct(">BBBBB")
_TLV = struct.Struct(">HH")


def ref_encode(pdu: SubmitSm | DeliverSm) -> bytes:
    body = b"".join(
        (
            pdu.service_type.encode("latin-1"),
            b"\0",
            _TWO.pack(pdu.source_addr_ton, pdu.source_addr_npi),
            pdu.source_addr.encode("latin-1"),
            b"\0",
            _TWO.pack(pdu.dest_addr_ton, pdu.dest_addr_npi),
            pdu.destination_addr.encode("latin-1"),
            b"\0",
            _THREE.pack(pdu.esm_class, pdu.protocol_id, pdu.priority_flag),
            pdu.schedule_delivery_time.encode("latin-1"),
            b"\0",
            pdu.validity_period.encode("latin-1"),
            b"\0",
            _FIVE.pack(
                pdu.registered_delivery,
                pdu.replace_if_present_flag,
                pdu.data_coding,
                pdu.sm_default_msg_id,
                len(pdu.short_message),
            ),
            pdu.short_message,
            *[_TLV.pack(tag, len(value)) + value for tag, value in pdu.tlvs.items()],
        )
    )
    return _HEADER.pack(16 + len(body), pdu.command_id, 0, pdu.sequence_number) + body


def ref_decode(data: bytes) -> tuple[Any, ...]:
    _, command_id, status, seq = _HEADER.unpack_from(data)
    index = data.index
    z = index(b"\0", 16)
    st = data[16:z].decode("latin-1")
    ston, snpi = _TWO.unpack_from(data, z + 1)
    p = z + 3
    z = index(b"\0", p)
    sa = data[p:z].decode("latin-1")
    dton, dnpi = _TWO.unpack_from(data, z + 1)
    p = z + 3
    z = index(b"\0", p)
    da = data[p:z].decode("latin-1")
    esm, pid, prio = _THREE.unpack_from(data, z + 1)
    p = z + 4
    z = index(b"\0", p)
    sdt = data[p:z].decode("latin-1")
    p = z + 1
    z = index(b"\0", p)
    vp = data[p:z].decode("latin-1")
    rd, rip, dc, smid, sml = _FIVE.unpack_from(data, z + 1)
    p = z + 6
    sm = data[p : p + sml]
    p += sml
    tlvs = {}
    n = len(data)
    while p < n:
        tag, length = _TLV.unpack_from(data, p)
        tlvs[tag] = data[p + 4 : p + 4 + length]
        p += 4 + length
    fields = (st, ston, snpi, sa, dton, dnpi, da, esm, pid, prio, sdt, vp, rd, rip, dc, smid, sm)
    return command_id, status, seq, fields, tlvs


# ---------------------------------------------------------------------------
# The samples


def _submit_sm() -> SubmitSm:
    return SubmitSm(
        sequence_number=123456,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="14155550101",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="14155550123",
        registered_delivery=1,
        short_message=b"Your verification code is 482913. It expires in 10 minutes.",
    )


def _deliver_sm() -> DeliverSm:
    pdu = DeliverSm(
        sequence_number=98765,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="14155550123",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="14155550101",
        esm_class=0x04,
        short_message=(
            b"id:0123456789abcdef sub:001 dlvrd:001 submit date:2401011200 "
            b"done date:2401011201 stat:DELIVRD err:000 text:Your verification"
        ),
    )
    set_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID, "0123456789abcdef")
    set_tlv(pdu, Tag.MESSAGE_STATE, MessageState.DELIVERED)
    return pdu


def _fields(pdu: SubmitSm | DeliverSm) -> tuple[Any, ...]:
    return (
        pdu.service_type,
        pdu.source_addr_ton,
        pdu.source_addr_npi,
        pdu.source_addr,
        pdu.dest_addr_ton,
        pdu.dest_addr_npi,
        pdu.destination_addr,
        pdu.esm_class,
        pdu.protocol_id,
        pdu.priority_flag,
        pdu.schedule_delivery_time,
        pdu.validity_period,
        pdu.registered_delivery,
        pdu.replace_if_present_flag,
        pdu.data_coding,
        pdu.sm_default_msg_id,
        pdu.short_message,
    )


def per_second(
    ours: Callable[[], object], ref: Callable[[], object], seconds: float
) -> tuple[float, float]:
    """Best rate of each of ``ours`` and ``ref``, timed in alternation.

    Alternating the repeats keeps a load change on the machine from landing
    on one side only, which would skew the ratio.
    """
    timers = [timeit.Timer(ours), timeit.Timer(ref)]
    numbers = []
    for timer in timers:
        number, elapsed = timer.autorange()
        numbers.append(max(1, int(number * seconds / max(elapsed, 1e-9))))
    best = [float("inf"), float("inf")]
    for _ in range(7):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer.timeit(numbers[i]) / numbers[i])
    return 1 / best[0], 1 / best[1]


def measure(name: str, pdu: SubmitSm | DeliverSm, seconds: float) -> dict[str, float]:
    wire = encode(pdu)
    # Both codecs do the same work: the same PDU object in, the same octets
    # out; the same octets in, the same field values back (the reference
    # returns them in a tuple rather than building a PDU object).
    assert ref_encode(pdu) == wire
    assert ref_decode(wire) == (pdu.command_id, 0, pdu.sequence_number, _fields(pdu), pdu.tlvs)
    assert decode(wire) == pdu

    ours_encode, ref_enc = per_second(lambda: encode(pdu), lambda: ref_encode(pdu), seconds)
    ours_decode, ref_dec = per_second(lambda: decode(wire), lambda: ref_decode(wire), seconds)
    return {
        f"{name}_octets": len(wire),
        f"{name}_encode_per_s": round(ours_encode),
        f"{name}_decode_per_s": round(ours_decode),
        f"{name}_ref_encode_per_s": round(ref_enc),
        f"{name}_ref_decode_per_s": round(ref_dec),
        f"{name}_encode_ratio": round(ours_encode / ref_enc, 3),
        f"{name}_decode_ratio": round(ours_decode / ref_dec, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.1, help="seconds per timed repeat")
    args = parser.parse_args()
    result: dict[str, object] = {
        "bench": "smpp_codec",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
    result.update(measure("submit_sm", _submit_sm(), args.seconds))
    result.update(measure("deliver_sm", _deliver_sm(), args.seconds))
    ratios = [v for k, v in result.items() if k.endswith("_ratio")]
    result["min_ratio"] = min(ratios)  # type: ignore[type-var]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
