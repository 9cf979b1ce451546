"""An SMPP 3.4 ESME load client: `smsrouter sim esme`.

Binds N transceivers to an SMSC (smsrouter, Jasmin's SMPP server, a carrier
simulator), keeps W submit_sm outstanding on each, and sends until
`--count` messages or `--duration` seconds, whichever comes first. With
registered_delivery it answers every deliver_sm, matches each receipt to
its submit by the receipt's id (the receipted_message_id TLV, else the
`id:` of the text), and waits up to `--receipt-timeout` for the rest.
Prints one JSON line (see `EsmeLoad.summary`).

The client must never be the bottleneck of what it measures, so it is a
pipelined asyncio Protocol over the project's sans-IO codec rather than one
awaited request per message through `SmppLink`: each batch of responses
that arrives refills the window in the same callback, and every refill
leaves in one write. No task or future exists per message. It still goes
through `connectors.smpp.decode`/`encode` for every PDU, so it exercises
the same codec as the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from smsrouter.connectors.smpp import (
    BindTransceiver,
    CommandId,
    CommandStatus,
    DeliverSm,
    EnquireLink,
    GenericNack,
    PduError,
    SubmitSm,
    Tag,
    Unbind,
    decode,
    encode,
    get_tlv,
    set_tlv,
)
from smsrouter.connectors.smpp.receipt import parse_receipt, stat_from_state
from smsrouter.sims.stats import Budget, Latencies, address_of, expand_numbers, per_second
from smsrouter.sms.text import Encoding, decode_short_message, encode_text

__all__ = ["EsmeLoad", "EsmeOptions"]

_HEADER = struct.Struct(">IIII")
# Larger than any PDU a sane SMSC sends us (a deliver_sm with a 64K
# message_payload is the worst case); beyond it the stream is garbage.
_MAX_PDU = 68 * 1024
_SUBMIT_SM_RESP = int(CommandId.SUBMIT_SM_RESP)
_DELIVER_SM = int(CommandId.DELIVER_SM)
_GENERIC_NACK = int(CommandId.GENERIC_NACK)
_ENQUIRE_LINK = int(CommandId.ENQUIRE_LINK)
_UNBIND = int(CommandId.UNBIND)
_BIND_TRANSCEIVER_RESP = int(CommandId.BIND_TRANSCEIVER_RESP)
_UNBIND_RESP = int(CommandId.UNBIND_RESP)
_RESPONSE_BIT = 0x80000000


@dataclass
class EsmeOptions:
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    binds: int = 1
    window: int = 100
    count: int = 1000
    duration: float = 60.0
    rate: float = 0.0  # submits per second over all binds, 0 = as fast as the SMSC answers
    senders: list[str] = field(default_factory=lambda: ["12345"])
    destinations: list[str] = field(default_factory=lambda: ["+14155550123"])
    text: str = "smsrouter load test"
    encoding: str = "auto"  # auto | gsm7 | ucs2
    registered_delivery: int = 1
    receipt_timeout: float = 30.0
    response_timeout: float = 30.0
    connect_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    id_format: str = "auto"  # auto | hex | decimal: how submit_sm_resp writes ids
    receipt_id_format: str = "auto"  # how receipts write them; "auto" = as id_format

    @classmethod
    def from_specs(cls, senders: str, destinations: str, **kwargs: Any) -> EsmeOptions:
        return cls(
            senders=expand_numbers(senders), destinations=expand_numbers(destinations), **kwargs
        )


class _Message:
    """How to build submit_sm n: the fixed part of the PDU, precomputed once."""

    def __init__(self, options: EsmeOptions) -> None:
        self._senders = [address_of(s) for s in options.senders]
        self._destinations = [address_of(d) for d in options.destinations]
        self._text = options.text
        self._per_message = "{n}" in options.text
        self._encoding = None if options.encoding == "auto" else Encoding(options.encoding)
        self.registered_delivery = options.registered_delivery
        # Fails early (before any bind) for a text the encoding cannot carry.
        self._fixed = self._body(options.text.replace("{n}", "0"))

    def _body(self, text: str) -> tuple[int, bytes, bytes | None]:
        encoded = encode_text(text, encoding=self._encoding)
        if encoded.part_count == 1:
            return encoded.data_coding, encoded.parts[0], None
        # A longer text travels whole in message_payload (SMPP 3.4 §5.3.2.32):
        # one submit_sm, one message id, one receipt, whatever its length.
        return encoded.data_coding, b"", b"".join(encoded.parts)

    def pdu(self, n: int, sequence_number: int) -> bytes:
        data_coding, short_message, payload = (
            self._body(self._text.replace("{n}", str(n))) if self._per_message else self._fixed
        )
        src_ton, src_npi, source = self._senders[n % len(self._senders)]
        dst_ton, dst_npi, destination = self._destinations[n % len(self._destinations)]
        pdu = SubmitSm(
            sequence_number=sequence_number,
            source_addr_ton=src_ton,
            source_addr_npi=src_npi,
            source_addr=source,
            dest_addr_ton=dst_ton,
            dest_addr_npi=dst_npi,
            destination_addr=destination,
            registered_delivery=self.registered_delivery,
            data_coding=data_coding,
            short_message=short_message,
        )
        if payload is not None:
            set_tlv(pdu, Tag.MESSAGE_PAYLOAD, payload)
        return encode(pdu)


_BASES = {"hex": 16, "decimal": 10}


class _Receipts:
    """Receipts matched to submits by message id, on whichever bind they arrive.

    SMSCs disagree on how an id is written: some answer submit_sm_resp with
    a hex id and put it in decimal in the receipt, or the other way round
    (Kannel's `msg-id-type` exists for this). With `id_format` and
    `receipt_id_format` both given ("hex" or "decimal"), ids are compared
    by value, exactly. With "auto", as written first, then the other base
    as a guess — which short ids such as "16" can fool.
    """

    def __init__(self, id_format: str = "auto", receipt_id_format: str = "auto") -> None:
        self.submitted: dict[str, float] = {}  # message id -> submit time, not yet matched
        self.early: dict[str, float] = {}  # receipts whose submit_sm_resp has not arrived yet
        self.done: set[str] = set()
        self.received = 0
        self.matched = 0
        self.duplicates = 0
        self.by_stat: Counter[str] = Counter()
        self.latency = Latencies()
        self.first_at = 0.0
        self.last_at = 0.0
        exact = id_format != "auto" and receipt_id_format != "auto"
        self._bases = (_BASES[id_format], _BASES[receipt_id_format]) if exact else None

    def _key(self, message_id: str, side: int) -> str:
        if self._bases is None:
            return message_id
        try:
            return str(int(message_id, self._bases[side]))
        except ValueError:
            return message_id

    def accepted(self, message_id: str, sent_at: float) -> None:
        key = self._key(message_id, 0)
        found = self._find(key, self.early)
        if found is not None:
            self._match(found, sent_at, self.early.pop(found))
        else:
            self.submitted[key] = sent_at

    def receipt(self, message_id: str, stat: str, now: float) -> None:
        self.received += 1
        self.by_stat[stat or "?"] += 1
        if not self.first_at:
            self.first_at = now
        self.last_at = now
        key = self._key(message_id, 1)
        found = self._find(key, self.submitted)
        if found is not None:
            self._match(found, self.submitted.pop(found), now)
        elif key in self.done:
            self.duplicates += 1
        else:
            self.early[key] = now

    def _find(self, key: str, pending: dict[str, float]) -> str | None:
        if key in pending:
            return key
        if self._bases is None:
            with contextlib.suppress(ValueError):
                for alt in (str(int(key, 16)), format(int(key), "x")):
                    if alt in pending:
                        return alt
        return None

    def _match(self, key: str, sent_at: float, arrived: float) -> None:
        self.matched += 1
        self.done.add(key)
        self.latency.add(arrived - sent_at)


class _Bind(asyncio.Protocol):
    """One transceiver bind: framing, window, answers to the SMSC's requests."""

    def __init__(self, load: EsmeLoad, index: int) -> None:
        self.load = load
        self.index = index
        self.window = load.options.window
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.outstanding: dict[int, float] = {}
        self._seq = itertools.count(1)
        loop = asyncio.get_running_loop()
        self.bound: asyncio.Future[int] = loop.create_future()
        self.unbound: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.sending = False
        self._pump_timer: asyncio.TimerHandle | None = None
        self._writable = True
        self.last_io = time.monotonic()

    # ------------------------------------------------------------- asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sending = False
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        lost = len(self.outstanding)
        if lost:
            self.load.errors["connection_lost"] += lost
            self.outstanding.clear()
        if not self.bound.done():
            self.bound.set_exception(ConnectionError("connection closed before bind_resp"))
        if not self.unbound.done():
            self.unbound.set_result(None)  # gone is as good as unbound
        if not self.closed.done():
            self.closed.set_result(None)
        self.load._bind_closed(self)

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self.pump()

    def data_received(self, data: bytes) -> None:
        self.last_io = now = time.monotonic()
        buf = self.buffer
        buf += data
        pos, size = 0, len(buf)
        replies: list[bytes] = []
        while size - pos >= 16:
            length, command_id, status, seq = _HEADER.unpack_from(buf, pos)
            if length < 16 or length > _MAX_PDU:
                self.load.protocol_errors += 1
                self.close()
                return
            if size - pos < length:
                break
            frame = bytes(buf[pos : pos + length])
            pos += length
            if command_id in (_SUBMIT_SM_RESP, _GENERIC_NACK):
                self._response(frame, command_id, status, seq, now)
            elif command_id == _DELIVER_SM:
                replies.append(self._deliver_sm(frame, seq, now))
            elif command_id == _ENQUIRE_LINK:
                replies.append(encode(EnquireLink(sequence_number=seq).response()))
            elif command_id == _BIND_TRANSCEIVER_RESP:
                if not self.bound.done():
                    self.bound.set_result(status)
            elif command_id == _UNBIND:
                replies.append(encode(Unbind(sequence_number=seq).response()))
                self.sending = False
            elif command_id == _UNBIND_RESP:
                if not self.unbound.done():
                    self.unbound.set_result(None)
            elif not command_id & _RESPONSE_BIT:
                replies.append(
                    encode(GenericNack(CommandStatus.ESME_RINVCMDID, sequence_number=seq))
                )
        if pos:
            del buf[:pos]
        if replies:
            self._write(b"".join(replies))
        self.pump()

    # ------------------------------------------------------------- PDUs

    def _response(self, frame: bytes, command_id: int, status: int, seq: int, now: float) -> None:
        sent_at = self.outstanding.pop(seq, None)
        if sent_at is None:
            return  # an enquire_link's generic_nack, or an answer after we gave up
        load = self.load
        load.latency.add(now - sent_at)
        load.last_response_at = now
        if command_id == _GENERIC_NACK:
            load.errors[f"generic_nack:0x{status:08X}"] += 1
        elif status == 0:
            try:
                message_id = decode(frame).message_id  # type: ignore[attr-defined]
            except PduError:
                load.protocol_errors += 1
                return
            load.accepted += 1
            if load.options.registered_delivery:
                load.receipts.accepted(message_id, sent_at)
        else:
            load.errors[f"0x{status:08X}"] += 1

    def _deliver_sm(self, frame: bytes, seq: int, now: float) -> bytes:
        load = self.load
        try:
            pdu = decode(frame)
        except PduError as exc:
            load.protocol_errors += 1
            return encode(DeliverSm(sequence_number=seq).response(exc.command_status))
        assert isinstance(pdu, DeliverSm)
        message_id, stat = _receipt_of(pdu)
        if message_id is None:
            load.mo_received += 1
        else:
            load.receipts.receipt(message_id, stat, now)
        return encode(pdu.response())

    # ------------------------------------------------------------- sending

    def pump(self) -> None:
        """Fill the window from the budget, all new submits in one write."""
        if not self.sending or not self._writable:
            return
        outstanding = self.outstanding
        room = self.window - len(outstanding)
        if room <= 0:
            return
        load = self.load
        take = load.budget.take
        build = load.message.pdu
        seq = self._seq
        out: list[bytes] = []
        now = time.monotonic()
        for _ in range(room):
            n = take()
            if n is None:
                break
            s = next(seq)
            if s > 0x7FFFFFFF:  # §5.1.2.4: sequence numbers wrap before 2^31
                self._seq = seq = itertools.count(1)
                s = next(seq)
            out.append(build(n, s))
            outstanding[s] = now
        if out:
            load.sent += len(out)
            if not load.first_submit_at:
                load.first_submit_at = now
            self._write(b"".join(out))
        if load.budget.rate and self._pump_timer is None and len(outstanding) < self.window:
            # The bucket ran dry before the window filled: come back for the next token.
            wait = load.budget.wait()
            if wait is not None:
                self._pump_timer = asyncio.get_running_loop().call_later(
                    max(wait, 0.001), self._timed_pump
                )

    def _timed_pump(self) -> None:
        self._pump_timer = None
        self.pump()

    def request(self, pdu: Any) -> None:
        pdu.sequence_number = next(self._seq)
        self._write(encode(pdu))

    def keepalive(self, interval: float) -> None:
        """Send an enquire_link when the link has been quiet for `interval` seconds."""
        if interval > 0 and time.monotonic() - self.last_io >= interval:
            self.request(EnquireLink())
            self.last_io = time.monotonic()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _receipt_of(pdu: DeliverSm) -> tuple[str | None, str]:
    """(receipted message id, stat word) of a receipt, or (None, "") for an MO.

    The receipted_message_id and message_state TLVs are enough when both
    are there; otherwise the Appendix B text fills in what is missing.
    """
    try:
        tlv_id = get_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID)
        state = get_tlv(pdu, Tag.MESSAGE_STATE)
    except PduError:
        tlv_id = state = None
    is_receipt = bool(pdu.esm_class & 0x3C)  # §5.2.12 message type bits
    if isinstance(tlv_id, str) and tlv_id and isinstance(state, int):
        return tlv_id, stat_from_state(state)
    text = pdu.short_message or pdu.tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    parsed = parse_receipt(decode_short_message(pdu.data_coding, text)) if text else None
    if not is_receipt and parsed is None and tlv_id is None:
        return None, ""
    stat = parsed.stat.upper() if parsed is not None else ""
    if not stat and isinstance(state, int):
        stat = stat_from_state(state)
    if isinstance(tlv_id, str) and tlv_id:
        return tlv_id, stat
    return (parsed.id if parsed is not None else ""), stat


class EsmeLoad:
    """One load run; `await EsmeLoad(options).run()` returns the summary dict."""

    def __init__(self, options: EsmeOptions) -> None:
        if options.binds < 1 or options.window < 1:
            raise ValueError("binds and window must be at least 1")
        self.options = options
        self.message = _Message(options)
        self.budget = Budget(options.count, options.duration, options.rate)
        self.binds: list[_Bind] = []
        self.sent = 0
        self.accepted = 0
        self.errors: Counter[str] = Counter()
        self.bind_errors: Counter[str] = Counter()
        self.protocol_errors = 0
        self.mo_received = 0
        self.timeouts = 0
        self.latency = Latencies()
        receipt_id_format = (
            options.id_format if options.receipt_id_format == "auto" else options.receipt_id_format
        )
        self.receipts = _Receipts(options.id_format, receipt_id_format)
        self.first_submit_at = 0.0
        self.last_response_at = 0.0
        self.sending_ended_at = 0.0
        self._cpu_at_start = 0.0
        self._interrupted = False
        self._running = False

    def stop(self) -> None:
        """End the run early (SIGINT): stop sending, skip the receipt wait."""
        self._interrupted = True
        self.budget.stop()

    def _bind_closed(self, bind: _Bind) -> None:
        if self._running and all(b.closed.done() for b in self.binds):
            self.budget.stop()  # nobody left to send on

    async def _connect(self, index: int) -> _Bind | None:
        opts = self.options
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(opts.connect_timeout):
                _, bind = await loop.create_connection(
                    lambda: _Bind(self, index), opts.host, opts.port
                )
                bind.request(
                    BindTransceiver(
                        system_id=opts.system_id,
                        password=opts.password,
                        system_type=opts.system_type,
                    )
                )
                status = await bind.bound
        except (OSError, TimeoutError) as exc:
            self.bind_errors[type(exc).__name__] += 1
            return None
        if status != 0:
            self.bind_errors[f"0x{status:08X}"] += 1
            bind.close()
            return None
        return bind

    async def run(self) -> dict[str, Any]:
        opts = self.options
        self._cpu_at_start = time.process_time()
        started = time.monotonic()
        connected = await asyncio.gather(*(self._connect(i) for i in range(opts.binds)))
        self.binds = [b for b in connected if b is not None]
        if not self.binds:
            return self.summary(started)
        self.budget.start()
        self._running = True
        for bind in self.binds:
            bind.sending = True
            bind.pump()
        try:
            await self._until_sent()
            self.sending_ended_at = time.monotonic()
            if opts.registered_delivery and not self._interrupted:
                await self._until_receipts()
        finally:
            await self._unbind_all()
        return self.summary(started)

    async def _until_sent(self) -> None:
        opts = self.options
        give_up_at: float | None = None
        while True:
            await asyncio.sleep(0.02)
            live = [b for b in self.binds if not b.closed.done()]
            if not live:
                return
            outstanding = sum(len(b.outstanding) for b in live)
            if self.budget.exhausted:
                if outstanding == 0:
                    return
                now = time.monotonic()
                if give_up_at is None:
                    give_up_at = now + opts.response_timeout
                elif now >= give_up_at or self._interrupted:
                    self.timeouts = outstanding
                    for b in live:
                        b.outstanding.clear()
                    return
            for b in live:
                b.keepalive(opts.enquire_link_interval)

    async def _until_receipts(self) -> None:
        opts = self.options
        deadline = time.monotonic() + opts.receipt_timeout
        while (
            self.receipts.matched < self.accepted
            and time.monotonic() < deadline
            and not self._interrupted
            and any(not b.closed.done() for b in self.binds)
        ):
            await asyncio.sleep(0.02)
            for b in self.binds:
                if not b.closed.done():
                    b.keepalive(opts.enquire_link_interval)

    async def _unbind_all(self) -> None:
        for bind in self.binds:
            bind.sending = False
            if not bind.closed.done():
                bind.request(Unbind())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(b.unbound for b in self.binds), return_exceptions=True)
        for bind in self.binds:
            bind.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(b.closed for b in self.binds), return_exceptions=True)

    def summary(self, started: float) -> dict[str, Any]:
        """The run as one flat JSON object.

        submits_per_s: submit_sm_resp received / seconds from the first
        submit to the last response. receipts_per_s: receipts received /
        seconds from the first submit to the last receipt (so it measures
        the whole loop, submit to receipt). latency_ms: submit_sm to its
        submit_sm_resp; receipt_latency_ms: submit_sm to its matched receipt.
        """
        opts = self.options
        r = self.receipts
        t0 = self.first_submit_at
        answered = self.accepted + sum(self.errors.values())
        send_span = (self.last_response_at - t0) if t0 and self.last_response_at else 0.0
        receipt_span = (r.last_at - t0) if t0 and r.last_at else 0.0
        out: dict[str, Any] = {
            "tool": "esme",
            "target": f"{opts.host}:{opts.port}",
            "binds": len(self.binds),
            "window": opts.window,
            "sent": self.sent,
            "accepted": self.accepted,
            "errors": dict(sorted(self.errors.items())),
            "timeouts": self.timeouts,
            "submits_per_s": per_second(answered, send_span),
            "latency_ms": self.latency.summary(),
            "receipts_received": r.received,
            "receipts_matched": r.matched,
            "receipts_unmatched": r.received - r.matched,
            "receipts_duplicate": r.duplicates,
            "receipts_by_stat": dict(sorted(r.by_stat.items())),
            "receipts_per_s": per_second(r.received, receipt_span),
            "receipt_latency_ms": r.latency.summary(),
            "elapsed_s": round(time.monotonic() - started, 3),
            "cpu_s": round(time.process_time() - self._cpu_at_start, 3),
        }
        if self.bind_errors:
            out["bind_errors"] = dict(self.bind_errors)
        if self.mo_received:
            out["mo_received"] = self.mo_received
        if self.protocol_errors:
            out["protocol_errors"] = self.protocol_errors
        if self._interrupted:
            out["interrupted"] = True
        return out
