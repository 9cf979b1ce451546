"""Carrier binds: the router as an SMPP ESME towards each carrier's SMSC.

Each carrier gets `sessions` binds (transceiver, or a transmitter plus a
receiver), each kept up by its own reconnect loop with exponential backoff.
Submits go to the bound link with the most free window; receipts coming
back as deliver_sm are handed to the engine and answered once committed.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from smsrouter.connectors.smpp import (
    ESM_CLASS_UDHI,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DeliverSm,
    Pdu,
    Role,
    SubmitSm,
    Tag,
    get_tlv,
    set_tlv,
)
from smsrouter.connectors.smpp.address import address_fields, parse_smpp_address
from smsrouter.connectors.smpp.receipt import (
    final_of_receipt,
    normalize_stat,
    parse_receipt,
    status_from_state,
)
from smsrouter.connectors.smpp.user_data import message_octets, user_data
from smsrouter.connectors.smpp_link import LinkClosed, ResponseTimeout, SmppLink
from smsrouter.router import metrics
from smsrouter.router.config import CarrierConfig
from smsrouter.router.engine import CarrierError, CarrierEvents
from smsrouter.router.inbound import Inbound
from smsrouter.router.messages import Message, Status
from smsrouter.router.store.operations import CarrierReceipt
from smsrouter.router.tls import TlsConfigError, client_context
from smsrouter.sms.text import concat_udh, decode_short_message, encode_text, pack_septets

log = structlog.get_logger("carrier")

# Seconds one submit_sm keeps being resent on ESME_RTHROTTLED before the
# engine is told to fail over.
THROTTLE_BUDGET = 30.0

# SMPP 3.4 §5.1.3 statuses that say "not now" rather than "never": the part
# is retried (on the next candidate carrier first).
TEMPORARY_STATUSES = frozenset(
    {
        CommandStatus.ESME_RSYSERR,
        CommandStatus.ESME_RMSGQFUL,
        CommandStatus.ESME_RTHROTTLED,
        CommandStatus.ESME_RX_T_APPN,
    }
)


def canonical_message_id(value: str, fmt: str) -> str:
    """A carrier's message id in the form we store and match.

    A carrier that answers submit_sm in hex and receipts in decimal (or the
    reverse) means the same number: numeric ids are kept as the decimal of
    their value, so both sides meet. Ids that are not numbers stay as sent.
    """
    if fmt == "string":
        return value
    try:
        return str(int(value, 16 if fmt == "hex" else 10))
    except ValueError:
        return value


def status_code(status: int) -> str:
    """`smpp:0x0000000B`, the contract's error_code for a command_status."""
    return f"smpp:0x{status:08X}"


def payloads(message: Message, *, sixteen_bit: bool = False) -> list[bytes]:
    """The wire bytes of each part of a message (without UDH)."""
    if message.encoding == "binary":
        return [message.body.encode("latin-1")]
    # An ESME's submit_sm keeps its alphabet (and its own UDH travels with
    # it); an HTTP text is encoded in the alphabet chosen at acceptance.
    return encode_text(message.body, encoding=message.encoding, sixteen_bit=sixteen_bit).parts


def _parts_for(message: Message, cfg: CarrierConfig) -> list[bytes]:
    """Each part's payload as this carrier wants them cut.

    Parts were counted (and priced) with the 8-bit reference UDH; a carrier
    on 16-bit references has one septet less per part, and if that changes
    the count the message keeps the 8-bit UDH rather than change its price.
    """
    if not message.payloads:
        message.payloads = payloads(message)
    if cfg.concatenation != "udh16" or message.parts == 1 or message.udh is not None:
        return message.payloads
    cut = payloads(message, sixteen_bit=True)
    return cut if len(cut) == message.parts else message.payloads


def sends_whole(message: Message, cfg: CarrierConfig) -> bool:
    """Does this carrier take the message whole, in message_payload?"""
    return cfg.concatenation == "payload" and message.parts > 1 and message.udh is None


def build_whole_submit_sm(message: Message, cfg: CarrierConfig) -> SubmitSm:
    """One submit_sm with the whole text in message_payload (SMPP 3.4
    §5.3.2.32: short_message empty, the SMSC cuts the text itself)."""
    if not message.payloads:
        message.payloads = payloads(message)
    pdu = build_submit_sm(message, 0, cfg)
    pdu.esm_class = 0
    pdu.short_message = b""
    set_tlv(pdu, Tag.MESSAGE_PAYLOAD, b"".join(message.payloads))
    return pdu


def build_submit_sm(message: Message, part: int, cfg: CarrierConfig) -> SubmitSm:
    """The submit_sm for one part of a message, as this carrier wants it."""
    parts = _parts_for(message, cfg)
    data = parts[part]
    udh = message.udh
    ref = message.id.int & 0xFFFF
    sar = cfg.concatenation == "sar" and udh is None and message.parts > 1
    # A payload carrier given one part (the rest went elsewhere) gets it
    # with the 8-bit UDH like any part.
    if udh is None and message.parts > 1 and not sar:
        # TS 23.040 §9.2.3.24.1: one reference for all parts of a message.
        sixteen = cfg.concatenation == "udh16" and parts is not message.payloads
        udh = concat_udh(
            ref if sixteen else ref & 0xFF, message.parts, part + 1, sixteen_bit=sixteen
        )
    if cfg.gsm_packed and message.data_coding == 0:
        # Septets after a UDH start on a septet boundary (TS 23.040 §9.2.3.16).
        fill = (7 - (len(udh) * 8) % 7) % 7 if udh else 0
        data = pack_septets(data, fill)
    pdu = SubmitSm(
        **address_fields(message.sender, message.recipient),
        esm_class=ESM_CLASS_UDHI if udh else 0,
        registered_delivery=1,
        data_coding=message.data_coding,
        short_message=(udh or b"") + data,
    )
    if sar:
        # SMPP 3.4 §5.3.2.22-24: the SMSC builds the UDH from these.
        set_tlv(pdu, Tag.SAR_MSG_REF_NUM, ref)
        set_tlv(pdu, Tag.SAR_TOTAL_SEGMENTS, message.parts)
        set_tlv(pdu, Tag.SAR_SEGMENT_SEQNUM, part + 1)
    return pdu


def receipt_of(carrier: str, pdu: DeliverSm, id_format: str = "string") -> CarrierReceipt | None:
    """A carrier's receipt (text, TLVs or both) as our operation, or None
    when it is an intermediate notification that ends nothing."""
    parsed = parse_receipt(pdu.short_message) if pdu.short_message else None
    tlv_id = get_tlv(pdu, Tag.RECEIPTED_MESSAGE_ID)
    carrier_id = tlv_id if isinstance(tlv_id, str) and tlv_id else (parsed.id if parsed else "")
    state = get_tlv(pdu, Tag.MESSAGE_STATE)
    if parsed is not None and parsed.stat:
        outcome = normalize_stat(parsed.stat)
    elif isinstance(state, int):
        outcome = status_from_state(state)
    else:
        return None
    final = final_of_receipt(outcome)
    if final is None or not carrier_id:
        return None
    err = parsed.err if parsed is not None and parsed.err else ""
    error_code = None if final == Status.DELIVERED else f"dlr:{err or '000'}"
    return CarrierReceipt(
        carrier, canonical_message_id(carrier_id, id_format), final, error_code, datetime.now(UTC)
    )


MoHandler = Callable[[str, DeliverSm], "asyncio.Future[None]"]


def _acknowledge_mo(carrier: str, pdu: DeliverSm) -> asyncio.Future[None]:
    """Without an inbound path, an MO is logged and acknowledged so the
    carrier does not redeliver it forever."""
    log.info("MO received, no inbound path", carrier=carrier, source=pdu.source_addr)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def mo_parts(pdu: DeliverSm) -> tuple[bytes, tuple[int, int, int] | None]:
    """An MO's payload and its concat (ref, total, seq) from UDH or SAR TLVs;
    an MO whose header does not fit goes on whole, as one message."""
    try:
        payload, _, concat = user_data(pdu)
    except ValueError:
        return message_octets(pdu), None
    return payload, (concat.ref, concat.total, concat.seq) if concat else None


def mo_receiver(inbound: Inbound) -> MoHandler:
    """The carrier side's MO handler feeding the router's inbound path."""

    def receive(carrier: str, pdu: DeliverSm) -> asyncio.Future[None]:
        payload, concat = mo_parts(pdu)
        data_coding = pdu.data_coding
        return inbound.receive(
            carrier=carrier,
            sender=parse_smpp_address(pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr),
            to=parse_smpp_address(pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr),
            payload=payload,
            decode=lambda data: decode_short_message(data_coding, data),
            concat=concat,
        )

    return receive


def _no_receipts(op: CarrierReceipt) -> asyncio.Future[None]:
    raise RuntimeError("a receipt before the carrier pool was started")


def _no_events(carrier: str) -> None:
    raise RuntimeError("a bind before the carrier pool was started")


def _answer_deliver_sm(link: SmppLink, pdu: DeliverSm, stored: asyncio.Future[None]) -> None:
    """Answer a carrier's deliver_sm once what it carried is stored."""
    if stored.exception() is not None:
        # Not stored: ask the carrier to deliver it again later.
        link.send(pdu.response(command_status=CommandStatus.ESME_RX_T_APPN))
    else:
        link.send(pdu.response())


class CarrierBinds:
    """All binds to one carrier."""

    def __init__(
        self,
        cfg: CarrierConfig,
        *,
        on_mo: MoHandler | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_receipt: Callable[[CarrierReceipt], asyncio.Future[None]] = _no_receipts
        self._on_mo = on_mo or _acknowledge_mo
        self._on_up: Callable[[str], None] = _no_events
        self._senders: list[SmppLink] = []  # bound links that may submit
        self._links: set[SmppLink] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._clock = time.monotonic
        self._paused_until: dict[SmppLink, float] = {}
        self._next_send: dict[SmppLink, float] = {}
        # CONTRACT §4 "TLS": loaded once (a system trust store takes some
        # milliseconds), again on renew_tls().
        self._tls: ssl.SSLContext | None = client_context(cfg.tls_ca) if cfg.tls else None

    def renew_tls(self) -> None:
        """Read tls_ca again (SIGHUP): later binds verify against it. One
        that no longer loads leaves the one in use."""
        if not self.cfg.tls:
            return
        try:
            self._tls = client_context(self.cfg.tls_ca)
        except TlsConfigError as exc:
            log.error("carrier CA bundle not reloaded; keeping the one in use",
                      carrier=self.name, error=str(exc))  # fmt: skip

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def is_up(self) -> bool:
        return bool(self._senders)

    @property
    def senders(self) -> list[SmppLink]:
        """Bound links that may submit."""
        return self._senders

    @property
    def binds(self) -> tuple[int, int]:
        """(bound now, configured): a transmitter and a receiver are two
        binds of one session (the status page, CONTRACT §8)."""
        per_session = 1 if self.cfg.bind == "transceiver" else 2
        bound = sum(1 for link in self._links if link.owner is not None)
        return bound, self.cfg.sessions * per_session

    def start(self, events: CarrierEvents) -> None:
        """Bind, and report receipts and binds to `events` (the engine)."""
        self._on_receipt = events.receipt
        self._on_up = events.carrier_up
        kinds: Sequence[type[Pdu]]
        if self.cfg.bind == "transceiver":
            kinds = [BindTransceiver]
        else:
            kinds = [BindTransmitter, BindReceiver]
        for i in range(self.cfg.sessions):
            for kind in kinds:
                self._tasks.append(
                    asyncio.create_task(self._keep_bound(kind), name=f"carrier-{self.name}-{i}")
                )

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(link.unbind(timeout=2.0) for link in self._links), return_exceptions=True
        )

    async def _keep_bound(self, kind: type[Pdu]) -> None:
        delay = self.cfg.reconnect_delay
        while not self._stopping:
            link: SmppLink | None = None
            try:
                link = await self._bind(kind)
            except ssl.SSLCertVerificationError as unverified:
                # Not a network fault: only a change of certificate or CA
                # mends it, so the line says what OpenSSL found.
                log.error(
                    "carrier TLS certificate not trusted", carrier=self.name,
                    host=self.cfg.host, reason=unverified.verify_message, retry_in=delay,
                )  # fmt: skip
            except ssl.SSLError as tls_error:
                log.warning(
                    "carrier TLS handshake failed", carrier=self.name, host=self.cfg.host,
                    reason=tls_error.reason or str(tls_error), retry_in=delay,
                )  # fmt: skip
            except (OSError, LinkClosed, ResponseTimeout, CarrierError) as exc:
                log.warning(
                    "carrier bind failed", carrier=self.name, error=repr(exc), retry_in=delay
                )
            if link is not None:
                delay = self.cfg.reconnect_delay
                await link.closed
                log.warning("carrier link lost", carrier=self.name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_delay)

    async def _bind(self, kind: type[Pdu]) -> SmppLink:
        loop = asyncio.get_running_loop()
        _, link = await asyncio.wait_for(
            loop.create_connection(
                lambda: SmppLink(
                    Role.ESME,
                    self,
                    window=self.cfg.window,
                    response_timeout=self.cfg.response_timeout,
                    enquire_link_interval=self.cfg.enquire_link_interval,
                ),
                self.cfg.host,
                self.cfg.port,
                # The certificate must name the host we dialled.
                ssl=self._tls,
                server_hostname=self.cfg.host if self._tls is not None else None,
            ),
            timeout=10,
        )
        self._links.add(link)
        try:
            resp = await link.request(
                kind(  # type: ignore[call-arg]
                    system_id=self.cfg.system_id,
                    password=self.cfg.password,
                    system_type=self.cfg.system_type,
                ),
                timeout=10,
            )
        except BaseException:
            # A bind that timed out must not leave a connection behind that
            # a late bind_resp would bind with nobody using it.
            link.close()
            raise
        if resp.command_status != CommandStatus.ESME_ROK:
            link.close()
            raise CarrierError(
                status_code(resp.command_status), temporary=True, detail="bind refused"
            )
        link.owner = self.name
        if kind is not BindReceiver:
            self._senders.append(link)
            metrics.CARRIER_UP.labels(self.name).set(len(self._senders))
            metrics.carrier_health(self.name).set(1.0)
        log.info("carrier bound", carrier=self.name, bind=kind.__name__, peer=link.peer)
        self._on_up(self.name)
        return link

    # ---------------------------------------------------------- LinkHandler

    def on_closed(self, link: SmppLink) -> None:
        self._links.discard(link)
        self._paused_until.pop(link, None)
        self._next_send.pop(link, None)
        if link in self._senders:
            self._senders.remove(link)
            metrics.CARRIER_UP.labels(self.name).set(len(self._senders))
            if not self._senders:
                metrics.carrier_health(self.name).set(0.0)

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        if not isinstance(pdu, DeliverSm):
            if hasattr(pdu, "response"):
                link.send(pdu.response(command_status=CommandStatus.ESME_RINVCMDID))
            return
        if pdu.esm_class & 0x3C == 0:
            # SMPP 3.4 §5.2.12: message type 0 is a mobile-originated message.
            done = self._on_mo(self.name, pdu)
        else:
            op = receipt_of(
                self.name, pdu, self.cfg.receipt_id_format or self.cfg.message_id_format
            )
            if op is None:
                link.send(pdu.response())
                return
            done = self._on_receipt(op)
        # A partial, not a closure (a reference cycle per receipt, compiled).
        done.add_done_callback(functools.partial(_answer_deliver_sm, link, pdu))

    # ---------------------------------------------------------- submit

    async def submit(self, pdu: SubmitSm) -> str:
        """Send one submit_sm on the least busy usable bind; the carrier's id.

        ESME_RTHROTTLED pauses the bind that got it for `throttle_pause`
        and the same PDU is sent again, first in line so per-sender order
        holds. Throttling says "slower", not "never": it is retried for up
        to THROTTLE_BUDGET seconds before it counts as a temporary failure
        that the engine may fail over.
        """
        deadline = self._clock() + THROTTLE_BUDGET
        while True:
            link = await self._usable_link()
            pdu.sequence_number = 0  # a resend is a new request (SMPP 3.4 §5.1.4)
            try:
                resp = await link.request(pdu)
            except LinkClosed:
                raise CarrierError("link_lost", temporary=True) from None
            except ResponseTimeout:
                raise CarrierError("timeout", temporary=True) from None
            status = resp.command_status
            if status == CommandStatus.ESME_RTHROTTLED:
                metrics.throttled("carrier").inc()
                now = self._clock()
                self._paused_until[link] = max(
                    self._paused_until.get(link, 0.0), now + self.cfg.throttle_pause
                )
                if now < deadline:
                    continue
                raise CarrierError(status_code(status), temporary=True, throttled=True)
            if status != CommandStatus.ESME_ROK:
                raise CarrierError(status_code(status), temporary=status in TEMPORARY_STATUSES)
            message_id = getattr(resp, "message_id", "")
            if not message_id:
                raise CarrierError("smpp:no_message_id", temporary=False)
            return canonical_message_id(message_id, self.cfg.message_id_format)

    async def _usable_link(self) -> SmppLink:
        """A bound link that is not paused, paced to `max_tps` per bind."""
        senders = self._senders
        if len(senders) == 1 and not self._paused_until and self.cfg.max_tps <= 0:
            return senders[0]  # one bind, unpaced, not paused: nothing to choose
        while True:
            if not self._senders:
                raise CarrierError("link_lost", temporary=True, detail="not bound")
            now = self._clock()
            ready = [lk for lk in self._senders if self._paused_until.get(lk, 0.0) <= now]
            if not ready:
                wake = min(self._paused_until.get(lk, 0.0) for lk in self._senders)
                await asyncio.sleep(max(0.0, wake - now))
                continue
            link = min(ready, key=lambda lk: lk.outstanding)
            if self.cfg.max_tps > 0:
                # GCRA per bind: the n-th submit_sm leaves no earlier than
                # n / max_tps after the bind's schedule started.
                at = max(now, self._next_send.get(link, now))
                self._next_send[link] = at + 1.0 / self.cfg.max_tps
                if at > now:
                    await asyncio.sleep(at - now)
                    if not link.is_open:
                        continue
            return link


class CarrierPool:
    """The engine's CarrierGateway over every configured carrier."""

    def __init__(
        self,
        configs: Sequence[CarrierConfig],
        *,
        on_mo: MoHandler | None = None,
    ) -> None:
        # Built before the engine, which submits through it; the engine is
        # handed over at start, when receipts and binds begin to arrive.
        self.carriers = {c.name: CarrierBinds(c, on_mo=on_mo) for c in configs}

    def start(self, events: CarrierEvents) -> None:
        for c in self.carriers.values():
            metrics.CARRIER_UP.labels(c.name).set(0)
            metrics.carrier_health(c.name).set(0.0)
            c.start(events)

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.carriers.values()))

    def renew_tls(self) -> None:
        """Every TLS carrier reads its CA bundle again (SIGHUP)."""
        for c in self.carriers.values():
            c.renew_tls()

    def is_available(self, carrier: str) -> bool:
        c = self.carriers.get(carrier)
        return c is not None and c.is_up

    def capacity(self) -> int:
        return sum(len(c.senders) * c.cfg.window for c in self.carriers.values())

    @property
    def any_up(self) -> bool:
        return any(c.is_up for c in self.carriers.values())

    def sends_whole(self, carrier: str, message: Message) -> bool:
        return sends_whole(message, self.carriers[carrier].cfg)

    async def submit(self, carrier: str, message: Message, part: int) -> str:
        binds = self.carriers[carrier]
        return await binds.submit(build_submit_sm(message, part, binds.cfg))

    async def submit_whole(self, carrier: str, message: Message) -> str:
        binds = self.carriers[carrier]
        return await binds.submit(build_whole_submit_sm(message, binds.cfg))
