"""Admission: is this message acceptable, and what does it become?

Shared by both ingresses, so that an app on HTTP and a partner ESME on SMPP
get the same decisions; each ingress only maps the outcome to its own error
vocabulary (RFC 9457 problem / SMPP command_status).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from decimal import Decimal

import phonenumbers

from smsrouter.router import metrics
from smsrouter.router.accounts import Account
from smsrouter.router.content import ContentRules, compile_content_rules
from smsrouter.router.daily import DailyCounts
from smsrouter.router.messages import Message, Status, new_message_id
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.routes import PriceTable, RouteTable
from smsrouter.router.sender_ids import SenderIdRules
from smsrouter.router.sender_states import SenderStates
from smsrouter.router.senders import NumberType, classify_sender
from smsrouter.router.throughput import ThroughputPlans
from smsrouter.router.velocity import RecipientVelocity
from smsrouter.sms.text import Encoding, part_count

# Longest text accepted over HTTP, in parts. Twilio caps a message body at
# 1600 characters (~10 GSM segments); carriers reassemble at most 255 parts
# (TS 23.040 §9.2.3.24.1) but handsets and carriers drop long chains well
# before that.
MAX_PARTS = 10


# CONTRACT §6 "Templates": the refusal of a text that is no approved template
# (SMPP 0x65, ESME_RX_P_APPN).
TEMPLATE_REQUIRED = "template_required"
_TEMPLATE_REQUIRED_HTTP = (
    'this account sends only approved templates: send "template" and "params" instead of "text"'
)
_TEMPLATE_REQUIRED_SMPP = (
    "this account sends only approved templates: the text matches none of them"
)


@dataclass(frozen=True, slots=True)
class FieldError:
    """A request field that is not acceptable (HTTP 422 `errors` entry)."""

    field: str
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message the rules refuse: its recipient as the client wrote it, the
    stable reason word, a detail for people, and the field that is at fault
    ("from" or "to"). HTTP answers it as a `rejected` entry or a field error,
    SMPP as a command_status."""

    to: str
    code: str
    detail: str
    field: str = "to"
    retry_after: float = 0.0  # seconds, for a refusal that passes (throughput)


@dataclass(slots=True)
class Draft:
    """A message as an ingress read it off the wire, before any rule.

    The ingress owns the syntax (JSON fields, PDU fields, UDH, alphabets);
    everything past it (whose sender, which number, which route, what
    price, and the account, compliance and credit rules) is `admit`'s.
    """

    ingress: str  # "http" | "smpp"
    sender: str
    to: str  # the recipient as the client wrote it
    body: str
    encoding: Encoding | str  # an Encoding, or "binary" (smpp_text)
    data_coding: int
    parts: int
    udh: bytes | None = None
    client_ref: str | None = None
    callback_url: str | None = None
    registered_delivery: int = 0
    validity: float | None = None
    valid_until: datetime | None = None
    send_at: datetime | None = None
    kind: str | None = None  # "transactional" | "promotional"; None over SMPP
    # The approved template the HTTP ingress rendered the body from (CONTRACT
    # §6 "Templates"); None for a free text and over SMPP.
    template_id: str | None = None

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS): one
    # is made for every message of both ingresses.
    def __init__(
        self,
        ingress: str,
        sender: str,
        to: str,
        body: str,
        encoding: Encoding | str,
        data_coding: int,
        parts: int,
        udh: bytes | None = None,
        client_ref: str | None = None,
        callback_url: str | None = None,
        registered_delivery: int = 0,
        validity: float | None = None,
        valid_until: datetime | None = None,
        send_at: datetime | None = None,
        kind: str | None = None,
        template_id: str | None = None,
    ) -> None:
        self.ingress = ingress
        self.sender = sender
        self.to = to
        self.body = body
        self.encoding = encoding
        self.data_coding = data_coding
        self.parts = parts
        self.udh = udh
        self.client_ref = client_ref
        self.callback_url = callback_url
        self.registered_delivery = registered_delivery
        self.validity = validity
        self.valid_until = valid_until
        self.send_at = send_at
        self.kind = kind
        self.template_id = template_id


@dataclass(slots=True)
class Recipient:
    e164: str  # "+14155550123"
    digits: str  # "14155550123"
    country: str | None  # ISO 3166 alpha-2

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS): one
    # is made per recipient.
    def __init__(self, e164: str, digits: str, country: str | None) -> None:
        self.e164 = e164
        self.digits = digits
        self.country = country


_NANP = re.compile(r"\+1[2-9][0-9]{9}")


def parse_recipient(to: str) -> Recipient | None:
    """An E.164 number from what a client sent, or None if it is not one.

    libphonenumber's `is_valid_number` refuses ranges it does not know yet
    (new mobile blocks, UK drama numbers); carriers decide those, so only
    the number's form is checked here.
    """
    if not isinstance(to, str) or not to.startswith("+"):
        return None
    if _NANP.fullmatch(to):
        # Most traffic: a NANP number already in E.164 form. Its national
        # number (area code 2-9, then 9 digits) is exactly the 10 digits
        # libphonenumber finds possible for +1, nothing is stripped as a
        # national prefix, so the number is its own E.164 form; only the
        # country needs libphonenumber, once per 7-digit prefix.
        digits = to[1:]
        try:
            country = _COUNTRY_BY_PREFIX[digits[:7]]
        except KeyError:
            country = country_of(phonenumbers.parse(to, None), digits)
        return Recipient(e164=to, digits=digits, country=country)
    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Recipient(e164=e164, digits=e164[1:], country=country_of(number, e164[1:]))


# Country of the first 7 digits of numbers under a shared country code.
_COUNTRY_BY_PREFIX: dict[str, str | None] = {}
_COUNTRY_CACHE_SIZE = 65536


def country_of(number: phonenumbers.PhoneNumber, digits: str) -> str | None:
    """ISO 3166 country of a parsed E.164 number (digits without '+')."""
    code = number.country_code
    if code is None:  # a parse always sets it; the type allows None
        return None
    regions = phonenumbers.region_codes_for_country_code(code)
    if len(regions) == 1:
        return None if regions[0] == "001" else regions[0]
    # Shared country codes (NANP's +1, +7, +44 ...) are told apart by the
    # first digits of the national number (for NANP the 3-digit area code).
    # libphonenumber tries every region's patterns in turn, so its answer is
    # kept per 7-digit prefix, which decides every shared code.
    prefix = digits[:7]
    try:
        return _COUNTRY_BY_PREFIX[prefix]
    except KeyError:
        pass
    # A number in no known range (a drama number, a new block) belongs to
    # the code's main country.
    region = phonenumbers.region_code_for_number(
        number
    ) or phonenumbers.region_code_for_country_code(code)
    country = None if region in ("ZZ", "001") else region
    if len(_COUNTRY_BY_PREFIX) < _COUNTRY_CACHE_SIZE:
        _COUNTRY_BY_PREFIX[prefix] = country
    return country


@dataclass(frozen=True, slots=True)
class Compliance:
    """The router-wide rules of CONTRACT §6 that `Admission` applies, built
    from the config (`compliance_of`) and replaced whole on reload."""

    sender_types: dict[str, NumberType] = field(default_factory=dict)  # [[numbers]] types
    sender_ids: SenderIdRules = field(default_factory=lambda: SenderIdRules((), ()))
    content: ContentRules = field(default_factory=lambda: compile_content_rules(()))
    max_per_recipient_per_hour: int = 0
    # "Opt-out rate": flag and suspend sender numbers (router/sender_guard.py).
    opt_out_min_recipients: int = 100
    opt_out_flag_rate: float = 0.05
    opt_out_suspend_rate: float = 0.10


class Admission:
    """Decisions about one account's message; its rules come from the
    config and are replaced on reload (`apply_config`)."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        prices: PriceTable,
        senders: dict[str, str],
        plans: dict[str, PriceTable] | None = None,
        compliance: Compliance | None = None,
        opt_outs: OptOutList | None = None,
        sender_states: SenderStates | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # CONTRACT §6 "Opt-out": kept current by whoever changes it (the
        # MO keywords, the APIs, other processes' NOTIFY), not by reloads.
        self.opt_outs = opt_outs if opt_outs is not None else OptOutList()
        # CONTRACT §6 "Opt-out rate": suspended sender numbers, kept current
        # by the SenderGuard (this process's decisions, others' by NOTIFY).
        self.sender_states = sender_states if sender_states is not None else SenderStates()
        # Counts outlive a reload: a new config does not refill the buckets
        # nor reopen a day's limit.
        self.velocity = RecipientVelocity(0, clock=clock)
        self.apply_config(
            routes=routes, prices=prices, senders=senders, plans=plans, compliance=compliance
        )
        self.throughput = ThroughputPlans(clock)
        self.daily = DailyCounts()
        self._zones: dict[str, tzinfo] = {}  # of the accounts counted per day
        # Account id → (its day, that day's start and end in UTC, the zone).
        self._days: dict[str, tuple[date, datetime, datetime, tzinfo]] = {}

    def apply_config(
        self,
        *,
        routes: RouteTable,
        prices: PriceTable,
        senders: dict[str, str],
        plans: dict[str, PriceTable] | None = None,
        compliance: Compliance | None = None,
    ) -> None:
        self.routes = routes
        self.prices = prices
        # [[price_plans]] by name: an account's own prices, before [[prices]]
        self.plans = plans or {}
        # sender number → owning account id ([[numbers]])
        self.senders = senders
        # CONTRACT §6's router-wide rules: sender IDs per country, content.
        self.compliance = compliance or Compliance()
        self.velocity.set_limit(self.compliance.max_per_recipient_per_hour)

    def admit(self, account: Account, draft: Draft, now: datetime) -> Message | Refusal:
        """The one decision both ingresses ask: the message to commit, or why not.

        Rules run cheapest first and the first refusal wins, so HTTP and
        SMPP refuse the same message for the same reason. A rule to come
        (account state, opt-out, sender IDs, content, credit) goes here.
        """
        if not self.sender_allowed(account, draft.sender):
            return Refusal(
                draft.to,
                "unknown_sender",
                f"{draft.sender!r} is not a sender of this account",
                field="from",
            )
        if self.sender_states.suspended(draft.sender):
            return Refusal(
                draft.to,
                "sender_suspended",
                f"{draft.sender} is suspended: its opt-out rate passed [compliance]"
                " opt_out_suspend_rate; an operator resumes it",
            )
        recipient = parse_recipient(draft.to)
        if recipient is None:
            return Refusal(draft.to, "invalid_number", "not an E.164 number")
        if self.opt_outs.opted_out(account.id, recipient.digits):
            return Refusal(
                draft.to,
                "opted_out",
                f"{recipient.e164} opted out of this account's messages (a STOP or an"
                " opt-out list); only the subscriber's START lifts a STOP",
            )
        country = recipient.country
        if account.allowed_countries and country not in account.allowed_countries:
            return Refusal(
                draft.to,
                "country_not_allowed",
                f"{recipient.e164} is in {country or 'no known country'}; the account may send"
                f" to {', '.join(sorted(account.allowed_countries))} (allowed_countries)",
            )
        refusal = self.refuse(draft.to, recipient, account)
        if refusal is not None:
            return refusal
        rules = self.compliance
        sender_type = rules.sender_types.get(draft.sender) or classify_sender(draft.sender)
        sender_id = rules.sender_ids.check(draft.sender, sender_type, country, account.sender_ids)
        if sender_id is not None:
            return Refusal(draft.to, sender_id.code, sender_id.detail)
        verdict = rules.content.check(draft.body, draft.kind, sender_type, country)
        if verdict.blocked is not None:
            return Refusal(draft.to, "content_blocked", verdict.detail)
        if account.templates_required and not self._template_sent(account, draft):
            detail = _TEMPLATE_REQUIRED_HTTP if draft.ingress == "http" else _TEMPLATE_REQUIRED_SMPP
            return Refusal(draft.to, TEMPLATE_REQUIRED, detail)
        # The counters last, so that only a message every other rule admits
        # is counted; one refused by a later counter is uncounted by those
        # before it.
        velocity = self.velocity.limit
        if velocity and not self.velocity.take(account.id, recipient.e164):
            return Refusal(
                draft.to,
                "recipient_velocity",
                f"the account sent {velocity} messages to {recipient.e164} in the last hour"
                " ([compliance] max_per_recipient_per_hour)",
                retry_after=self.velocity.wait(account.id, recipient.e164),
            )
        if account.max_tps > 0:
            wait = self.throughput.take(account.id, account.max_tps)
            if wait > 0:
                metrics.throttled("max_tps").inc()
                if velocity:
                    self.velocity.give_back(account.id, recipient.e164)
                return Refusal(
                    draft.to,
                    "throughput_exceeded",
                    f"over the account's {account.max_tps:g} messages per second;"
                    f" retry in {wait:.2f} s",
                    retry_after=wait,
                )
        if account.daily_limit or account.daily_alarm:
            day = self._day_of(account, now)
            if not self.daily.take(account.id, day, account.daily_limit):
                if velocity:
                    self.velocity.give_back(account.id, recipient.e164)
                return Refusal(
                    draft.to,
                    "limit_reached",
                    f"the account's daily limit of {account.daily_limit} messages is reached"
                    f" for {day.isoformat()}",
                )
        for rule in verdict.flagged:
            metrics.content_flagged(rule).inc()
        return self.new_message(account, draft, recipient, now)

    @staticmethod
    def _template_sent(account: Account, draft: Draft) -> bool:
        """CONTRACT §6 "Templates": is the text one of the account's approved
        templates? Over HTTP it was rendered from one by id (still approved
        in this process's copy); over SMPP it must be one with its variables
        filled."""
        if draft.template_id is not None:
            return draft.template_id in account.templates
        return (
            draft.ingress == "smpp"
            and draft.encoding != "binary"  # data, not text (smpp_text)
            and account.template_matcher.match(draft.body) is not None
        )

    def _day_of(self, account: Account, now: datetime) -> date:
        """The account's day at `now` (UTC). Converting every message's time
        to the account's zone cost a time zone look-up per message; the day
        changes once a day, so its bounds are kept and `now` compared with
        them (both in UTC: no zone is consulted)."""
        known = self._days.get(account.id)
        if known is not None and known[3] is account.zone and known[1] <= now < known[2]:
            return known[0]
        day = now.astimezone(account.zone).date()
        start = datetime.combine(day, dtime.min, account.zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), dtime.min, account.zone).astimezone(UTC)
        self._days[account.id] = (day, start, end, account.zone)
        self._zones[account.id] = account.zone
        return day

    def start_day(self, account: Account, day: date, stored: int) -> None:
        """At start: the messages the account had stored on its current day."""
        self._zones[account.id] = account.zone
        self.daily.start(account.id, day, stored, account.daily_alarm)

    def catch_up_day(self, account: Account, day: date, stored: int) -> None:
        """Later: the messages stored on its day by an account that got its
        daily thresholds while the router ran (an operator's change)."""
        self._zones[account.id] = account.zone
        self.daily.catch_up(account.id, day, stored, account.daily_alarm)

    def not_stored(self, messages: Sequence[Message]) -> None:
        """Admitted messages that were not stored after all (the commit
        failed, a queue was full, the Idempotency-Key was taken): they do
        not count against their day."""
        velocity = self.velocity.limit
        for m in messages:
            zone = self._zones.get(m.account_id)
            if zone is not None:
                self.daily.give_back(m.account_id, m.created_at.astimezone(zone).date())
            if velocity:
                self.velocity.give_back(m.account_id, m.recipient)

    def reached(self, messages: Sequence[Message]) -> None:
        """Messages the database refused for their account's daily limit
        (all instances' messages counted, migration 0014): the day is full
        here too."""
        for m in messages:
            zone = self._zones.get(m.account_id)
            if zone is not None:
                self.daily.reached(m.account_id, m.created_at.astimezone(zone).date())

    def throttled(self, messages: Sequence[Message]) -> None:
        """Messages the database refused for their account's max_tps (all
        instances' messages counted, migration 0014): the bucket is full
        here too."""
        for account_id in {m.account_id for m in messages}:
            self.throughput.fill(account_id)

    def sender_allowed(self, account: Account, sender: str) -> bool:
        return self.senders.get(sender) == account.id

    def refuse(
        self, to: str, recipient: Recipient, account: Account | None = None
    ) -> Refusal | None:
        """The routing rules for one recipient: a route and a price must exist."""
        if self.routes.lookup(recipient.digits) is None:
            return Refusal(to, "no_route", f"no route to {recipient.e164}")
        if self.unit_price(recipient.digits, account) is None:
            return Refusal(to, "no_route", f"no price for {recipient.e164}")
        return None

    def unit_price(self, digits: str, account: Account | None = None) -> Decimal | None:
        """Price per part: the longest matching prefix of the account's price
        plan, else of [[prices]] (CONTRACT §6 "Credit"); None if neither has one."""
        if account is not None and account.price_plan:
            plan = self.plans.get(account.price_plan)
            found = plan.price_of(digits) if plan is not None else None
            if found is not None:
                return found
        return self.prices.price_of(digits)

    def price(self, recipient: Recipient, parts: int, account: Account | None = None) -> Decimal:
        unit = self.unit_price(recipient.digits, account) or Decimal(0)
        return unit * parts

    def new_message(
        self, account: Account, draft: Draft, recipient: Recipient, now: datetime
    ) -> Message:
        """The admitted draft as the message to store, priced for the account."""
        valid_until = draft.valid_until
        if draft.validity:
            # Validity runs from the scheduled time when there is one.
            valid_until = (draft.send_at or now) + timedelta(seconds=draft.validity)
        return Message(
            id=new_message_id(),
            account_id=account.id,
            ingress=draft.ingress,
            sender=draft.sender,
            recipient=recipient.e164,
            body=draft.body,
            encoding=str(draft.encoding),
            data_coding=draft.data_coding,
            parts=draft.parts,
            price=self.price(recipient, draft.parts, account),
            created_at=now,
            udh=draft.udh,
            client_ref=draft.client_ref,
            callback_url=draft.callback_url or account.callback_url or None,
            registered_delivery=draft.registered_delivery,
            valid_until=valid_until,
            send_at=draft.send_at,
            status=Status.QUEUED,
            country=recipient.country,
            kind=draft.kind,
        )


def text_parts(text: str) -> tuple[Encoding, int]:
    """Encoding and part count of an HTTP text (what the 202 reports)."""
    return part_count(text)
