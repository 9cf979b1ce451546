"""An HTTP load client for SMS APIs: `smsrouter sim http`.

`--concurrency` keep-alive connections post messages until `--count`
messages or `--duration` seconds, whichever comes first, one recipient per
request or `--batch N`; each connection carries one request at a time, and
one the server closes is opened again for the next request. The request
shape is pluggable, so the same client measures smsrouter and its peers:

* ``smsrouter`` — ``POST /v1/messages``, JSON, ``Authorization: Bearer``
  (CONTRACT §3); 202 lists an id per accepted recipient;
* ``kannel`` — ``GET /cgi-bin/sendsms`` of Kannel's smsbox with
  username, password, from, to (several recipients separated by spaces),
  text, ``dlr-mask`` and a ``dlr-url``; 202 ``0: Accepted for delivery``
  (or ``3: Queued for later delivery``), no id;
* ``jasmin`` — ``POST /send`` of Jasmin's HTTP API, form fields username,
  password, to (one recipient), from, content, ``dlr=yes``, ``dlr-url``,
  ``dlr-level``, ``dlr-method=POST``; 200 ``Success "<id>"``.

Connections open five at a time, each group once the previous one has
been answered (or after `ramp_wait`): Kannel's smsbox listens with a
backlog of 10, and a burst of 50 connects costs the overflow a 1 s SYN
retransmit.

With `--webhook-port` the process also runs `sims.webhook.WebhookReceiver`
as the callback / dlr-url endpoint and matches the reports it gets to the
accepted messages: by the returned id (smsrouter, Jasmin) or by a `ref`
this client puts in each request's dlr-url (Kannel returns no id). Only
final reports count as matched (Kannel with dlr-mask 31 also reports
"delivered to SMSC" first; Jasmin level 1 reports are the submit's status).

Prints one JSON line (see `HttpLoad.summary`).

The transport is bare asyncio Protocols around `httptools`, and each
request one bytes object whose constant head is built once per run: at
thousands of messages a second the client shares a small machine with the
system it measures, so every microsecond it spends per message is taken
from the measurement. Only plain ``http://`` URLs are supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import httptools
import msgspec

from smsrouter.sims.stats import Budget, Latencies, expand_numbers, per_second
from smsrouter.sims.webhook import WebhookReceiver
from smsrouter.sms.text import gsm7_encode

__all__ = ["APIS", "HttpLoad", "HttpOptions"]

# Connections opened at once while ramping up: half of Kannel's listen
# backlog of 10, so that no SYN overflows it and waits 1 s to be re-sent.
RAMP_STEP = 5


@dataclass
class HttpOptions:
    url: str = "http://127.0.0.1:8080"
    api: str = "smsrouter"
    key: str = ""  # smsrouter API key
    idempotency_keys: bool = False  # smsrouter: an Idempotency-Key on every request
    username: str = ""  # kannel / jasmin
    password: str = ""
    concurrency: int = 50
    count: int = 1000  # messages (recipients), not requests
    duration: float = 60.0
    rate: float = 0.0  # requests per second, 0 = as fast as answers come
    batch: int = 1
    senders: list[str] = field(default_factory=lambda: ["12345"])
    destinations: list[str] = field(default_factory=lambda: ["+14155550123"])
    text: str = "smsrouter load test"
    timeout: float = 30.0
    ramp_wait: float = 0.1
    callback_url: str = ""  # default: the in-process receiver's URL, if any
    webhook_port: int | None = None
    webhook_host: str = "127.0.0.1"
    webhook_secret: str = ""
    receipt_timeout: float = 30.0
    dlr_mask: int = 31  # kannel
    dlr_level: int = 2  # jasmin

    @classmethod
    def from_specs(cls, senders: str, destinations: str, **kwargs: Any) -> HttpOptions:
        return cls(
            senders=expand_numbers(senders), destinations=expand_numbers(destinations), **kwargs
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Where the requests go, from `--url`: http only, host, port, base path."""

    host: str
    port: int
    authority: str  # the Host header
    path: str  # without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url {url!r}: an http://host[:port][/path] URL is required")
        return cls(
            host=parts.hostname,
            port=parts.port or 80,
            authority=parts.netloc.rpartition("@")[2],
            path=parts.path.rstrip("/"),
        )


def _quote(value: str, *, plus: bool = False) -> str:
    """`value` percent-encoded for a query or form (`plus`: spaces as '+').

    Phone numbers are nearly all the per-request values: they skip urllib's
    general (and slow) path with the same result.
    """
    if value.isascii():
        if value.isdigit():
            return value
        if value[:1] == "+" and value[1:].isdigit():
            return "%2B" + value[1:]
    return quote_plus(value, safe="") if plus else quote(value, safe="")


@dataclass(slots=True)
class Outcome:
    """What one answer said: recipients accepted, ids to expect reports for."""

    accepted: int = 0
    # (report key, reports expected under it)
    keys: list[tuple[str, int]] = field(default_factory=list)
    # Reasons of refused recipients; None when there were none (most answers:
    # no Counter to build for them).
    rejected: Counter[str] | None = None
    error: str | None = None


class _Accepted(msgspec.Struct):
    id: str | int


class _Rejected(msgspec.Struct):
    code: Any = "?"


class _Answer(msgspec.Struct):
    """A 202 of smsrouter's /v1/messages, as far as the client reads it."""

    messages: list[_Accepted]
    rejected: list[_Rejected] | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode
_encode_json = msgspec.json.encode


class SmsrouterApi:
    name = "smsrouter"
    FINAL = frozenset({"delivered", "undelivered", "expired", "rejected", "failed"})

    def __init__(self, options: HttpOptions, callback_url: str) -> None:
        target = Target.parse(options.url)
        self.text = options.text
        self.callback_url = callback_url
        self.head = (
            f"POST {target.path}/v1/messages HTTP/1.1\r\n"
            f"Host: {target.authority}\r\n"
            f"Authorization: Bearer {options.key}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        # A key per request, unique to this run (CONTRACT §3), as a client
        # that retries after a timeout sends them.
        self.keys = f"{secrets.token_hex(8)}-" if options.idempotency_keys else ""
        # The body is {"from", "to", "text"[, "callback_url"]}: all after "to"
        # is the same in every request.
        rest: dict[str, str] = {"text": options.text}
        if callback_url:
            rest["callback_url"] = callback_url
        self.body_tail = b"," + _encode_json(rest)[1:]

    def request(self, n: int, sender: str, recipients: list[str]) -> tuple[bytes, str | None]:
        to = recipients[0] if len(recipients) == 1 else recipients
        body = b'{"from":' + _encode_json(sender) + b',"to":' + _encode_json(to) + self.body_tail
        if self.keys:
            return (
                b"%sIdempotency-Key: %s%d\r\nContent-Length: %d\r\n\r\n%s"
                % (self.head, self.keys.encode(), n, len(body), body),
                None,
            )
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body), None

    def parse(self, status: int, body: bytes, recipients: list[str], ref: str | None) -> Outcome:
        if status != 202:
            return Outcome(error=str(status))
        try:
            answer = _decode_answer(body)
        except msgspec.DecodeError:
            return Outcome(error="bad_body")
        messages = answer.messages
        out = Outcome(accepted=len(messages), keys=[(str(m.id), 1) for m in messages])
        if answer.rejected:
            out.rejected = Counter(str(item.code) for item in answer.rejected)
        return out

    @classmethod
    def final(cls, status: str) -> bool:
        return status in cls.FINAL


class KannelApi:
    """Kannel's sendsms (smsbox `sendsms-port`, path /cgi-bin/sendsms)."""

    name = "kannel"
    # %d of a dlr-url: 1 delivered, 2 undelivered, 4 queued on SMSC,
    # 8 delivered to SMSC, 16 rejected by SMSC; 1, 2 and 16 are final.
    FINAL = frozenset({"1", "2", "16"})

    def __init__(self, options: HttpOptions, callback_url: str) -> None:
        target = Target.parse(options.url)
        fixed: dict[str, str] = {"username": options.username, "password": options.password}
        fixed["charset"] = "UTF-8"
        if gsm7_encode(options.text) is None:
            fixed["coding"] = "2"  # UCS-2; smsbox converts from charset
        self.text = options.text
        self.callback_url = callback_url
        self.dlr_mask = options.dlr_mask
        # Percent-encode everything ('%20', never '+'): text and dlr-url must
        # reach smsbox byte for byte, the dlr-url's own '%d' as '%25d'.
        # Parameters: the fixed ones, from, to, text, dlr-mask, dlr-url.
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fixed.items())
        self.head = f"GET {target.path}/cgi-bin/sendsms?{query}&from="
        self.after_to = f"&text={quote(options.text, safe='')}"
        self.dlr_tail = ""
        if callback_url:
            sep = "&" if "?" in callback_url else "?"
            # %d is Kannel's escape for the report type, filled in per report;
            # the ref between these two parts tells the requests apart.
            dlr_head = quote(f"{callback_url}{sep}ref=", safe="")
            self.after_to += f"&dlr-mask={self.dlr_mask}&dlr-url={dlr_head}"
            self.dlr_tail = quote("&status=%d", safe="")
        self.end = f" HTTP/1.1\r\nHost: {target.authority}\r\n\r\n"
        self._senders: dict[str, str] = {}

    def request(self, n: int, sender: str, recipients: list[str]) -> tuple[bytes, str | None]:
        ref = f"k{n}"
        quoted = self._senders.get(sender)
        if quoted is None:
            quoted = self._senders[sender] = _quote(sender)
        # Recipients separated by spaces: '%20' between the encoded numbers.
        to = "%20".join([_quote(r) for r in recipients])
        tag = f"{ref}{self.dlr_tail}" if self.callback_url else ""
        line = f"{self.head}{quoted}&to={to}{self.after_to}{tag}{self.end}"
        return line.encode(), ref

    def parse(self, status: int, body: bytes, recipients: list[str], ref: str | None) -> Outcome:
        if status != 202 or not body.startswith((b"0:", b"3:")):
            return Outcome(error=str(status))
        keys = [(ref, len(recipients))] if ref is not None and self.callback_url else []
        return Outcome(accepted=len(recipients), keys=keys)

    @classmethod
    def final(cls, status: str) -> bool:
        return status in cls.FINAL


class JasminApi:
    """Jasmin's HTTP API (`/send`, port 1401 by default), form POST."""

    name = "jasmin"
    NOT_FINAL = frozenset({"ACCEPTD", "ENROUTE"})

    def __init__(self, options: HttpOptions, callback_url: str) -> None:
        if options.batch != 1:
            raise ValueError("Jasmin's /send takes one recipient per request (--batch 1)")
        target = Target.parse(options.url)
        fixed: dict[str, str | bytes] = {
            "username": options.username,
            "password": options.password,
        }
        if gsm7_encode(options.text) is None:
            fixed["coding"] = "8"
            fixed["content"] = options.text.encode("utf-16-be")  # UCS-2 octets
        else:
            fixed["content"] = options.text
        self.callback_url = callback_url
        if callback_url:
            fixed.update(
                {
                    "dlr": "yes",
                    "dlr-url": callback_url,
                    "dlr-level": str(options.dlr_level),
                    "dlr-method": "POST",
                }
            )
        # Form fields: the fixed ones, then to and from.
        self.form_head = urlencode(fixed) + "&to="
        self.head = (
            f"POST {target.path}/send HTTP/1.1\r\n"
            f"Host: {target.authority}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: "
        ).encode()
        self._senders: dict[str, str] = {}

    def request(self, n: int, sender: str, recipients: list[str]) -> tuple[bytes, str | None]:
        quoted = self._senders.get(sender)
        if quoted is None:
            quoted = self._senders[sender] = _quote(sender, plus=True)
        body = f"{self.form_head}{_quote(recipients[0], plus=True)}&from={quoted}".encode()
        return b"%s%d\r\n\r\n%s" % (self.head, len(body), body), None

    def parse(self, status: int, body: bytes, recipients: list[str], ref: str | None) -> Outcome:
        if status != 200 or not body.startswith(b"Success"):
            return Outcome(error=str(status))
        message_id = body[len(b"Success") :].strip().strip(b'"').decode("latin-1")
        return Outcome(accepted=1, keys=[(message_id, 1)])

    @classmethod
    def final(cls, status: str) -> bool:
        # Level 1 reports carry the submit_sm_resp status (ESME_ROK ...),
        # level 2 ones the receipt's stat word.
        return not status.startswith("ESME_") and status not in cls.NOT_FINAL


APIS: dict[str, type[SmsrouterApi | KannelApi | JasminApi]] = {
    "smsrouter": SmsrouterApi,
    "kannel": KannelApi,
    "jasmin": JasminApi,
}


class _Failed(Exception):
    """A connection that could not be opened; `code` is its key in `errors`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Connection(asyncio.Protocol):
    """One keep-alive connection of a `_Stream`, one request at a time.

    The answer (or the failure) of the request in flight goes straight to
    the stream from the parser's callbacks. After an answer that ends the
    connection (`Connection: close`, or a body that runs to the close)
    `open` is False and the stream opens a new one.
    """

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.in_flight = False
        self.sent_at = 0.0
        self.body = b""
        self.answering = False  # an answer's head is read, its end is not

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.in_flight:
            return
        self.in_flight = False
        if self.answering and not self.parser.should_keep_alive():
            # An answer without Content-Length or chunks ends with the connection.
            self.answering = False
            self.stream.answered(self.parser.get_status_code(), self.body)
        else:
            self.stream.failed("disconnected")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            raise  # a fault of this client's own, not of the answer
        except httptools.HttpParserError:
            self.fail("bad_response")

    def on_headers_complete(self) -> None:
        self.answering = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.answering = False
        body, self.body = self.body, b""
        in_flight, self.in_flight = self.in_flight, False
        if not in_flight or not self.parser.should_keep_alive():
            # An answer to no request leaves the stream out of step: start afresh.
            self.close()
        if in_flight:
            # The stream may write its next request from here, on this
            # connection if it stays open.
            self.stream.answered(self.parser.get_status_code(), body)

    def send(self, data: bytes, now: float) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent_at = now
        self.transport.write(data)

    def fail(self, code: str) -> None:
        """Give up on the request in flight (if any) and drop the connection."""
        self.open = False
        if self.transport is not None:
            self.transport.abort()
        if self.in_flight:
            self.in_flight = False
            self.stream.failed(code)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class _Stream:
    """One of the `--concurrency` request streams: requests one after the
    other on a keep-alive connection, reopened when it closes.

    Driven by callbacks rather than a task: the answer's parser callback
    hands the answer over and writes the next request on the spot, with no
    future, task switch or loop pass per request.
    """

    __slots__ = (
        "answered_once",
        "conn",
        "first_answer",
        "load",
        "recipients",
        "ref",
        "started",
    )

    def __init__(self, load: HttpLoad) -> None:
        self.load = load
        self.conn: _Connection | None = None
        self.recipients: list[str] = []
        self.ref: str | None = None
        self.started = 0.0
        # Set at the first answer or failure (or at the end): the ramp waits on it.
        self.first_answer = asyncio.Event()
        self.answered_once = False

    def next(self) -> None:
        """Send the next request now, or wait for a token, or finish."""
        r = self.load.budget.take()
        if r is None:
            self.load._park(self)
        else:
            self.send(r)

    def send(self, r: int) -> None:
        load = self.load
        recipients = load._recipients(r)
        senders = load.options.senders
        data, self.ref = load.api.request(r, senders[r % len(senders)], recipients)
        self.recipients = recipients
        self.started = started = time.monotonic()
        if not load.first_request_at:
            load.first_request_at = started
        load.requests += 1
        load.sent += len(recipients)
        conn = self.conn
        if conn is not None and conn.open:
            conn.send(data, started)
        else:
            load._spawn(self._reopen(data))

    async def _reopen(self, data: bytes) -> None:
        try:
            self.conn = await self.load._connect(self)
        except _Failed as failure:
            self.failed(failure.code)
            return
        self.conn.send(data, self.started)

    def answered(self, status: int, body: bytes) -> None:
        self.load._answered(self, status, body)
        if not self.answered_once:
            self.answered_once = True
            self.first_answer.set()
        self.next()

    def failed(self, code: str) -> None:
        self.load.errors[code] += 1
        self.first_answer.set()
        self.next()

    def finish(self) -> None:
        self.first_answer.set()
        if self.conn is not None:
            self.conn.close()


class _Reports:
    """Final reports matched to accepted messages by key."""

    def __init__(self, final: Callable[[str], bool]) -> None:
        self.final = final
        self.expected: dict[str, list[float]] = {}  # key -> [sent_at, reports still due]
        self.early: dict[str, list[float]] = {}  # key -> arrival times before the answer
        self.done: set[str] = set()
        self.due = 0
        self.received = 0
        self.finals = 0
        self.matched = 0
        self.duplicates = 0
        self.latency = Latencies()
        self.last_final_at = 0.0
        # Set whenever no accepted message is waiting for its report.
        self.settled = asyncio.Event()

    def expect(self, key: str, count: int, sent_at: float) -> None:
        self.due += count
        arrivals = self.early.pop(key, None) if self.early else None
        if arrivals is None:
            if count > 0:  # the usual case: the answer came before any report
                self.expected[key] = [sent_at, float(count)]
                self.settled.clear()
            else:
                self.done.add(key)
            return
        for at in arrivals[:count]:
            self._match(at - sent_at)
        self.duplicates += max(0, len(arrivals) - count)
        count -= len(arrivals)
        if count > 0:
            self.expected[key] = [sent_at, float(count)]
            self.settled.clear()
        else:
            self.done.add(key)

    def report(self, key: str, status: str, at: float) -> None:
        self.received += 1
        if not self.final(status):
            return
        self.finals += 1
        self.last_final_at = at
        entry = self.expected.get(key)
        if entry is not None:
            self._match(at - entry[0])
            entry[1] -= 1
            if entry[1] <= 0:
                del self.expected[key]
                self.done.add(key)
                if not self.expected:
                    self.settled.set()
        elif key in self.done:
            self.duplicates += 1
        else:
            self.early.setdefault(key, []).append(at)

    def _match(self, latency: float) -> None:
        self.matched += 1
        self.latency.add(latency)


class HttpLoad:
    """One load run; `await HttpLoad(options).run()` returns the summary dict."""

    def __init__(self, options: HttpOptions) -> None:
        if options.concurrency < 1 or options.batch < 1:
            raise ValueError("concurrency and batch must be at least 1")
        if options.api not in APIS:
            raise ValueError(f"unknown api {options.api!r}; one of {', '.join(APIS)}")
        if options.timeout <= 0:
            raise ValueError("timeout must be positive")
        self.options = options
        self.target = Target.parse(options.url)
        self.requests_total = math.ceil(options.count / options.batch)
        self.budget = Budget(self.requests_total, options.duration, options.rate)
        self.receiver: WebhookReceiver | None = None
        self.api: SmsrouterApi | KannelApi | JasminApi = APIS[options.api](
            options, options.callback_url
        )
        self.reports = _Reports(self.api.final)
        self.requests = 0
        self.sent = 0
        self.accepted = 0
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.latency = Latencies()
        self.first_request_at = 0.0
        self.last_response_at = 0.0
        self.connections = 0
        self.reconnects = 0
        self.ramp_s = 0.0
        self._interrupted = False
        self._streams: list[_Stream] = []
        self._running = 0  # streams not finished
        self._all_finished: asyncio.Future[None] | None = None
        # Streams waiting for a `--rate` token, in turn, and the timer that
        # hands the tokens out.
        self._parked: deque[_Stream] = deque()
        self._pacer: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """End the run early (SIGINT): stop sending, skip the receipt wait."""
        self._interrupted = True
        self.budget.stop()
        self.reports.settled.set()
        if self._parked:
            # Parked streams finish now rather than at their next token.
            if self._pacer is not None:
                self._pacer.cancel()
            self._pacer = asyncio.get_running_loop().call_soon(self._pace)

    def _recipients(self, r: int) -> list[str]:
        dests = self.options.destinations
        batch = self.options.batch
        if batch == 1:
            return [dests[r % len(dests)]]
        first = r * batch
        last = min(first + batch, self.options.count)
        return [dests[i % len(dests)] for i in range(first, last)]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, stream: _Stream) -> _Connection:
        """A new connection for `stream`; raises `_Failed` when none opens."""
        if stream.conn is not None:
            stream.conn.close()
            self.reconnects += 1
        loop = asyncio.get_running_loop()
        conn = _Connection(stream)
        try:
            async with asyncio.timeout(self.options.timeout):
                await loop.create_connection(lambda: conn, self.target.host, self.target.port)
        except TimeoutError:  # before OSError: it is one
            raise _Failed("timeout") from None
        except OSError:
            raise _Failed("connect_error") from None
        return conn

    def _answered(self, stream: _Stream, status: int, body: bytes) -> None:
        now = time.monotonic()
        self.last_response_at = now
        self.latency.add(now - stream.started)
        self.statuses[str(status)] += 1
        outcome = self.api.parse(status, body, stream.recipients, stream.ref)
        if outcome.error is not None:
            self.errors[outcome.error] += 1
        self.accepted += outcome.accepted
        if outcome.rejected:
            self.rejected.update(outcome.rejected)
        if self.receiver is not None:
            for key, count in outcome.keys:
                self.reports.expect(key, count, stream.started)

    # Pacing (`--rate`): a stream that finds no token parks; one timer hands
    # tokens to the parked streams in turn. Fifty streams polling the bucket
    # each millisecond would cost more CPU than the requests they pace.

    def _park(self, stream: _Stream) -> None:
        wait = self.budget.wait()
        if wait is None:
            self._finish(stream)
            return
        self._parked.append(stream)
        if self._pacer is None:
            loop = asyncio.get_running_loop()
            self._pacer = loop.call_later(max(wait, 0.001), self._pace)

    def _pace(self) -> None:
        self._pacer = None
        parked = self._parked
        budget = self.budget
        while parked:
            r = budget.take()
            if r is None:
                break
            parked.popleft().send(r)
        if not parked:
            return
        wait = budget.wait()
        if wait is None:
            while parked:
                self._finish(parked.popleft())
        else:
            self._pacer = asyncio.get_running_loop().call_later(max(wait, 0.001), self._pace)

    def _finish(self, stream: _Stream) -> None:
        stream.finish()
        self._running -= 1
        done = self._all_finished
        if self._running == 0 and done is not None and not done.done():
            done.set_result(None)

    async def _expire(self) -> None:
        """Fail requests unanswered for `timeout`: one sweep a tenth of the
        timeout (at most a second) apart, cheaper than a timer per request."""
        timeout = self.options.timeout
        interval = min(1.0, max(0.005, timeout / 10.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for stream in self._streams:
                conn = stream.conn
                if conn is not None and conn.in_flight and now - conn.sent_at >= timeout:
                    conn.fail("timeout")

    async def run(self) -> dict[str, Any]:
        opts = self.options
        cpu_at_start = time.process_time()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        if opts.webhook_port is not None:
            self.receiver = WebhookReceiver(
                secret=opts.webhook_secret, keep_bodies=False, listener=self.reports.report
            )
            await self.receiver.start(opts.webhook_host, opts.webhook_port)
            if not opts.callback_url:
                self.api = APIS[opts.api](opts, self.receiver.url)
        self._all_finished = loop.create_future()
        expiry = loop.create_task(self._expire())
        try:
            self.budget.start()
            streams = self._streams
            while len(streams) < opts.concurrency and not self.budget.exhausted:
                # Ramp: open RAMP_STEP connections, then wait for their
                # first answers (at most ramp_wait) before the next ones.
                step = [
                    _Stream(self) for _ in range(min(RAMP_STEP, opts.concurrency - len(streams)))
                ]
                streams += step
                self._running += len(step)
                for stream in step:
                    stream.next()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(opts.ramp_wait):
                        for stream in step:
                            await stream.first_answer.wait()
            self.ramp_s = time.monotonic() - self.budget.started_at
            self.connections = len(streams)
            if self._running:
                await self._all_finished
            expiry.cancel()
            if self.receiver is not None and not self._interrupted:
                await self._until_reports()
        finally:
            expiry.cancel()
            if self._pacer is not None:
                self._pacer.cancel()
            for task in list(self._tasks):
                task.cancel()
            for stream in self._streams:
                if stream.conn is not None:
                    stream.conn.close()
            if self.receiver is not None:
                await self.receiver.stop()
        return self.summary(started, cpu_at_start)

    async def _until_reports(self) -> None:
        if not self.reports.expected:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reports.settled.wait(), self.options.receipt_timeout)

    def summary(self, started: float, cpu_at_start: float) -> dict[str, Any]:
        """The run as one flat JSON object.

        requests_per_s / messages_per_s: answered requests / accepted
        messages per second from the first request to the last answer.
        latency_ms: request to its answer. reconnects: connections opened
        (or tried) again after the server or a timeout ended one; errors:
        by answer status, or ``disconnected`` (the connection ended before
        the answer), ``timeout``, ``connect_error``, ``bad_response`` (no
        HTTP), ``bad_body``. With the in-process webhook:
        receipts_received (every report), receipts_final, receipts_matched
        (final reports of accepted messages), receipts_per_s (final reports
        from the first request to the last final report) and
        receipt_latency_ms (request to its final report).
        """
        opts = self.options
        t0 = self.first_request_at
        span = (self.last_response_at - t0) if t0 and self.last_response_at else 0.0
        answered = sum(self.statuses.values())
        out: dict[str, Any] = {
            "tool": "http",
            "api": opts.api,
            "target": opts.url,
            "concurrency": opts.concurrency,
            "connections": self.connections,
            "reconnects": self.reconnects,
            "ramp_s": round(self.ramp_s, 3),
            "batch": opts.batch,
            "requests": self.requests,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "errors": dict(sorted(self.errors.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "requests_per_s": per_second(answered, span),
            "messages_per_s": per_second(self.accepted, span),
            "latency_ms": self.latency.summary(),
        }
        if self.receiver is not None:
            r = self.reports
            receipt_span = (r.last_final_at - t0) if t0 and r.last_final_at else 0.0
            out.update(
                {
                    "callback_url": self.api.callback_url,
                    "receipts_received": r.received,
                    "receipts_final": r.finals,
                    "receipts_expected": r.due,
                    "receipts_matched": r.matched,
                    "receipts_unmatched": r.finals - r.matched,
                    "receipts_duplicate": r.duplicates,
                    "receipts_by_status": dict(sorted(self.receiver.by_status.items())),
                    "receipts_per_s": per_second(r.finals, receipt_span),
                    "receipt_latency_ms": r.latency.summary(),
                    "signature_failures": self.receiver.signature_failures,
                }
            )
        out["elapsed_s"] = round(time.monotonic() - started, 3)
        out["cpu_s"] = round(time.process_time() - cpu_at_start, 3)
        if self._interrupted:
            out["interrupted"] = True
        return out
