"""A carrier's SMSC, simulated: binds, submit_sm, receipts, MO and faults.

Runs as `smsrouter sim carrier --port N`, inside a test, or inside the demo
daemon (`[[simulators]]`). With no options it accepts every bind (or those
matching `system_id`/`password`), answers each submit_sm at once with a hex
message id and sends a DELIVRD receipt after half a second; every knob below
moves one thing away from that:

* per-bind throughput limit (`tps`): a token bucket per bind; a submit_sm
  over it gets ESME_RTHROTTLED (0x58);
* submit_sm_resp latency (`resp_latency`) and command_status mix (`errors`);
* receipts: delay (`receipt_delay`), stat word / err mix (`receipts`),
  message ids in hex or decimal (`id_format`, `receipt_id_format`), receipts
  that overtake their submit_sm_resp (`receipt_first`), receipts as text,
  TLVs or both (`receipt_forms`);
* outages on command: `drop_binds()`, `refuse_binds(seconds)`,
  `stall(seconds)`;
* mobile-originated messages: `send_mo()`, multi-part ones included;
* a control API over HTTP (`control_port`, see sims/control.py);
* SMPP over TLS (`tls_cert`, `tls_key`), as carriers that require it offer.

It records every submit_sm it accepted (`submits`, or only counts with
`record="count"`) and counts duplicates, so tests and load runs can check
loss and double sends.

The hot path is built to stay out of a load test's way: submit_sm frames are
cut from the TCP stream and answered here without building PDU objects,
responses to one read go out in one write, and receipts and delayed
responses wait in a timer wheel released by one periodic callback instead of
a task each. Everything else (binds, enquire_link, unbind, malformed PDUs,
MO) goes through the sans-IO session as usual. `bench/sim_carrier.py`
measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import re
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, overload

import structlog

from smsrouter.connectors.listeners import bound_port
from smsrouter.connectors.smpp import (
    ESM_CLASS_UDHI,
    BindReceiver,
    BindState,
    BindTransceiver,
    BindTransmitter,
    CommandId,
    CommandStatus,
    Pdu,
    Role,
    SubmitSm,
    Tag,
    decode,
    encode,
)
from smsrouter.connectors.smpp.receipt import ReceiptStatus, normalize_stat, state_from_status
from smsrouter.connectors.smpp.user_data import message_octets
from smsrouter.connectors.smpp_link import SmppLink
from smsrouter.router.tls import server_context
from smsrouter.sims.distributions import Delay, Mix, parse_delay, parse_mix, status_of
from smsrouter.sms.text import decode_short_message, split_udh

if TYPE_CHECKING:
    from smsrouter.router.config import SimulatorConfig
    from smsrouter.sims.control import ControlApi

log = structlog.get_logger("sim.carrier")

T = TypeVar("T")

_HEADER: Final = struct.Struct(">IIII")
_TLV_HEAD: Final = struct.Struct(">HH")
_SUBMIT_SM: Final = int(CommandId.SUBMIT_SM)
_SUBMIT_SM_RESP: Final = int(CommandId.SUBMIT_SM_RESP)
_DELIVER_SM: Final = int(CommandId.DELIVER_SM)
_DELIVER_SM_RESP: Final = int(CommandId.DELIVER_SM_RESP)
_GENERIC_NACK: Final = int(CommandId.GENERIC_NACK)
_SUBMITTING: Final = frozenset({BindState.BOUND_TX, BindState.BOUND_TRX})
_RECEIVING: Final = frozenset({BindState.BOUND_RX, BindState.BOUND_TRX})

# data_coding 0 (GSM 03.38 here, CONTRACT §4), 1 (IA5/ASCII), 3 (Latin-1),
# and the octets that mean the same character in all three: space to "#",
# "%" to "?", "A" to "Z", "a" to "z" (TS 23.038 §6.2.1 differs on "$", "@",
# "[" to "`" and above "z").
_ASCII_LIKE: Final = frozenset({0, 1, 3})
_PLAIN: Final = bytes(
    [*range(0x20, 0x24), *range(0x25, 0x40), *range(0x41, 0x5B), *range(0x61, 0x7B)]
)
_RECEIPTED_ID: Final = int(Tag.RECEIPTED_MESSAGE_ID)
# §5.3.2.31 network_error_code: network type 3 is GSM.
_NETWORK_GSM: Final = 3

# §5.1.4 leaves sequence numbers to the sender; they only have to differ
# among its outstanding requests on a connection. The session numbers the
# requests it sends (enquire_link, MO) upwards from 1, so the receipts the
# hot path writes without it count down from the top of the range to its
# middle and start again: the two would meet after 2^30 session requests
# on one connection, and a wrapped number is long answered (a window holds
# far fewer than 2^30).
_RECEIPT_SEQ_TOP: Final = 0x7FFFFFFF
_RECEIPT_SEQ_FLOOR: Final = 0x40000000

#: Receipts that wait for a receiving bind (none bound, or all windows full)
#: are dropped after this long, as an SMSC's retry period ends.
DEFAULT_RECEIPT_TTL: Final = 300.0
#: A receipt answered with an error status (the router could not store it:
#: ESME_RX_T_APPN) is sent again after this long.
RECEIPT_RETRY_DELAY: Final = 1.0


# ---------------------------------------------------------------------------
# What the carrier saw


# The mandatory part of a submit_sm body up to short_message (§4.4.1):
# service_type (C-Octet String, Var. max 6 with its NUL), source TON and
# NPI, source_addr (Var. max 21), destination TON and NPI,
# destination_addr (Var. max 21), esm_class, protocol_id, priority_flag,
# schedule_delivery_time and validity_period (NULL or 17 octets, §7.1),
# registered_delivery, replace_if_present_flag, data_coding,
# sm_default_msg_id, sm_length. The empty groups mark where the address
# blocks start and end. One match in C costs less than a find() per field.
_SUBMIT_BODY: Final = re.compile(
    rb"[^\0]{0,5}\0()..[^\0]{0,20}\0()..[^\0]{0,20}\0()...[^\0]{0,16}\0[^\0]{0,16}\0.....",
    re.DOTALL,
)


def _submit_layout(frame: bytes, ref_tag: int) -> tuple[Any, ...] | None:
    """Where the fields the simulator needs sit in a submit_sm (SMPP 3.4 §4.4.1).

    Returns (source block start, destination block start, addresses end,
    esm_class, registered_delivery, data_coding, short_message start, its
    end, value of TLV `ref_tag` or b""), or None when the body does not
    parse within the §4.4.1 sizes: the session's codec then answers it with
    the right error. An address block is TON, NPI and the C-Octet String.
    """
    match = _SUBMIT_BODY.match(frame, 16)
    if match is None:
        return None
    (_, sm_start), (src, _), (dst, _), (addr_end, _) = match.regs
    sm_end = sm_start + frame[sm_start - 1]
    n = len(frame)
    if sm_end > n:
        return None
    ref = b""
    p = sm_end
    while p < n:  # optional parameters (§5.3.1): check the stream, find ref_tag
        if p + 4 > n:
            return None
        tag, length = _TLV_HEAD.unpack_from(frame, p)
        stop = p + 4 + length
        if stop > n:
            return None
        if tag == ref_tag:
            ref = frame[p + 4 : stop]
        p = stop
    return (
        src,
        dst,
        addr_end,
        frame[addr_end],
        frame[sm_start - 5],
        frame[sm_start - 3],
        sm_start,
        sm_end,
        ref,
    )


def parse_receipt_forms(text: str) -> dict[str, float]:
    """``text``, ``tlv``, ``both``, ``mixed`` (a third each) or weights ``text=1,both=3``."""
    word = text.strip().lower()
    if word in ("text", "tlv", "both"):
        return {word: 1.0}
    if word == "mixed":
        return {"text": 1.0, "tlv": 1.0, "both": 1.0}
    return parse_mix(word, str)


def check_config(cfg: SimulatorConfig) -> None:
    """Refuse a ``[[simulators]]`` entry the simulator could not run with:
    ValueError for a bad delay, weight, command_status or receipt form. The
    daemon's loader reports it as a config error naming the entry."""
    parse_delay(cfg.receipt_delay)
    parse_delay(cfg.resp_latency)
    Mix(cfg.receipts)
    Mix(cfg.receipt_forms)
    if not set(cfg.receipt_forms) <= {"text", "tlv", "both"}:
        raise ValueError("receipt_forms keys are text, tlv and both")
    for status in cfg.errors:
        status_of(status)
    if cfg.errors:
        Mix(cfg.errors)
    if not 0.0 <= cfg.receipt_first <= 1.0:
        raise ValueError("receipt_first is a probability, 0..1")
    if cfg.tps < 0:
        raise ValueError("tps must be 0 (no limit) or positive")


class AcceptedSubmit:
    """What the carrier saw of one submit_sm it accepted.

    A view over the PDU's octets, decoded on first look. The attributes are
    those of the submit_sm (`source_addr`, `destination_addr`, ...), plus
    the carrier's `message_id`, the `system_id` of the bind and `at`.
    """

    __slots__ = ("_pdu", "frame", "message_id", "received_at", "system_id")

    def __init__(self, message_id: str, system_id: str, frame: bytes, received_at: float) -> None:
        self.message_id = message_id
        self.system_id = system_id
        self.frame = frame
        #: time.time() when it arrived.
        self.received_at = received_at
        self._pdu: SubmitSm | None = None

    @property
    def pdu(self) -> SubmitSm:
        if self._pdu is None:
            pdu = decode(self.frame)
            assert isinstance(pdu, SubmitSm)
            self._pdu = pdu
        return self._pdu

    @property
    def source_addr(self) -> str:
        return self.pdu.source_addr

    @property
    def source_addr_ton(self) -> int:
        return self.pdu.source_addr_ton

    @property
    def source_addr_npi(self) -> int:
        return self.pdu.source_addr_npi

    @property
    def destination_addr(self) -> str:
        return self.pdu.destination_addr

    @property
    def dest_addr_ton(self) -> int:
        return self.pdu.dest_addr_ton

    @property
    def dest_addr_npi(self) -> int:
        return self.pdu.dest_addr_npi

    @property
    def data_coding(self) -> int:
        return self.pdu.data_coding

    @property
    def esm_class(self) -> int:
        return self.pdu.esm_class

    @property
    def short_message(self) -> bytes:
        return self.pdu.short_message

    @property
    def registered_delivery(self) -> int:
        return self.pdu.registered_delivery

    @property
    def tlvs(self) -> dict[int, bytes]:
        return self.pdu.tlvs

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.received_at, UTC)

    @property
    def text(self) -> str:
        """The user's text: short_message, or message_payload (§5.3.2.32) when that is empty."""
        pdu = self.pdu
        payload = message_octets(pdu)
        if pdu.esm_class & ESM_CLASS_UDHI and payload:
            with contextlib.suppress(ValueError):
                _, payload = split_udh(payload)
        return decode_short_message(pdu.data_coding, payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AcceptedSubmit):
            return NotImplemented
        return (self.message_id, self.system_id, self.frame, self.received_at) == (
            other.message_id,
            other.system_id,
            other.frame,
            other.received_at,
        )

    def __hash__(self) -> int:
        return hash((self.message_id, self.frame))

    def __repr__(self) -> str:
        return (
            f"AcceptedSubmit(message_id={self.message_id!r}, system_id={self.system_id!r}, "
            f"source_addr={self.source_addr!r}, destination_addr={self.destination_addr!r}, "
            f"text={self.text!r})"
        )


class SubmitLog(Sequence[AcceptedSubmit]):
    """Every submit_sm the carrier accepted, oldest first, as AcceptedSubmit views.

    Kept as plain tuples of strings, bytes and a float, which CPython's
    cyclic garbage collector stops tracking after its first look, so a
    million records cost it next to nothing; as many objects are scanned
    again at every full collection (measured: 1 to 2.5 µs more per
    submit_sm over a million of them, a tenth to a quarter of the hot path).
    """

    __slots__ = ("_entries",)

    def __init__(self, submits: Iterable[AcceptedSubmit] = ()) -> None:
        self._entries: list[tuple[str, str, bytes, float]] = []
        for submit in submits:
            self.append(submit)

    def append(self, submit: AcceptedSubmit) -> None:
        self._entries.append(
            (submit.message_id, submit.system_id, submit.frame, submit.received_at)
        )

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> AcceptedSubmit: ...

    @overload
    def __getitem__(self, index: slice) -> list[AcceptedSubmit]: ...

    def __getitem__(self, index: int | slice) -> AcceptedSubmit | list[AcceptedSubmit]:
        if isinstance(index, slice):
            return [AcceptedSubmit(*entry) for entry in self._entries[index]]
        return AcceptedSubmit(*self._entries[index])

    def __iter__(self) -> Iterator[AcceptedSubmit]:
        for entry in self._entries:
            yield AcceptedSubmit(*entry)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SubmitLog):
            return self._entries == other._entries
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One receipt outcome of the mix: stat word and err code (SMPP 3.4 Appendix B)."""

    stat: bytes
    err: bytes
    delivered: bool
    #: The receipt text between the id and the submit date, and between the
    #: done date and the message's first words (Appendix B layout).
    after_id: bytes
    after_done: bytes
    #: message_state TLV (§5.3.2.35) and, for a non-zero err, network_error_code (§5.3.2.31).
    tlvs: bytes

    @classmethod
    def of(cls, key: str) -> _Outcome:
        """From ``STAT`` or ``STAT:ERR``: the stat word as sent (odd ones too), the err code."""
        stat, _, err = key.strip().partition(":")
        if not stat:
            raise ValueError(f"receipt outcome {key!r}: no stat word")
        status = normalize_stat(stat)
        delivered = status is ReceiptStatus.DELIVERED
        err = err.strip() or ("000" if delivered else "001")
        tlvs = _TLV_HEAD.pack(Tag.MESSAGE_STATE, 1) + bytes([state_from_status(status)])
        if err.isdigit() and 0 < int(err) <= 0xFFFF:
            tlvs += _TLV_HEAD.pack(Tag.NETWORK_ERROR_CODE, 3) + struct.pack(
                ">BH", _NETWORK_GSM, int(err)
            )
        stat_octets, err_octets = stat.encode("ascii"), err.encode("ascii")
        # dlvrd counts the parts delivered: 001 or 000 for one submit_sm.
        return cls(
            stat_octets,
            err_octets,
            delivered,
            b" sub:001 dlvrd:%b submit date:" % (b"001" if delivered else b"000"),
            b" stat:%b err:%b text:" % (stat_octets, err_octets),
            tlvs,
        )


# ---------------------------------------------------------------------------
# Timer wheel


# A receipt to send, as one tuple rather than an object (see SubmitLog):
# (due, since, message_id, system_id, frame, layout, outcome, form, received_at),
# `since` being when it first became due (for receipt_ttl) and `outcome` an
# index into the simulator's outcomes.
_Receipt = tuple[float, float, str, str, bytes, tuple[Any, ...], int, str, float]
_SINCE: Final = 1
_SYSTEM: Final = 3


def _due_of_receipt(receipt: _Receipt) -> float:
    return receipt[0]


def _due_of_response(entry: tuple[float, CarrierLink, bytes]) -> float:
    return entry[0]


class _Wheel(Generic[T]):
    """Items due at a time, in buckets of `resolution` seconds of the clock.

    Adding is a dict lookup and an append; a heap holds only bucket numbers,
    so its work grows with the number of distinct buckets, not of items.
    Each item knows its own due time (`due_of`), so a bucket is a plain list
    of items. Nothing is released before it is due.
    """

    __slots__ = ("_buckets", "_due_of", "_keys", "_resolution", "size")

    def __init__(self, resolution: float, due_of: Callable[[T], float]) -> None:
        self._resolution = resolution
        self._due_of = due_of
        self._buckets: dict[int, list[T]] = {}
        self._keys: list[int] = []
        self.size = 0

    def add(self, due: float, item: T) -> None:
        key = int(due // self._resolution)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [item]
            heapq.heappush(self._keys, key)
        else:
            bucket.append(item)
        self.size += 1

    def pop_due(self, now: float) -> list[T]:
        current = int(now // self._resolution)
        keys = self._keys
        out: list[T] = []
        while keys and keys[0] < current:
            out += self._buckets.pop(heapq.heappop(keys))
        if keys and keys[0] == current:
            due_of = self._due_of
            bucket = self._buckets[current]
            out += [item for item in bucket if due_of(item) <= now]
            later = [item for item in bucket if due_of(item) > now]
            if later:
                self._buckets[current] = later
            else:
                del self._buckets[current]
                heapq.heappop(keys)
        self.size -= len(out)
        return out

    def drain(self) -> list[T]:
        out = [item for bucket in self._buckets.values() for item in bucket]
        self._buckets.clear()
        self._keys.clear()
        self.size = 0
        return out


# ---------------------------------------------------------------------------
# One connection


class CarrierLink(SmppLink):
    """An SmppLink whose submit_sm and receipt responses take the simulator's fast path."""

    def __init__(self, sim: CarrierSimulator) -> None:
        super().__init__(Role.SMSC, sim, window=1024, enquire_link_interval=30.0)
        self.sim = sim
        self._rest = b""
        # Once framing is lost the session owns the stream (it answers
        # generic_nack and closes, SMPP 3.4 §4.3.1).
        self._session_only = False
        self.paused = False
        #: Receipts written and not yet answered: sequence_number → (receipt, sent at).
        self.receipts_out: dict[int, tuple[_Receipt, float]] = {}
        self.tokens = 0.0
        self.tokens_at = 0.0
        #: The bound system_id ("" before the bind).
        self.system_id = ""

    @property
    def receiving(self) -> bool:
        return self.session.state in _RECEIVING and self.is_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.sim.stalled:
            self.pause()

    def pause(self) -> None:
        if not self.paused and self.is_open:
            self.paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.is_open:
                self._transport.resume_reading()  # type: ignore[union-attr]

    def write_raw(self, data: bytes) -> None:
        if self.is_open:
            self._write(data)

    def data_received(self, data: bytes) -> None:
        if self._session_only:
            super().data_received(data)
            return
        buf = self._rest + data if self._rest else data
        n = len(buf)
        pos = 0
        sim = self.sim
        session = self.session
        max_size = session.max_pdu_size
        can_submit = session.state in _SUBMITTING
        receipts_out = self.receipts_out
        on_submit = sim._on_submit
        now = sim.clock()
        out: list[bytes] = []
        unpack = _HEADER.unpack_from
        freed = False
        self._last_rx = self._clock()
        while n - pos >= 16:
            length, command_id, status, seq = unpack(buf, pos)
            if length < 16 or length > max_size:
                if out:
                    self.write_raw(b"".join(out))
                self._rest = b""
                self._session_only = True
                super().data_received(buf[pos:])
                return
            end = pos + length
            if end > n:
                break
            if command_id == _SUBMIT_SM and can_submit:
                answer = on_submit(self, buf[pos:end], seq, now)
                if answer is not None:
                    if answer:
                        out.append(answer)
                    pos = end
                    continue
            elif command_id in (_DELIVER_SM_RESP, _GENERIC_NACK):
                entry = receipts_out.pop(seq, None)
                if entry is not None:
                    sim._receipt_answered(entry[0], status, now)
                    freed = True
                    pos = end
                    continue
            # Everything else is the session's: binds, enquire_link, unbind,
            # responses to MO, malformed PDUs. Our answers so far go first.
            if out:
                self.write_raw(b"".join(out))
                out = []
            super().data_received(buf[pos:end])
            pos = end
            if session.closed or not self.is_open:
                self._rest = b""
                return
            can_submit = session.state in _SUBMITTING
        self._rest = buf[pos:] if pos < n else b""
        if out:
            self.write_raw(b"".join(out))
        if freed and sim._backlog:
            sim._drain_backlog(now)


# ---------------------------------------------------------------------------
# The simulator


@dataclass
class CarrierSimulator:
    """A carrier SMSC on 127.0.0.1; see the module docstring for the knobs."""

    system_id: str = ""
    password: str = ""
    #: Seconds from submit_sm to its receipt: a number, or a Delay / its text
    #: form ("0.1-0.5", "exp:0.2"; sims/distributions.py).
    receipt_delay: float | str | Delay = 0.5
    #: Receipt outcome → weight. An outcome is a stat word, sent as written
    #: (DELIVRD, UNDELIV, or field spellings such as DELIVERED, FAILED,
    #: EXPIRD), optionally with its err code: "UNDELIV:034". Without one,
    #: err is 000 for a delivered stat word and 001 otherwise.
    receipts: dict[str, float] = field(default_factory=lambda: {"DELIVRD": 1.0})
    seed: int | None = None
    submits: SubmitLog = field(default_factory=SubmitLog)
    #: submit_sm per second per bind; 0 = no limit. Over it: ESME_RTHROTTLED.
    tps: float = 0.0
    #: Token bucket capacity; None = one second of `tps`, at least 1.
    tps_burst: float | None = None
    #: Delay before each submit_sm_resp (a number, a Delay or its text form).
    resp_latency: float | str | Delay = 0.0
    #: command_status → weight for submit_sm_resp ("0x58" keys from TOML too).
    #: Temporary ones a router retries: 0x08 RSYSERR, 0x14 RMSGQFUL,
    #: 0x58 RTHROTTLED, 0x64 RX_T_APPN; permanent: 0x0B RINVDSTADR,
    #: 0x65 RX_P_APPN, vendor codes from 0x400 (§5.1.3).
    errors: Mapping[int, float] | Mapping[str, float] = field(default_factory=lambda: {0: 1.0})
    #: Message ids in submit_sm_resp, counted from 1.
    id_format: Literal["hex", "decimal"] = "hex"
    #: The base of the ids in receipts (text and receipted_message_id);
    #: None = as id_format. Some SMSCs answer hex and receipt decimal.
    receipt_id_format: Literal["hex", "decimal"] | None = None
    #: Probability that a receipt is written before its submit_sm_resp.
    receipt_first: float = 0.0
    #: "text" | "tlv" | "both" → weight: where a receipt carries its id and
    #: state (Appendix B text, receipted_message_id + message_state TLVs).
    receipt_forms: Mapping[str, float] = field(default_factory=lambda: {"both": 1.0})
    #: "full" keeps every accepted submit_sm in `submits`; "count" only counts.
    record: Literal["full", "count"] = "full"
    #: The account a bind's system_id belongs to (None: itself): receipts go
    #: out on any receiving bind of the account, as a carrier's do when one
    #: customer binds from several hosts. Must map an account to itself.
    receipt_account: Callable[[str], str] | None = None
    #: A submit_sm whose source, destination and short_message were seen
    #: before is a duplicate, unless it carries a different value of this
    #: TLV (the sender's own reference: user_message_reference by default,
    #: or a vendor tag holding a router's message id).
    dedupe_tag: int = int(Tag.USER_MESSAGE_REFERENCE)
    #: Receipts in flight per receiving bind.
    window: int = 1024
    #: A receipt without an answer after this long is sent again.
    response_timeout: float = 30.0
    receipt_ttl: float = DEFAULT_RECEIPT_TTL
    #: Port of the HTTP control API on 127.0.0.1 (0 = any free one); None = none.
    control_port: int | None = None
    #: Monotonic clock of the bucket, the delays and the outages (tests inject one).
    clock: Callable[[], float] = time.monotonic
    #: Random source of every mix and delay; default random.Random(seed).
    rng: random.Random | None = None
    #: Resolution of the timer wheel, seconds of real time between its ticks.
    tick: float = 0.01
    #: With both (PEM paths or text): binds are served over TLS only.
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        self._rng = self.rng if self.rng is not None else random.Random(self.seed)
        self._receipt_delay = parse_delay(self.receipt_delay)
        self._resp_latency = parse_delay(self.resp_latency)
        self._outcome_list = [_Outcome.of(word) for word in self.receipts]
        self._outcomes: Mix[int] = Mix({i: w for i, w in enumerate(self.receipts.values())})
        statuses = Mix({status_of(k): w for k, w in self.errors.items()})
        self._statuses: Mix[int] | None = None if statuses.outcomes == [0] else statuses
        forms = Mix(dict(self.receipt_forms))
        if not set(forms.outcomes) <= {"text", "tlv", "both"}:
            raise ValueError(f"receipt forms are text, tlv and both, not {forms.outcomes}")
        self._forms: Mix[str] = forms
        # The usual single outcome and form, taken without a draw.
        self._outcome = self._outcomes.outcomes[0] if len(self._outcomes.outcomes) == 1 else None
        self._form = forms.outcomes[0] if len(forms.outcomes) == 1 else None
        self._delay_resps = not self._resp_latency.is_zero
        self._full = self.record == "full"
        if not 0.0 <= self.receipt_first <= 1.0:
            raise ValueError("receipt_first is a probability, 0..1")
        if self.tps < 0:
            raise ValueError("tps must be 0 (no limit) or positive")
        if self.id_format not in ("hex", "decimal"):
            raise ValueError(f"id_format is hex or decimal, not {self.id_format!r}")
        if self.receipt_id_format not in (None, "hex", "decimal"):
            raise ValueError(f"receipt_id_format is hex or decimal, not {self.receipt_id_format!r}")
        if self.record not in ("full", "count"):
            raise ValueError(f"record is full or count, not {self.record!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and its key")
        self._tls = server_context(self.tls_cert, self.tls_key) if self.tls_cert else None
        self._burst = self.tps_burst if self.tps_burst is not None else max(1.0, self.tps)
        self._format_id: Callable[[int], str] = "{:x}".format if self.id_format == "hex" else str
        receipt_base = self.receipt_id_format or self.id_format
        self._receipt_base_differs = receipt_base != self.id_format
        self._ids = itertools.count(1)
        self._receipt_seq = _RECEIPT_SEQ_TOP + 1
        self._server: asyncio.Server | None = None
        self._links: set[CarrierLink] = set()
        self._receivers: dict[str, list[CarrierLink]] = {}
        self._turn = 0
        self._receipts: _Wheel[_Receipt] = _Wheel(self.tick, _due_of_receipt)
        # Delayed answers: (due, link, octets).
        self._responses: _Wheel[tuple[float, CarrierLink, bytes]] = _Wheel(
            self.tick, _due_of_response
        )
        self._backlog: dict[str, deque[_Receipt]] = {}
        self._ticker: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self._ticks = 0  # turns of the wheel, for tests that wait for a few
        self._refuse_until: float | None = None
        self._stall_until: float | None = None
        self._dates: dict[int, bytes] = {}
        #: done date of the receipts being sent, refreshed before each batch.
        self._done_date = self._date(time.time())
        self.control: ControlApi | None = None
        self._reset_counters()

    @classmethod
    def from_config(cls, cfg: SimulatorConfig, **overrides: Any) -> CarrierSimulator:
        """The simulator a `[[simulators]]` entry describes."""
        options: dict[str, Any] = {
            "system_id": cfg.system_id,
            "password": cfg.password,
            "receipt_delay": cfg.receipt_delay,
            "receipts": dict(cfg.receipts),
            "seed": cfg.seed,
            "tps": cfg.tps,
            "resp_latency": cfg.resp_latency,
            "errors": dict(cfg.errors) or {0: 1.0},
            "id_format": cfg.id_format,
            "receipt_id_format": cfg.receipt_id_format,
            "receipt_first": cfg.receipt_first,
            "receipt_forms": dict(cfg.receipt_forms),
            "record": cfg.record,
            "control_port": cfg.control_port,
        }
        options.update(overrides)
        return cls(**options)

    def _reset_counters(self) -> None:
        self.received = 0  # submit_sm answered, refused ones included
        self.accepted = 0
        self.duplicates = 0
        self._seen: set[int] = set()
        self.refused: Counter[int] = Counter()  # command_status → count
        self.receipts_sent = 0
        self.receipts_refused: Counter[int] = Counter()
        self.receipts_dropped = 0
        self.mo_sent = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, host, port, reuse_address=True, ssl=self._tls
        )
        self._ticker = loop.call_later(self.tick, self._on_tick)
        if self.control_port is not None:
            from smsrouter.sims.control import ControlApi

            self.control = ControlApi(self)
            await self.control.start("127.0.0.1", self.control_port)

    def _accept(self) -> CarrierLink:
        link = CarrierLink(self)
        # Tracked from the connection on, not from its first PDU: drop_binds()
        # and stop() must also close connections that have not sent one yet.
        self._links.add(link)
        return link

    @property
    def port(self) -> int:
        return bound_port(self._server)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.control is not None:
            await self.control.stop()
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ outages

    def drop_binds(self) -> int:
        """Fault injection: close every connection at once; how many there were."""
        links = list(self._links)
        for link in links:
            link.close()
        return len(links)

    def refuse_binds(self, seconds: float) -> None:
        """Answer every bind with ESME_RBINDFAIL (§5.1.3) for `seconds` (0 ends it)."""
        self._refuse_until = self.clock() + seconds if seconds > 0 else None

    @property
    def refusing_binds(self) -> bool:
        return self._refuse_until is not None and self.clock() < self._refuse_until

    def stall(self, seconds: float) -> None:
        """Stop reading from every connection for `seconds` (0 ends it).

        Nothing is answered meanwhile, so each peer's window fills and its
        requests time out, as with an SMSC that hangs without dropping TCP.
        """
        if seconds <= 0:
            self._end_stall()
            return
        self._stall_until = self.clock() + seconds
        for link in self._links:
            link.pause()

    @property
    def stalled(self) -> bool:
        return self._stall_until is not None

    def _end_stall(self) -> None:
        self._stall_until = None
        for link in list(self._links):
            link.resume()

    # ------------------------------------------------------------ LinkHandler

    def on_closed(self, link: SmppLink) -> None:
        assert isinstance(link, CarrierLink)
        self._links.discard(link)
        receivers = self._receivers.get(self._account(link.system_id))
        if receivers is not None and link in receivers:
            receivers.remove(link)
        if link.receipts_out:
            # Unanswered receipts go out again on the next receiving bind,
            # as SMSCs retry them (the peer may see some twice).
            pending = [receipt for receipt, _ in link.receipts_out.values()]
            link.receipts_out.clear()
            account = self._account(link.system_id)
            self._backlog.setdefault(account, deque()).extendleft(reversed(pending))

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        assert isinstance(link, CarrierLink)
        self._links.add(link)
        if isinstance(pdu, SubmitSm):
            # Only reaches here when called directly: the link answers
            # submit_sm itself. One path for both.
            answer = self._on_submit(link, encode(pdu), pdu.sequence_number, self.clock())
            if answer:
                link.write_raw(answer)
        elif isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            self._bind(link, pdu)
        elif hasattr(pdu, "response"):
            link.send(pdu.response())

    def _bind(
        self, link: CarrierLink, pdu: BindTransmitter | BindReceiver | BindTransceiver
    ) -> None:
        if self.refusing_binds:
            link.send(pdu.response(command_status=CommandStatus.ESME_RBINDFAIL))
            return
        if self.system_id and pdu.system_id != self.system_id:
            link.send(pdu.response(command_status=CommandStatus.ESME_RINVSYSID))
            return
        if self.password and pdu.password != self.password:
            link.send(pdu.response(command_status=CommandStatus.ESME_RINVPASWD))
            return
        link.owner = link.system_id = pdu.system_id
        link.tokens = self._burst
        link.tokens_at = self.clock()
        link.send(pdu.response(system_id="simsmsc"))
        if not isinstance(pdu, BindTransmitter):
            account = self._account(pdu.system_id)
            self._receivers.setdefault(account, []).append(link)
            if self._backlog.get(account):
                self._drain_backlog(self.clock())

    # ------------------------------------------------------------ submit_sm

    def _on_submit(self, link: CarrierLink, frame: bytes, seq: int, now: float) -> bytes | None:
        """Answer one submit_sm frame: the octets to write now (receipt first,
        if it overtakes, then the submit_sm_resp), b"" when the answer is
        delayed, or None when the frame does not parse and the session must
        answer it."""
        layout = _submit_layout(frame, self.dedupe_tag)
        if layout is None:
            return None
        self.received += 1
        rng = self._rng
        if self.tps:
            # Token bucket per bind: refilled at `tps` per second of the
            # clock up to its capacity, one token per submit_sm.
            tokens = link.tokens + (now - link.tokens_at) * self.tps
            link.tokens_at = now
            if tokens > self._burst:
                tokens = self._burst
            if tokens < 1.0:
                link.tokens = tokens
                return self._refuse(link, seq, CommandStatus.ESME_RTHROTTLED, now)
            link.tokens = tokens - 1.0
        if self._statuses is not None:
            status = self._statuses.sample(rng)
            if status:
                return self._refuse(link, seq, status, now)
        message_id = self._format_id(next(self._ids))
        octets = message_id.encode()
        resp = _HEADER.pack(17 + len(octets), _SUBMIT_SM_RESP, 0, seq) + octets + b"\0"
        self.accepted += 1
        src, _, addr_end, _, registered, _, sm_start, sm_end, ref = layout
        # Python's 64-bit hash of the key rather than the key: a set of ints
        # stays small at millions of submits, and a false duplicate needs a
        # collision (about n²/2^65: 1 in 10^5 at ten million).
        seen = self._seen
        before = len(seen)
        seen.add(hash((frame[src:addr_end], frame[sm_start:sm_end], ref)))
        if len(seen) == before:
            self.duplicates += 1
        # §5.2.17: bits 0-1 of registered_delivery: 1 = a receipt on the
        # final outcome, 2 = only on failure; 3 is reserved (taken as 1).
        wanted = registered & 0x03
        first = b""
        if self._full or wanted:
            system_id = link.system_id
            at = time.time()
            if self._full:
                self.submits._entries.append((message_id, system_id, frame, at))
            if wanted:
                outcome = self._outcome
                if outcome is None:
                    outcome = self._outcomes.sample(rng)
                if wanted != 2 or not self._outcome_list[outcome].delivered:
                    form = self._form or self._forms.sample(rng)
                    if self.receipt_first and rng.random() < self.receipt_first:
                        receipt = (
                            now,
                            now,
                            message_id,
                            system_id,
                            frame,
                            layout,
                            outcome,
                            form,
                            at,
                        )
                        first = self._receipt_now(link, receipt, now)
                    else:
                        due = now + self._receipt_delay.sample(rng)
                        receipt = (
                            due,
                            now,
                            message_id,
                            system_id,
                            frame,
                            layout,
                            outcome,
                            form,
                            at,
                        )
                        self._receipts.add(due, receipt)
        if self._delay_resps:
            due = now + self._resp_latency.sample(rng)
            self._responses.add(due, (due, link, resp))
            return first
        return first + resp if first else resp

    def _refuse(self, link: CarrierLink, seq: int, status: int, now: float) -> bytes:
        self.refused[status] += 1
        # §4.4.2: a submit_sm_resp with an error carries no body.
        resp = _HEADER.pack(16, _SUBMIT_SM_RESP, status, seq)
        if self._delay_resps:
            due = now + self._resp_latency.sample(self._rng)
            self._responses.add(due, (due, link, resp))
            return b""
        return resp

    # ------------------------------------------------------------ receipts

    def _date(self, at: float) -> bytes:
        """YYMMDDhhmm in UTC (Appendix B), formatted once per minute rather than per receipt."""
        minute = int(at // 60)
        text = self._dates.get(minute)
        if text is None:
            if len(self._dates) > 64:
                self._dates.clear()
            text = time.strftime("%y%m%d%H%M", time.gmtime(minute * 60)).encode()
            self._dates[minute] = text
        return text

    def _receipt_body(self, receipt: _Receipt) -> bytes:
        """The deliver_sm body (§4.6.1) of a receipt."""
        _, _, message_id, system_id, frame, layout, outcome_no, form, at = receipt
        outcome = self._outcome_list[outcome_no]
        src, dst, addr_end, esm, _, data_coding, sm_start, sm_end, _ = layout
        rid = message_id.encode()
        if self._receipt_base_differs:
            rid = b"%d" % int(rid, 16) if self.id_format == "hex" else b"%x" % int(rid)
        text = b""
        if form != "tlv":
            # Appendix B: "the first 20 characters of the short message".
            head = frame[sm_start:sm_end][:20]
            if (
                data_coding in _ASCII_LIKE
                and head
                and not esm & ESM_CLASS_UDHI
                and not head.translate(None, _PLAIN)
            ):
                # Letters, digits and most punctuation are the same octets
                # in GSM 03.38, Latin-1 and ASCII: no decoding needed.
                words = head
            else:
                view = AcceptedSubmit(message_id, system_id, frame, at)
                words = view.text[:20].encode("ascii", "replace")
            submitted = self._dates.get(int(at // 60)) or self._date(at)
            text = b"id:%b%b%b done date:%b%b%b" % (
                rid,
                outcome.after_id,
                submitted,
                self._done_date,
                outcome.after_done,
                words,
            )
            if len(text) > 255:  # sm_length is one octet
                text = text[:255]
        tlvs = b""
        if form != "text":
            tlvs = b"%b%b\0%b" % (_TLV_HEAD.pack(_RECEIPTED_ID, len(rid) + 1), rid, outcome.tlvs)
        # The receipt travels back: its source is the submit_sm's destination
        # and the other way round (address blocks: TON, NPI, address, NUL).
        # esm_class 0x04, then protocol_id, priority_flag, no schedule or
        # validity, registered_delivery, replace_if_present, data_coding 0,
        # sm_default_msg_id, all 0.
        return b"\0%b%b\x04\0\0\0\0\0\0\0\0%c%b%b" % (
            frame[dst:addr_end],
            frame[src:dst],
            len(text),
            text,
            tlvs,
        )

    def _receipt_pdu(self, link: CarrierLink, receipt: _Receipt, now: float) -> bytes:
        body = self._receipt_body(receipt)
        seq = self._receipt_seq - 1
        if seq < _RECEIPT_SEQ_FLOOR:
            seq = _RECEIPT_SEQ_TOP
        self._receipt_seq = seq
        link.receipts_out[seq] = (receipt, now)
        return _HEADER.pack(16 + len(body), _DELIVER_SM, 0, seq) + body

    def _receiver(self, system_id: str) -> CarrierLink | None:
        """A receiving bind of `system_id`'s account with room in its
        window, in turn."""
        links = self._receivers.get(self._account(system_id))
        if not links:
            return None
        count = len(links)
        for _ in range(count):
            self._turn = (self._turn + 1) % count
            link = links[self._turn]
            if len(link.receipts_out) < self.window and link.receiving:
                return link
        return None

    def _account(self, system_id: str) -> str:
        account = self.receipt_account
        return system_id if account is None else account(system_id)

    def _wait_for_receiver(self, receipt: _Receipt) -> None:
        self._backlog.setdefault(self._account(receipt[_SYSTEM]), deque()).append(receipt)

    def _receipt_now(self, link: CarrierLink, receipt: _Receipt, now: float) -> bytes:
        """Send a receipt at once; octets for `link` itself, written by the caller."""
        receiver = self._receiver(receipt[_SYSTEM])
        if receiver is None:
            self._wait_for_receiver(receipt)
            return b""
        self._done_date = self._date(time.time())
        data = self._receipt_pdu(receiver, receipt, now)
        if receiver is link:
            return data
        receiver.write_raw(data)
        return b""

    def _dispatch(self, receipts: Iterable[_Receipt], now: float) -> None:
        """Send receipts now: one write per receiving bind.

        A bind takes receipts until its window is full, then the next one
        in turn does: the choice is made per window, not per receipt.
        """
        outs: dict[CarrierLink, list[bytes]] = {}
        chosen: dict[str, CarrierLink | None] = {}
        window = self.window
        receipt_pdu = self._receipt_pdu
        for receipt in receipts:
            system_id = receipt[_SYSTEM]
            link = chosen.get(system_id)
            if link is None or len(link.receipts_out) >= window:
                link = chosen[system_id] = self._receiver(system_id)
                if link is None:
                    self._wait_for_receiver(receipt)
                    continue
            chunks = outs.get(link)
            if chunks is None:
                chunks = outs[link] = []
            chunks.append(receipt_pdu(link, receipt, now))
        for link, chunks in outs.items():
            link.write_raw(b"".join(chunks))

    def _drain_backlog(self, now: float) -> None:
        self._done_date = self._date(time.time())
        outs: dict[CarrierLink, list[bytes]] = {}
        dropped = 0
        for system_id, backlog in list(self._backlog.items()):
            while backlog:
                receipt = backlog[0]
                if now - receipt[_SINCE] > self.receipt_ttl:
                    backlog.popleft()
                    dropped += 1
                    continue
                link = self._receiver(system_id)
                if link is None:
                    break
                backlog.popleft()
                outs.setdefault(link, []).append(self._receipt_pdu(link, receipt, now))
            if not backlog:
                del self._backlog[system_id]
        for link, chunks in outs.items():
            link.write_raw(b"".join(chunks))
        if dropped:
            self.receipts_dropped += dropped
            log.warning("receipts dropped: no receiving bind", count=dropped)

    def _receipt_answered(self, receipt: _Receipt, status: int, now: float) -> None:
        if status == 0:
            self.receipts_sent += 1
            return
        # Not taken (e.g. ESME_RX_T_APPN: the router could not store it):
        # an SMSC tries again later, until its retry period ends.
        self.receipts_refused[status] += 1
        if now - receipt[_SINCE] > self.receipt_ttl:
            self.receipts_dropped += 1
            return
        due = now + RECEIPT_RETRY_DELAY
        self._receipts.add(due, (due, *receipt[1:]))

    def _sweep(self, now: float) -> None:
        """Receipts unanswered for `response_timeout` go out again."""
        limit = now - self.response_timeout
        for link in list(self._links):
            out = link.receipts_out
            expired = []
            for seq, (_, sent) in out.items():
                if sent > limit:
                    break  # written in order: the rest are younger
                expired.append(seq)
            for seq in expired:
                self._wait_for_receiver(out.pop(seq)[0])

    # ------------------------------------------------------------ the tick

    def _on_tick(self) -> None:
        self._ticker = asyncio.get_running_loop().call_later(self.tick, self._on_tick)
        self._ticks += 1
        try:
            now = self.clock()
            self._done_date = self._date(time.time())
            if self._responses.size:
                outs: dict[CarrierLink, list[bytes]] = {}
                for _, link, data in self._responses.pop_due(now):
                    outs.setdefault(link, []).append(data)
                for link, chunks in outs.items():
                    link.write_raw(b"".join(chunks))
            if self._receipts.size:
                due = self._receipts.pop_due(now)
                if due:
                    self._dispatch(due, now)
            if self._stall_until is not None and now >= self._stall_until:
                self._end_stall()
            if now >= self._next_sweep:
                self._next_sweep = now + 1.0
                self._sweep(now)
            if self._backlog:
                self._drain_backlog(now)
        except Exception:
            log.exception("carrier simulator tick failed")

    # ------------------------------------------------------------ MO

    async def send_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        system_id: str | None = None,
        ref: int | None = None,
        timeout: float = 10.0,
    ) -> list[int]:
        """Send a mobile-originated message to a receiving bind; the deliver_sm_resp statuses.

        esm_class 0 (§5.2.12: a plain message, not a receipt). A text over
        one part travels as several deliver_sm with the 8-bit reference
        concatenation UDH (TS 23.040 §9.2.3.24.1) and UDHI set. Addresses
        follow the contract: international TON 1 / NPI 1 without '+',
        short codes TON 3, alphanumeric TON 5. Raises LookupError when no
        receiving bind (of `system_id`, if given) is up.
        """
        from smsrouter.connectors.smpp_server import mo_deliver_sms

        link = self._mo_link(system_id)
        if ref is None:
            ref = self._rng.randrange(256)
        statuses = []
        for pdu in mo_deliver_sms(source, destination, text, ref):
            resp = await link.request(pdu, timeout=timeout)
            self.mo_sent += 1
            statuses.append(resp.command_status)
        return statuses

    def _mo_link(self, system_id: str | None) -> CarrierLink:
        for sid, links in self._receivers.items():
            if system_id is not None and sid != system_id:
                continue
            for link in links:
                if link.receiving:
                    return link
        raise LookupError(f"no receiving bind{'' if system_id is None else ' of ' + system_id}")

    # ------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """What the carrier saw so far, as the control API's GET /stats shows it."""
        binds: Counter[str] = Counter()
        for link in self._links:
            if link.session.bound:
                binds[link.system_id] += 1
        now = self.clock()
        return {
            "submits": self.accepted,
            "received": self.received,
            "message_ids": self.accepted,
            "unique": len(self._seen),
            "duplicates": self.duplicates,
            "refused": sum(self.refused.values()),
            "errors": {f"0x{s:08X}": n for s, n in sorted(self.refused.items())},
            "receipts_sent": self.receipts_sent,
            "responses_pending": self._responses.size,
            "ticks": self._ticks,
            "receipts_pending": self._receipts.size
            + sum(len(b) for b in self._backlog.values())
            + sum(len(link.receipts_out) for link in self._links),
            "receipts_refused": {f"0x{s:08X}": n for s, n in sorted(self.receipts_refused.items())},
            "receipts_dropped": self.receipts_dropped,
            "mo_sent": self.mo_sent,
            "binds": dict(binds),
            "refusing_binds_for": max(0.0, self._refuse_until - now)
            if self._refuse_until is not None
            else 0.0,
            "stalled_for": max(0.0, self._stall_until - now)
            if self._stall_until is not None
            else 0.0,
        }

    def reset(self) -> None:
        """Forget what was recorded and counted, and end any outage.

        Receipts already due stay due: they belong to messages the peer
        still waits on.
        """
        self.submits.clear()
        self._reset_counters()
        self._refuse_until = None
        self._end_stall()
