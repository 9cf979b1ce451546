"""The router's configuration: TOML file, environment overrides, validation.

Every section is a typed msgspec struct that refuses unknown keys, so a typo
is an error naming its key instead of a silently ignored setting. Loading
collects every error it can find (with its key path, e.g.
``carriers[1].window``) rather than stopping at the first, because an
operator fixing a config wants the whole list at once.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import msgspec
import phonenumbers

from smsrouter.router.content import ContentRule, ContentRuleError, compile_content_rules
from smsrouter.router.netaddr import url_refusal
from smsrouter.router.tls import TlsConfigError, client_context, is_pem_text, server_context

ENV_PREFIX = "SMSROUTER_"
# SMSROUTER_X_FILE: the value of SMSROUTER_X is in that file (_env_with_files).
FILE_SUFFIX = "_FILE"


class ConfigError(Exception):
    """A config that cannot be used; ``errors`` lists (key path, problem)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in errors))


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HttpConfig(_Section):
    listen: str = "127.0.0.1:8080"
    # Largest request body accepted: a 500-recipient batch with a long text
    # stays far below 1 MiB.
    max_body_bytes: int = 1 << 20
    # Seconds a request waits for its commit before it is answered 503: a
    # hung database must not hang every client (CONTRACT §11). Such a 503
    # means "unknown": retry with the same Idempotency-Key.
    request_timeout: float = 10.0
    # Seconds a connection may take to send a request's whole header
    # section (slowloris; Apache's mod_reqtimeout and nginx's
    # client_header_timeout default to 20 and 60 s).
    header_timeout: float = 10.0
    # Open connections from one source address; over it a connection is
    # answered 503 and closed (CONTRACT §11).
    max_connections_per_ip: int = 256


class SmppConfig(_Section):
    listen: str = "127.0.0.1:2775"
    # Outstanding deliver_sm (receipts) per ESME bind before we wait for it.
    window: int = 64
    # Seconds a new connection may stay unbound (SMPP 3.4 §2.9 leaves the
    # value to the SMSC; Kannel and cloudhopper use tens of seconds).
    bind_timeout: float = 30.0
    enquire_link_interval: float = 30.0
    inactivity_timeout: float = 120.0
    response_timeout: float = 30.0
    # Open connections from one source address (CONTRACT §11).
    max_connections_per_ip: int = 256
    # submit_sm read from one bind and not yet answered; past it the
    # router stops reading that socket until it has answered some
    # (SMPP 3.4 §2.7: the ESME's window is the ESME's to keep; ours bounds
    # what one partner can make us hold).
    max_outstanding: int = 200
    # CONTRACT §4 "TLS": with tls_cert and tls_key (paths, or the PEM text
    # from SMSROUTER_SMPP_TLS_KEY_FILE) a second listener speaks SMPP over
    # TLS; 3550 is IANA's port for it ("ssmpp").
    tls_listen: str = "127.0.0.1:3550"
    tls_cert: str = ""
    tls_key: str = ""

    def __repr__(self) -> str:
        # A key given as PEM text is a secret: never in a repr or a log line.
        key = "<pem>" if is_pem_text(self.tls_key) else repr(self.tls_key)
        fields = ", ".join(
            f"{name}={key if name == 'tls_key' else repr(getattr(self, name))}"
            for name in self.__struct_fields__
        )
        return f"SmppConfig({fields})"


class DatabaseConfig(_Section):
    url: str = ""
    data_dir: str = "./var/pg"
    pool_size: int = 10
    # Group commit: most rows one flush may carry (COPY/executemany batch).
    max_batch: int = 2000
    # Seconds at least between two flushes of the status writer (sent
    # parts, receipts, notification outcomes; never an acknowledgement to
    # an ESME or app). Under load a flush takes longer than this anyway;
    # with little traffic it turns one transaction per operation into one
    # per interval.
    status_flush_interval: float = 0.01
    # Seconds without a working database connection after which /healthz
    # answers 503, so that an orchestrator restarts the daemon (/readyz
    # answers 503 at once). CONTRACT §11.
    liveness_seconds: float = 60.0


class CarrierConfig(_Section):
    name: str
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    bind: Literal["transceiver", "transmitter+receiver"] = "transceiver"
    sessions: int = 1
    window: int = 64
    max_tps: float = 0.0
    enquire_link_interval: float = 30.0
    response_timeout: float = 30.0
    reconnect_delay: float = 1.0
    reconnect_max_delay: float = 30.0
    # How the carrier writes message ids in submit_sm_resp and in receipts:
    # some SMSCs answer in hex and receipt in decimal, or the reverse
    # (Kannel's msg-id-type). Numeric ids are matched by value.
    message_id_format: Literal["string", "hex", "decimal"] = "string"
    receipt_id_format: Literal["string", "hex", "decimal"] | None = (
        None  # None: as message_id_format
    )
    # GSM 03.38 text travels unpacked unless the carrier wants packed.
    gsm_packed: bool = False
    # How a long message's parts are tied together: 8- or 16-bit reference
    # UDH (TS 23.040 §9.2.3.24.1/.8), SAR TLVs (SMPP 3.4 §5.3.2.22-24), or
    # not at all: the whole text in one submit_sm's message_payload
    # (§5.3.2.32), cut by the carrier.
    concatenation: Literal["udh8", "udh16", "sar", "payload"] = "udh8"
    # After ESME_RTHROTTLED a bind sends nothing for this long (SMPP 3.4
    # §5.1.3 leaves the back-off to the ESME; Kannel waits 1 s).
    throttle_pause: float = 1.0
    # CONTRACT §4 "TLS": reach the carrier over TLS, its certificate
    # verified against tls_ca (a PEM bundle; empty = the system's trust
    # store) and checked to name `host`.
    tls: bool = False
    tls_ca: str = ""


class RouteCarrier(_Section):
    name: str
    cost: Decimal = Decimal(0)
    weight: int = 1


class RouteConfig(_Section):
    prefix: str
    carriers: list[RouteCarrier]


class PriceConfig(_Section):
    prefix: str
    price: Decimal


class PricePlanConfig(_Section):
    """``[[price_plans]]``: an account's own prices (CONTRACT §6 "Credit"),
    before ``[[prices]]``."""

    name: str
    prices: list[PriceConfig] = []


class AccountSmpp(_Section):
    system_id: str
    password: str
    max_binds: int = 4


class SenderIdConfig(_Section):
    """A sender ID registered for an account and the destination countries
    it is registered in (CONTRACT §6 "Sender-ID rules per destination
    country"): ``sender_ids = [{ id = "ACME", countries = ["AE"] }]``."""

    id: str
    countries: list[str]


class AccountConfig(_Section):
    id: str
    api_keys: list[str] = []
    smpp: AccountSmpp | None = None
    verified: bool = True
    locked: bool = False
    credit: Decimal = Decimal(0)
    currency: str = "EUR"
    callback_url: str = ""
    webhook_secret: str = ""
    # CONTRACT §3: the secret a rotation moves to; while set, callbacks are
    # signed with both, so receivers switch at their own pace.
    webhook_secret_next: str = ""
    inbound_url: str = ""
    allowed_ips: list[str] = []
    # Messages per second accepted over all the account's binds and
    # requests (CONTRACT §6 "Throughput plan"); 0: no account-wide cap.
    max_tps: float = 0.0
    # How far below zero the balance may go (CONTRACT §6 "Credit").
    credit_limit: Decimal = Decimal(0)
    # Messages accepted per day in the account's time zone (CONTRACT §6
    # "Daily thresholds"): an alarm once at daily_alarm (to alert_url if
    # set), refusals at daily_limit; 0: none.
    daily_alarm: int = 0
    daily_limit: int = 0
    timezone: str = "UTC"
    alert_url: str = ""
    price_plan: str = ""  # a [[price_plans]] name; "" = [[prices]] only
    # CONTRACT §6 "Opt-out": the answers to STOP, START and HELP; empty =
    # the default text, which names the account and how to opt back in.
    stop_reply: str = ""
    start_reply: str = ""
    help_reply: str = ""
    # CONTRACT §6 "Templates": only texts of approved templates.
    templates_required: bool = False
    # CONTRACT §6 "Geographic permissions": ISO 3166 alpha-2; empty = all.
    allowed_countries: list[str] = []
    sender_ids: list[SenderIdConfig] = []
    # A webhook to the message's callback URL when it is sent to a carrier
    # (status "sent"), besides the final one; off: only the final one.
    callback_sent: bool = False


class ComplianceConfig(_Section):
    """``[compliance]``: the router-wide rules of CONTRACT §6."""

    # "Opt-out rate": per sender over a rolling 24 h, counted from this many
    # distinct recipients; flagged, then suspended, at these rates.
    opt_out_min_recipients: int = 100
    opt_out_flag_rate: float = 0.05
    opt_out_suspend_rate: float = 0.10
    # Brands, banks, governments: refused as senders unless registered for
    # the account ("Sender-ID rules").
    protected_sender_ids: list[str] = []
    # "Geographic permissions and velocity": messages from one account to
    # one subscriber in a sliding hour; 0 = off.
    max_per_recipient_per_hour: int = 0


class SenderRuleConfig(_Section):
    """``[[sender_rules]]``: which senders a destination country admits."""

    country: str
    alphanumeric: Literal["allowed", "refused", "registered"] = "allowed"
    numeric: Literal["allowed", "registered"] = "allowed"


class ContentRuleConfig(_Section):
    """``[[content_rules]]``: a pattern run on every text (CONTRACT §6
    "Content") by a linear-time engine; `block` refuses, `flag` counts."""

    name: str
    pattern: str
    action: Literal["block", "flag"] = "block"
    kinds: list[Literal["transactional", "promotional"]] = []
    sender_types: list[Literal["long_code", "toll_free", "short_code", "alphanumeric"]] = []
    countries: list[str] = []


class RatesConfig(_Section):
    long_code: float = 0.25
    toll_free: float = 40.0
    short_code: float = 100.0
    alphanumeric: float = 10.0
    country: dict[str, dict[str, float]] = {}


class QueuesConfig(_Section):
    max_per_sender: int = 100_000


class WebhooksConfig(_Section):
    deny_private_networks: bool = False
    retry_hours: float = 72.0
    timeout: float = 10.0
    concurrency: int = 64


class NumberConfig(_Section):
    number: str
    account: str
    type: Literal["long_code", "toll_free", "short_code", "alphanumeric"] = "long_code"
    rate: float | None = None


class ShutdownConfig(_Section):
    drain_seconds: float = 10.0


class InstanceConfig(_Section):
    """``[instance]`` (CONTRACT §9): who this process is among those sharing
    one database, and how long its shard leases outlive its last renewal."""

    id: str = ""  # empty: host name and PID
    lease_seconds: float = 5.0


class RetentionConfig(_Section):
    """``[retention]`` (CONTRACT §10): days ended messages are kept, and
    the ledger's (0: for ever)."""

    days: int = 30
    ledger_days: int = 0


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class SimulatorConfig(_Section):
    """A carrier simulator the daemon runs beside itself (demo and tests).

    The keys are those of `smsrouter sim carrier` (sims/carrier.py);
    delays are seconds or their text forms "0.1-0.5" (uniform) and
    "exp:0.2" (exponential with that mean). Only the simulator knows those
    forms: the daemon's loader (smsrouter/config.py) passes its check of an
    entry to `load_config`, and a bad delay, weight or status is a config
    error naming the entry, not a traceback when the daemon starts it.
    """

    name: str
    port: int
    system_id: str = ""
    password: str = ""
    receipt_delay: float | str = 0.5
    # Receipt stat words (optionally ":err") and their weights,
    # e.g. {DELIVRD = 95, "UNDELIV:034" = 4, EXPIRD = 1}.
    receipts: dict[str, float] = msgspec.field(default_factory=lambda: {"DELIVRD": 1.0})
    seed: int | None = None
    tps: float = 0.0  # submit_sm per second per bind, 0 = no limit
    resp_latency: float | str = 0.0
    # submit_sm_resp command_status weights, e.g. {"0x58" = 1, "0x0B" = 1, "0" = 98};
    # empty = every submit_sm accepted.
    errors: dict[str, float] = msgspec.field(default_factory=dict)
    id_format: Literal["hex", "decimal"] = "hex"
    receipt_id_format: Literal["hex", "decimal"] | None = None  # None: as id_format
    receipt_first: float = 0.0  # probability that a receipt overtakes its submit_sm_resp
    # Where receipts carry id and state: {text = 1, tlv = 1, both = 1} weights.
    receipt_forms: dict[str, float] = msgspec.field(default_factory=lambda: {"both": 1.0})
    record: Literal["full", "count"] = "full"
    control_port: int | None = None  # HTTP control API on 127.0.0.1


class AdminToken(_Section):
    """An operator's bearer token (CONTRACT §8); `name` is the actor the
    audit log records for its changes."""

    name: str
    token: str

    def __repr__(self) -> str:
        # The token is a secret: never in a repr, a log line or a traceback.
        return f"AdminToken(name={self.name!r}, token=<hidden>)"


class AdminConfig(_Section):
    """``[admin]``: the operator API's listener and tokens (CONTRACT §8)."""

    listen: str = "127.0.0.1:8082"
    tokens: list[AdminToken] = []


# The shortest operator token accepted: 16 characters of even a small
# alphabet make guessing over the network hopeless behind the auth throttle.
ADMIN_TOKEN_MIN_LENGTH = 16


class Config(_Section):
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    smpp: SmppConfig = msgspec.field(default_factory=SmppConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    carriers: list[CarrierConfig] = []
    routes: list[RouteConfig] = []
    prices: list[PriceConfig] = []
    price_plans: list[PricePlanConfig] = []
    accounts: list[AccountConfig] = []
    rates: RatesConfig = msgspec.field(default_factory=RatesConfig)
    queues: QueuesConfig = msgspec.field(default_factory=QueuesConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    numbers: list[NumberConfig] = []
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    simulators: list[SimulatorConfig] = []
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    instance: InstanceConfig = msgspec.field(default_factory=InstanceConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    compliance: ComplianceConfig = msgspec.field(default_factory=ComplianceConfig)
    sender_rules: list[SenderRuleConfig] = []
    content_rules: list[ContentRuleConfig] = []
    # Account id → the keys its [[accounts]] table sets in the file: the
    # fields the file manages, which the operator API refuses to change
    # (CONTRACT §8, 409 managed_by_config). Filled from the raw TOML, since
    # a key set to its default is still set by the file.
    account_fields: dict[str, frozenset[str]] = {}

    def carrier(self, name: str) -> CarrierConfig | None:
        return next((c for c in self.carriers if c.name == name), None)


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "http": HttpConfig,
    "smpp": SmppConfig,
    "database": DatabaseConfig,
    "rates": RatesConfig,
    "queues": QueuesConfig,
    "webhooks": WebhooksConfig,
    "shutdown": ShutdownConfig,
    "log": LogConfig,
    "admin": AdminConfig,
    "instance": InstanceConfig,
    "retention": RetentionConfig,
    "compliance": ComplianceConfig,
}
_LISTS: dict[str, type[msgspec.Struct]] = {
    "carriers": CarrierConfig,
    "routes": RouteConfig,
    "prices": PriceConfig,
    "price_plans": PricePlanConfig,
    "accounts": AccountConfig,
    "numbers": NumberConfig,
    "simulators": SimulatorConfig,
    "sender_rules": SenderRuleConfig,
    "content_rules": ContentRuleConfig,
}


def parse_listen(value: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' → (host, port); ValueError if malformed."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value)
    if not m:
        raise ValueError(f"expected host:port, got {value!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


# What `smsrouter admin` reads (smsrouter/admin_cli.py): an operator's
# shell that has them set must still run the daemon, whose [admin] has no
# `token` or `url` key.
CLIENT_ENV = frozenset({"SMSROUTER_ADMIN_TOKEN", "SMSROUTER_ADMIN_URL"})


def _env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply SMSROUTER_<SECTION>_<KEY>=value to the table sections in place.

    Values are parsed as TOML values when they parse (numbers, booleans,
    arrays) and taken as plain strings otherwise, so
    ``SMSROUTER_HTTP_LISTEN=127.0.0.1:8081`` needs no quoting.
    """
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in _SECTIONS:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                try:
                    parsed: Any = tomllib.loads(f"v = {value}")["v"]
                except tomllib.TOMLDecodeError:
                    parsed = value
                raw.setdefault(section, {})[key] = parsed
                break


def _env_with_files(environ: Mapping[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The SMSROUTER_ variables, each SMSROUTER_X_FILE=path replaced by
    SMSROUTER_X = that file's contents (the Docker secrets convention, so
    that a password is never in the environment itself: CONTRACT §1).

    One trailing newline is dropped, as `echo` and editors leave one. A
    file that cannot be read, or X set beside X_FILE, is an error named by
    the variable; the file's contents are never part of a message.
    """
    resolved = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    errors: list[tuple[str, str]] = []
    for name, path in environ.items():
        if not (name.startswith(ENV_PREFIX) and name.endswith(FILE_SUFFIX)):
            continue
        del resolved[name]
        target = name[: -len(FILE_SUFFIX)]
        if target in environ:
            errors.append((name, f"{target} is also set: set one of them"))
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            errors.append((name, f"cannot read {path}: {reason}"))
            continue
        resolved[target] = text.removesuffix("\n").removesuffix("\r")
    return resolved, errors


def _path_of(prefix: str, msgspec_error: str) -> tuple[str, str]:
    """Split msgspec's '... - at `$.a[0].b`' into (key path, message)."""
    m = re.search(r" - at `\$(.*)`$", msgspec_error)
    path, msg = (prefix + m.group(1), msgspec_error[: m.start()]) if m else (prefix, msgspec_error)
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", msg)
    if unknown:
        return f"{path}.{unknown.group(1)}", "unknown key"
    return path, msg


#: A check of one entry of a list section that this module cannot make itself
#: (e.g. a [[simulators]] entry, whose forms are the simulator's): it takes the
#: converted entry and raises ValueError for a bad one.
EntryCheck = Callable[[Any], None]


def _convert(
    section: str,
    value: Any,
    typ: type[msgspec.Struct],
    errors: list,
    check: EntryCheck | None = None,
) -> Any:
    try:
        converted = msgspec.convert(value, typ, strict=False)
    except msgspec.ValidationError as exc:
        errors.append(_path_of(section, str(exc)))
        return None
    if check is not None:
        try:
            check(converted)
        except (ValueError, TypeError) as exc:
            # As msgspec reports a value its type refuses: the entry's path.
            errors.append((section, str(exc)))
            return None
    return converted


def parse_config(
    raw: dict[str, Any],
    environ: Mapping[str, str] | None = None,
    checks: Mapping[str, EntryCheck] | None = None,
) -> Config:
    """Validate a parsed TOML document (plus env overrides) into a Config.

    `checks` adds a check for each entry of a list section, by the
    section's name; its errors are reported with the others.
    """
    checks = checks or {}
    environ = os.environ if environ is None else environ
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    environ, errors = _env_with_files(environ)
    _env_overrides(raw, environ)
    values: dict[str, Any] = {}
    positions: dict[str, list[int]] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                errors.append((key, "expected a table"))
                continue
            converted = _convert(key, value, _SECTIONS[key], errors)
            if converted is not None:
                values[key] = converted
        elif key in _LISTS:
            if not isinstance(value, list):
                errors.append((key, "expected an array of tables ([[" + key + "]])"))
                continue
            check = checks.get(key)
            items = [
                _convert(f"{key}[{i}]", v, _LISTS[key], errors, check) for i, v in enumerate(value)
            ]
            values[key] = [item for item in items if item is not None]
            # Semantic errors name entries by their position in the file,
            # also when an earlier entry failed to convert.
            positions[key] = [i for i, item in enumerate(items) if item is not None]
        else:
            errors.append((key, "unknown section"))
    config = Config(**values, account_fields=_account_fields(raw.get("accounts")))
    if url := environ.get(ENV_PREFIX + "DATABASE_URL"):
        config.database.url = url
    errors.extend(_semantic_errors(config, positions))
    if errors:
        raise ConfigError(errors)
    return config


def _account_fields(accounts: Any) -> dict[str, frozenset[str]]:
    """Account id → the keys of its table in the file (tables without a
    string id are the converter's errors, not this map's)."""
    if not isinstance(accounts, list):
        return {}
    return {
        table["id"]: frozenset(table)
        for table in accounts
        if isinstance(table, dict) and isinstance(table.get("id"), str)
    }


def load_config(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    checks: Mapping[str, EntryCheck] | None = None,
) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("(file)", f"not valid TOML: {exc}")]) from None
    return parse_config(raw, environ, checks)


def _is_e164_prefix(prefix: str) -> bool:
    return prefix == "" or (prefix.isdigit() and len(prefix) <= 15)


def _plan_price_at(plan_at: str, i: int) -> str:
    return f"{plan_at}.prices[{i}]"


def _check_prices(
    prices: list[PriceConfig], where: Callable[[int], str], errors: list[tuple[str, str]]
) -> None:
    """A price list's entries: each prefix once, in E.164 digits, no negative price."""
    seen: set[str] = set()
    for i, p in enumerate(prices):
        if p.prefix in seen:
            errors.append((f"{where(i)}.prefix", f"prefix {p.prefix!r} priced twice"))
        seen.add(p.prefix)
        if not _is_e164_prefix(p.prefix):
            errors.append((f"{where(i)}.prefix", "must be E.164 digits (no '+'), or empty"))
        if p.price < 0:
            errors.append((f"{where(i)}.price", "must not be negative"))


def _semantic_errors(config: Config, positions: dict[str, list[int]]) -> list[tuple[str, str]]:
    """Cross-field checks msgspec's types cannot express."""
    errors: list[tuple[str, str]] = []

    def at(section: str, i: int) -> str:
        pos = positions.get(section)
        return f"{section}[{pos[i] if pos else i}]"

    for key in ("http", "smpp", "admin"):
        try:
            parse_listen(getattr(config, key).listen)
        except ValueError as exc:
            errors.append((f"{key}.listen", str(exc)))
    errors.extend(_smpp_tls_errors(config.smpp))
    # A lease renewed every second must outlive a missed renewal or two.
    if config.instance.lease_seconds < 2:
        errors.append(("instance.lease_seconds", "must be at least 2"))
    if any(c.isspace() for c in config.instance.id) or len(config.instance.id) > 100:
        errors.append(("instance.id", "must be at most 100 characters, no spaces"))
    if config.retention.days < 1:
        errors.append(("retention.days", "must be at least 1"))
    if config.retention.ledger_days < 0:
        errors.append(("retention.ledger_days", "must be 0 (for ever) or positive"))

    carrier_names: set[str] = set()
    for i, c in enumerate(config.carriers):
        if c.name in carrier_names:
            errors.append((f"{at('carriers', i)}.name", f"duplicate carrier name {c.name!r}"))
        carrier_names.add(c.name)
        if not 1 <= c.port <= 65535:
            errors.append((f"{at('carriers', i)}.port", "must be 1..65535"))
        if c.sessions < 1:
            errors.append((f"{at('carriers', i)}.sessions", "must be at least 1"))
        if c.window < 1:
            errors.append((f"{at('carriers', i)}.window", "must be at least 1"))
        if c.max_tps < 0:
            errors.append((f"{at('carriers', i)}.max_tps", "must be 0 (no cap) or positive"))
        # SMPP 3.4 §5.2.1: system_id is at most 16 octets with its NUL. The
        # password's 9 octets (§5.2.2) are not enforced: SMSCs in the field
        # accept longer ones and the contract's demo account uses one.
        if len(c.system_id) > 15:
            errors.append(
                (f"{at('carriers', i)}.system_id", "longer than 15 characters (SMPP 3.4 §5.2.1)")
            )
        errors.extend(_carrier_tls_errors(c, at("carriers", i)))

    seen_prefixes: set[str] = set()
    for i, r in enumerate(config.routes):
        if r.prefix in seen_prefixes:
            errors.append((f"{at('routes', i)}.prefix", f"prefix {r.prefix!r} routed twice"))
        seen_prefixes.add(r.prefix)
        if not _is_e164_prefix(r.prefix):
            errors.append((f"{at('routes', i)}.prefix", "must be E.164 digits (no '+'), or empty"))
        if not r.carriers:
            errors.append((f"{at('routes', i)}.carriers", "needs at least one carrier"))
        for j, rc in enumerate(r.carriers):
            if rc.name not in carrier_names:
                errors.append(
                    (f"{at('routes', i)}.carriers[{j}].name", f"unknown carrier {rc.name!r}")
                )
            if rc.cost < 0:
                errors.append((f"{at('routes', i)}.carriers[{j}].cost", "must not be negative"))

    _check_prices(config.prices, lambda i: at("prices", i), errors)
    plan_names: set[str] = set()
    for i, plan in enumerate(config.price_plans):
        if plan.name in plan_names:
            errors.append((f"{at('price_plans', i)}.name", f"duplicate price plan {plan.name!r}"))
        plan_names.add(plan.name)
        _check_prices(plan.prices, functools.partial(_plan_price_at, at("price_plans", i)), errors)

    account_ids: set[str] = set()
    api_keys: set[str] = set()
    system_ids: set[str] = set()
    for i, a in enumerate(config.accounts):
        if a.id in account_ids:
            errors.append((f"{at('accounts', i)}.id", f"duplicate account id {a.id!r}"))
        account_ids.add(a.id)
        for j, k in enumerate(a.api_keys):
            if k in api_keys:
                errors.append(
                    (f"{at('accounts', i)}.api_keys[{j}]", "API key used by another account")
                )
            api_keys.add(k)
        if a.smpp is not None:
            if a.smpp.system_id in system_ids:
                errors.append((f"{at('accounts', i)}.smpp.system_id", "used by another account"))
            system_ids.add(a.smpp.system_id)
            if len(a.smpp.system_id) > 15:
                errors.append((f"{at('accounts', i)}.smpp.system_id", "longer than 15 characters"))
        if a.max_tps < 0:
            errors.append((f"{at('accounts', i)}.max_tps", "must be 0 (no cap) or positive"))
        for j, ip in enumerate(a.allowed_ips):
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                errors.append(
                    (f"{at('accounts', i)}.allowed_ips[{j}]", f"not an IP or network: {ip!r}")
                )
        if a.price_plan and a.price_plan not in plan_names:
            errors.append((f"{at('accounts', i)}.price_plan", f"no price plan {a.price_plan!r}"))
        for key in ("daily_alarm", "daily_limit"):
            if getattr(a, key) < 0:
                errors.append((f"{at('accounts', i)}.{key}", "must be 0 (none) or positive"))
        try:
            zoneinfo.ZoneInfo(a.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            errors.append((f"{at('accounts', i)}.timezone", f"not a time zone: {a.timezone!r}"))
        for key in ("callback_url", "inbound_url", "alert_url"):
            url = getattr(a, key)
            if url and not re.match(r"https?://[^/\s]+", url):
                errors.append((f"{at('accounts', i)}.{key}", "must be an http:// or https:// URL"))
            elif url and config.webhooks.deny_private_networks:
                # Every spelling of a private address, as the API refuses it
                # (CONTRACT §11 "Callback addresses").
                refusal = url_refusal(url)
                if refusal is not None:
                    errors.append(
                        (f"{at('accounts', i)}.{key}", f"{refusal} (deny_private_networks)")
                    )
        for key in ("credit", "credit_limit"):
            try:
                if getattr(a, key) < 0:
                    errors.append((f"{at('accounts', i)}.{key}", "must not be negative"))
            except InvalidOperation:
                errors.append((f"{at('accounts', i)}.{key}", "not a decimal amount"))
        _check_countries(a.allowed_countries, f"{at('accounts', i)}.allowed_countries", errors)
        registered: set[str] = set()
        for j, sid in enumerate(a.sender_ids):
            where = f"{at('accounts', i)}.sender_ids[{j}]"
            if not sid.id.strip():
                errors.append((f"{where}.id", "must not be empty"))
            elif sid.id in registered:
                errors.append((f"{where}.id", f"sender ID {sid.id!r} registered twice"))
            registered.add(sid.id)
            if not sid.countries:
                errors.append((f"{where}.countries", "needs at least one country"))
            _check_countries(sid.countries, f"{where}.countries", errors)

    for i, n in enumerate(config.numbers):
        if n.account not in account_ids:
            errors.append((f"{at('numbers', i)}.account", f"unknown account {n.account!r}"))
        if n.rate is not None and n.rate < 0:
            errors.append((f"{at('numbers', i)}.rate", "must not be negative"))

    for code, rates in config.rates.country.items():
        if not re.fullmatch(r"[A-Z]{2}", code):
            errors.append((f"rates.country.{code}", "must be an ISO 3166 alpha-2 code"))
        for kind, value in rates.items():
            if kind not in ("long_code", "toll_free", "short_code", "alphanumeric"):
                errors.append((f"rates.country.{code}.{kind}", "unknown number type"))
            elif value < 0:
                errors.append((f"rates.country.{code}.{kind}", "must not be negative"))

    errors.extend(_admin_errors(config.admin))
    errors.extend(_compliance_errors(config, at))

    for i, s in enumerate(config.simulators):
        if not 1 <= s.port <= 65535:
            errors.append((f"{at('simulators', i)}.port", "must be 1..65535"))
    if config.queues.max_per_sender < 1:
        errors.append(("queues.max_per_sender", "must be at least 1"))
    if config.database.pool_size < 2:
        errors.append(("database.pool_size", "must be at least 2"))
    if not 0 <= config.database.status_flush_interval <= 1:
        errors.append(("database.status_flush_interval", "must be 0..1 seconds"))
    positive = (
        ("database", "liveness_seconds"),
        ("http", "request_timeout"),
        ("http", "header_timeout"),
        ("http", "max_connections_per_ip"),
        ("smpp", "max_connections_per_ip"),
        ("smpp", "max_outstanding"),
    )
    for section, key in positive:
        if getattr(getattr(config, section), key) <= 0:
            errors.append((f"{section}.{key}", "must be positive"))
    return errors


def _smpp_tls_errors(smpp: SmppConfig) -> list[tuple[str, str]]:
    """`[smpp] tls_listen`, `tls_cert`, `tls_key` (CONTRACT §4 "TLS"): both
    files or neither, and both loadable as the listener will load them."""
    errors: list[tuple[str, str]] = []
    try:
        tls_host, tls_port = parse_listen(smpp.tls_listen)
    except ValueError as exc:
        errors.append(("smpp.tls_listen", str(exc)))
    else:
        if (smpp.tls_cert or smpp.tls_key) and tls_port != 0:
            try:
                same = parse_listen(smpp.listen) == (tls_host, tls_port)
            except ValueError:
                same = False  # named under smpp.listen already
            if same:
                errors.append(("smpp.tls_listen", "is the address of smpp.listen"))
    if bool(smpp.tls_cert) != bool(smpp.tls_key):
        missing = "tls_key" if smpp.tls_cert else "tls_cert"
        given = "tls_cert" if smpp.tls_cert else "tls_key"
        errors.append((f"smpp.{missing}", f"required with smpp.{given}"))
    elif smpp.tls_cert:
        try:
            server_context(smpp.tls_cert, smpp.tls_key)
        except TlsConfigError as exc:
            errors.append((f"smpp.{exc.field}", exc.detail))
    return errors


def _carrier_tls_errors(carrier: CarrierConfig, where: str) -> list[tuple[str, str]]:
    """A carrier's `tls` and `tls_ca`: a CA bundle only for a TLS carrier,
    and one that loads."""
    if not carrier.tls:
        if carrier.tls_ca:
            return [(f"{where}.tls_ca", "set without tls = true: the carrier is reached in clear")]
        return []
    try:
        client_context(carrier.tls_ca)
    except TlsConfigError as exc:
        return [(f"{where}.{exc.field}", exc.detail)]
    return []


def _check_countries(countries: list[str], where: str, errors: list[tuple[str, str]]) -> None:
    """ISO 3166 alpha-2 codes that numbering plans know ("UK" is GB)."""
    for j, code in enumerate(countries):
        if code not in phonenumbers.SUPPORTED_REGIONS:
            errors.append((f"{where}[{j}]", f"not an ISO 3166 alpha-2 country code: {code!r}"))


def _compliance_errors(config: Config, at: Callable[[str, int], str]) -> list[tuple[str, str]]:
    """`[compliance]`, `[[sender_rules]]` and `[[content_rules]]` (CONTRACT §6)."""
    errors: list[tuple[str, str]] = []
    c = config.compliance
    if c.opt_out_min_recipients < 1:
        errors.append(("compliance.opt_out_min_recipients", "must be at least 1"))
    for key in ("opt_out_flag_rate", "opt_out_suspend_rate"):
        if not 0 < getattr(c, key) <= 1:
            errors.append((f"compliance.{key}", "must be a rate in (0, 1]"))
    if c.opt_out_flag_rate > c.opt_out_suspend_rate:
        errors.append(("compliance.opt_out_flag_rate", "must not exceed opt_out_suspend_rate"))
    if c.max_per_recipient_per_hour < 0:
        errors.append(("compliance.max_per_recipient_per_hour", "must be 0 (off) or positive"))
    for j, sid in enumerate(c.protected_sender_ids):
        if not sid.strip():
            errors.append((f"compliance.protected_sender_ids[{j}]", "must not be empty"))
    countries: set[str] = set()
    for i, rule in enumerate(config.sender_rules):
        where = f"{at('sender_rules', i)}.country"
        if rule.country not in phonenumbers.SUPPORTED_REGIONS:
            errors.append((where, f"not an ISO 3166 alpha-2 country code: {rule.country!r}"))
        elif rule.country in countries:
            errors.append((where, f"country {rule.country!r} has two rules"))
        countries.add(rule.country)
    names: set[str] = set()
    for i, content in enumerate(config.content_rules):
        where = at("content_rules", i)
        if not content.name.strip():
            errors.append((f"{where}.name", "must not be empty"))
        elif content.name in names:
            errors.append((f"{where}.name", f"duplicate content rule name {content.name!r}"))
        names.add(content.name)
        _check_countries(content.countries, f"{where}.countries", errors)
        try:
            # Each pattern on its own, so that every bad one is named.
            compile_content_rules([content_rule(content)])
        except ContentRuleError as bad:
            if bad.field == "pattern":
                errors.append((f"{where}.pattern", bad.detail))
    if len(names) == len(config.content_rules) and not errors:
        try:
            compile_content_rules(content_rule(c) for c in config.content_rules)
        except ContentRuleError as bad:
            errors.append(("content_rules", bad.detail))
    return errors


def content_rule(entry: ContentRuleConfig) -> ContentRule:
    """A `[[content_rules]]` entry as the content rules take it."""
    return ContentRule(
        entry.name,
        entry.pattern,
        entry.action,
        frozenset(entry.kinds),
        frozenset(entry.sender_types),
        frozenset(entry.countries),
    )


def _admin_errors(admin: AdminConfig) -> list[tuple[str, str]]:
    """Operator tokens (CONTRACT §8): each named once (its name is the
    audit log's actor) and long enough not to be guessed."""
    errors: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, t in enumerate(admin.tokens):
        if not t.name.strip():
            errors.append((f"admin.tokens[{i}].name", "must not be empty"))
        elif t.name in names:
            errors.append((f"admin.tokens[{i}].name", f"duplicate token name {t.name!r}"))
        names.add(t.name)
        if len(t.token) < ADMIN_TOKEN_MIN_LENGTH:
            errors.append(
                (
                    f"admin.tokens[{i}].token",
                    f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters",
                )
            )
    return errors
