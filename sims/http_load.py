"""An HTTP load client for SMS APIs: `smsrouter sim http`.

`--concurrency` keep-alive connections (aiohttp) post messages until
`--count` messages or `--duration` seconds, whichever comes first, one
recipient per request or `--batch N`. The request shape is pluggable, so
the same client measures smsrouter and its peers:

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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yarl

from connectors.smpp.text import gsm7_encode
from sims.stats import Budget, Latencies, expand_numbers, per_second
from sims.webhook import WebhookReceiver

__all__ = ["APIS", "HttpLoad", "HttpOptions"]

# Connections opened at once while ramping up: half of Kannel's listen
# backlog of 10, so that no SYN overflows it and waits 1 s to be re-sent.
RAMP_STEP = 5


@dataclass
class HttpOptions:
    url: str = "http://127.0.0.1:8080"
    api: str = "smsrouter"
    key: str = ""  # smsrouter API key
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


@dataclass(slots=True)
class Request:
    method: str
    url: yarl.URL
    headers: dict[str, str]
    body: bytes | None


@dataclass(slots=True)
class Outcome:
    """What one answer said: recipients accepted, ids to expect reports for."""

    accepted: int = 0
    # (report key, reports expected under it)
    keys: list[tuple[str, int]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    error: str | None = None


class SmsrouterApi:
    name = "smsrouter"
    FINAL = frozenset({"delivered", "undelivered", "expired", "rejected", "failed"})

    def __init__(self, options: HttpOptions, callback_url: str) -> None:
        self.url = yarl.URL(options.url.rstrip("/") + "/v1/messages")
        self.headers = {
            "Authorization": f"Bearer {options.key}",
            "Content-Type": "application/json",
        }
        self.text = options.text
        self.callback_url = callback_url

    def request(self, n: int, sender: str, recipients: list[str]) -> tuple[Request, str | None]:
        body: dict[str, Any] = {
            "from": sender,
            "to": recipients[0] if len(recipients) == 1 else recipients,
            "text": self.text,
        }
        if self.callback_url:
            body["callback_url"] = self.callback_url
        return Request("POST", self.url, self.headers, json.dumps(body).encode()), None

    def parse(self, status: int, body: bytes, recipients: list[str], ref: str | None) -> Outcome:
        if status != 202:
            return Outcome(error=str(status))
        try:
            answer = json.loads(body)
            messages = answer["messages"]
            rejected = answer.get("rejected") or []
        except (ValueError, KeyError, TypeError):
            return Outcome(error="bad_body")
        out = Outcome(accepted=len(messages), keys=[(str(m["id"]), 1) for m in messages])
        for item in rejected:
            out.rejected[str(item.get("code", "?"))] += 1
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
        self.base = options.url.rstrip("/") + "/cgi-bin/sendsms?"
        fixed: dict[str, str] = {"username": options.username, "password": options.password}
        fixed["charset"] = "UTF-8"
        if gsm7_encode(options.text) is None:
            fixed["coding"] = "2"  # UCS-2; smsbox converts from charset
        self.fixed = fixed
        self.text = options.text
        self.callback_url = callback_url
        self.dlr_mask = options.dlr_mask

    def request(self, n: int, sender: str, recipients: list[str]) -> tuple[Request, str | None]:
        ref = f"k{n}"
        params = {**self.fixed, "from": sender, "to": " ".join(recipients), "text": self.text}
        if self.callback_url:
            sep = "&" if "?" in self.callback_url else "?"
            params["dlr-mask"] = str(self.dlr_mask)
            # %d is Kannel's escape for the report type, filled in per report.
            params["dlr-url"] = f"{self.callback_url}{sep}ref={ref}&status=%d"
        # Percent-encode everything ('%20', never '+'): text and dlr-url must
        # reach smsbox byte for byte, the dlr-url's own '%d' as '%25d'.
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
        return Request("GET", yarl.URL(self.base + query, encoded=True), {}, None), ref

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
        self.url = yarl.URL(options.url.rstrip("/") + "/send")
        self.headers = {"Content-Type": "application/x-www-form-urlencoded"}
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
        self.fixed = fixed

    def request(self, n: int, sender: str, recipients: list[str]) -> tuple[Request, str | None]:
        form = {**self.fixed, "to": recipients[0], "from": sender}
        return Request("POST", self.url, self.headers, urlencode(form).encode()), None

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
        arrivals = self.early.pop(key, [])
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
        self.options = options
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
        self.ramp_s = 0.0
        self._interrupted = False

    def stop(self) -> None:
        """End the run early (SIGINT): stop sending, skip the receipt wait."""
        self._interrupted = True
        self.budget.stop()
        self.reports.settled.set()

    def _recipients(self, r: int) -> list[str]:
        dests = self.options.destinations
        batch = self.options.batch
        first = r * batch
        last = min(first + batch, self.options.count)
        return [dests[i % len(dests)] for i in range(first, last)]

    async def _send(self, http: aiohttp.ClientSession, r: int) -> None:
        opts = self.options
        recipients = self._recipients(r)
        sender = opts.senders[r % len(opts.senders)]
        request, ref = self.api.request(r, sender, recipients)
        started = time.monotonic()
        if not self.first_request_at:
            self.first_request_at = started
        self.requests += 1
        self.sent += len(recipients)
        try:
            async with http.request(
                request.method, request.url, headers=request.headers, data=request.body
            ) as resp:
                body = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError:
            self.errors["connect_error"] += 1
            return
        except aiohttp.ServerDisconnectedError:
            self.errors["disconnected"] += 1
            return
        except TimeoutError:
            self.errors["timeout"] += 1
            return
        except aiohttp.ClientError as exc:
            self.errors[type(exc).__name__] += 1
            return
        now = time.monotonic()
        self.last_response_at = now
        self.latency.add(now - started)
        self.statuses[str(status)] += 1
        outcome = self.api.parse(status, body, recipients, ref)
        if outcome.error is not None:
            self.errors[outcome.error] += 1
        self.accepted += outcome.accepted
        self.rejected.update(outcome.rejected)
        if self.receiver is not None:
            for key, count in outcome.keys:
                self.reports.expect(key, count, started)

    async def _worker(self, http: aiohttp.ClientSession, first_answer: asyncio.Event) -> None:
        budget = self.budget
        while True:
            r = budget.take()
            if r is None:
                wait = budget.wait()
                if wait is None:
                    break
                await asyncio.sleep(max(wait, 0.001))
                continue
            await self._send(http, r)
            first_answer.set()
        first_answer.set()

    async def run(self) -> dict[str, Any]:
        opts = self.options
        cpu_at_start = time.process_time()
        started = time.monotonic()
        if opts.webhook_port is not None:
            self.receiver = WebhookReceiver(
                secret=opts.webhook_secret, keep_bodies=False, listener=self.reports.report
            )
            await self.receiver.start(opts.webhook_host, opts.webhook_port)
            if not opts.callback_url:
                self.api = APIS[opts.api](opts, self.receiver.url)
        connector = aiohttp.TCPConnector(
            limit=opts.concurrency, limit_per_host=opts.concurrency, keepalive_timeout=60
        )
        try:
            async with aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=opts.timeout),
                auto_decompress=False,
            ) as http:
                self.budget.start()
                workers: list[asyncio.Task[None]] = []
                while len(workers) < opts.concurrency and not self.budget.exhausted:
                    # Ramp: open RAMP_STEP connections, then wait for their
                    # first answers (at most ramp_wait) before the next ones.
                    step = min(RAMP_STEP, opts.concurrency - len(workers))
                    answered = [asyncio.Event() for _ in range(step)]
                    workers += [
                        asyncio.create_task(self._worker(http, event)) for event in answered
                    ]
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(opts.ramp_wait):
                            for event in answered:
                                await event.wait()
                self.ramp_s = time.monotonic() - self.budget.started_at
                self.connections = len(workers)
                await asyncio.gather(*workers)
            if self.receiver is not None and not self._interrupted:
                await self._until_reports()
        finally:
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
        latency_ms: request to its answer. With the in-process webhook:
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
