"""The load clients as users run them: `smsrouter sim esme|http|webhook`.

Each client runs as a real subprocess over 127.0.0.1 against a peer that
lives in the test: the carrier simulator, a small SMSC that answers with
errors and odd receipts, fake smsrouter / Kannel / Jasmin HTTP APIs that
check what they were sent, and finally the real router. Every run is
bounded by --count and short timeouts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
import uvloop
from aiohttp import web

from smsrouter.connectors.smpp import (
    BindTransceiver,
    CommandStatus,
    DeliverSm,
    MessageState,
    Pdu,
    Role,
    SubmitSm,
    Tag,
    set_tlv,
)
from smsrouter.connectors.smpp_link import SmppLink
from smsrouter.sims.carrier import CarrierSimulator
from smsrouter.sims.esme_load import _Receipts
from smsrouter.sims.http_load import HttpLoad, HttpOptions, KannelApi, _Reports
from smsrouter.sims.stats import Budget, expand_numbers
from smsrouter.sims.webhook import SIGNATURE_HEADER, WebhookReceiver, _Signer
from tests.e2e.daemon import RouterProcess

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 30.0  # bound on any one client run; none comes close


async def _smsrouter(*args: str) -> dict[str, Any]:
    """Run `smsrouter <args>` to its end; its stdout must be one JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 1, out.decode()
    return json.loads(lines[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start aiohttp apps on 127.0.0.1; returns each one's base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


# ---------------------------------------------------------------------------
# The pieces the runs below cannot force: reports that overtake the answer


def test_receipts_that_overtake_their_submit_sm_resp_still_match() -> None:
    receipts = _Receipts()
    receipts.receipt("a1", "DELIVRD", now=10.5)  # on another bind, before the resp
    receipts.accepted("a1", sent_at=10.0)
    receipts.accepted("a2", sent_at=10.0)
    receipts.receipt("162", "UNDELIV", now=11.0)  # decimal for hex a2
    receipts.receipt("a2", "UNDELIV", now=11.1)
    assert (receipts.received, receipts.matched, receipts.duplicates) == (3, 2, 1)
    assert sorted(receipts.latency.values) == [0.5, 1.0]


def test_receipt_ids_in_another_base_match_by_value_when_told() -> None:
    # hex in submit_sm_resp, decimal in receipts: "16" is message 0x10, not 0x16.
    receipts = _Receipts("hex", "decimal")
    receipts.receipt("16", "DELIVRD", now=1.2)  # overtakes the resp of 0x10
    receipts.accepted("10", sent_at=1.0)
    receipts.accepted("16", sent_at=1.0)
    receipts.receipt("22", "DELIVRD", now=1.5)
    assert (receipts.matched, receipts.duplicates, receipts.early) == (2, 0, {})
    assert sorted(round(v, 3) for v in receipts.latency.values) == [0.2, 0.5]


def test_http_reports_that_overtake_the_answer_still_match() -> None:
    reports = _Reports(KannelApi.final)
    reports.report("k1", "8", at=5.0)  # not final: counted, never matched
    reports.report("k1", "1", at=5.2)  # before the 202 was read
    reports.expect("k1", 2, sent_at=5.0)
    assert not reports.settled.is_set()
    reports.report("k1", "2", at=5.5)
    reports.report("k1", "1", at=5.6)  # one too many
    assert (reports.received, reports.finals, reports.matched) == (4, 3, 2)
    assert reports.duplicates == 1 and reports.settled.is_set()
    assert [round(v, 3) for v in reports.latency.values] == [0.2, 0.5]


def test_number_specs_and_budget() -> None:
    assert expand_numbers("12345") == ["12345"]
    assert expand_numbers("+1415555{098..101}") == [
        "+1415555098", "+1415555099", "+1415555100", "+1415555101",
    ]  # fmt: skip
    assert expand_numbers("a{1..2}b{0..1},x") == ["a1b0", "a1b1", "a2b0", "a2b1", "x"]
    with pytest.raises(ValueError):
        expand_numbers("+1{9..1}")
    budget = Budget(count=3, duration=60)
    budget.start()
    assert [budget.take() for _ in range(4)] == [0, 1, 2, None]
    assert budget.exhausted and budget.wait() is None
    paced = Budget(count=100, duration=60, rate=10)
    paced.start()
    assert paced.take() == 0 and paced.take() is None  # no burst at the start
    assert 0.05 < (paced.wait() or 0) <= 0.1


# ---------------------------------------------------------------------------
# sim esme


async def test_esme_client_against_the_carrier_simulator() -> None:
    carrier = CarrierSimulator(system_id="load", password="pw", receipt_delay=0.05)
    await carrier.start()
    try:
        result = await _smsrouter(
            "sim", "esme", "--port", str(carrier.port), "--system-id", "load",
            "--password", "pw", "--count", "200", "--binds", "2", "--window", "20",
            "--senders", "+1415555{0000..0009}", "--destinations", "+1212555{000..049}",
            "--text", "load {n}", "--receipt-timeout", "15",
        )  # fmt: skip
    finally:
        await carrier.stop()
    assert result["tool"] == "esme"
    assert result["binds"] == 2
    assert result["sent"] == result["accepted"] == 200
    assert result["errors"] == {}
    assert result["timeouts"] == 0
    assert result["receipts_received"] == result["receipts_matched"] == 200
    assert result["receipts_unmatched"] == 0
    assert result["receipts_by_stat"] == {"DELIVRD": 200}
    assert result["submits_per_s"] > 0 and result["receipts_per_s"] > 0
    latency, receipt_latency = result["latency_ms"], result["receipt_latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    # Receipts come 50 ms after the submit at the earliest.
    assert 50 <= receipt_latency["p50"] <= receipt_latency["p99"] < 15_000

    # What the carrier saw: 200 distinct texts, round-robin numbers, TON 1.
    assert len(carrier.submits) == 200
    assert {s.text for s in carrier.submits} == {f"load {n}" for n in range(200)}
    assert {s.source_addr for s in carrier.submits} == {f"1415555{i:04d}" for i in range(10)}
    assert {s.destination_addr for s in carrier.submits} == {f"1212555{i:03d}" for i in range(50)}
    assert {(s.source_addr_ton, s.dest_addr_ton) for s in carrier.submits} == {(1, 1)}
    assert all(s.registered_delivery == 1 for s in carrier.submits)


class _PickySmsc:
    """An SMSC that throttles every 4th submit and sends receipts of every
    kind: TLV-only, text-only, text with a decimal id for a hex one,
    duplicates, one for an id it never issued, and an MO."""

    def __init__(self) -> None:
        self.submits = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # The other receipts wait for the duplicate, the stranger and the
        # MO: the client stops once every accepted message has its receipt,
        # and on a busy machine it could do so before those came.
        self.extras_sent = asyncio.Event()

    def on_closed(self, link: SmppLink) -> None:
        pass

    def on_request(self, link: SmppLink, pdu: Pdu) -> None:
        if isinstance(pdu, BindTransceiver):
            link.send(pdu.response(system_id="picky"))
        elif isinstance(pdu, SubmitSm):
            self.submits += 1
            n = self.submits
            if n % 4 == 0:
                link.send(pdu.response(command_status=CommandStatus.ESME_RTHROTTLED))
                return
            message_id = f"{0xA000 + n:x}"
            link.send(pdu.response(message_id=message_id))
            task = asyncio.get_running_loop().create_task(self._receipts(link, n, message_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif hasattr(pdu, "response"):
            link.send(pdu.response())  # type: ignore[attr-defined]

    async def _receipts(self, link: SmppLink, n: int, message_id: str) -> None:
        await asyncio.sleep(0.02)
        if n != 1:
            await self.extras_sent.wait()
        stat = "UNDELIV" if n % 5 == 0 else "DELIVRD"
        text_id = str(int(message_id, 16)) if n % 3 == 0 else message_id
        text = f"id:{text_id} sub:001 dlvrd:001 submit date:2501010000 done date:2501010000 stat:{stat} err:000 text:x"
        receipt = DeliverSm(esm_class=0x04, short_message=b"" if n % 2 else text.encode())
        if n % 2:  # TLVs only
            set_tlv(receipt, Tag.RECEIPTED_MESSAGE_ID, message_id)
            set_tlv(
                receipt,
                Tag.MESSAGE_STATE,
                MessageState.UNDELIVERABLE if stat == "UNDELIV" else MessageState.DELIVERED,
            )
        if n != 1:
            await link.request(receipt, timeout=5)
            return
        try:  # a duplicate, a stranger, and an MO
            await link.request(receipt, timeout=5)
            await link.request(DeliverSm(esm_class=0x04, short_message=text.encode()), timeout=5)
            stranger = text.replace(f"id:{text_id}", "id:ffffff")
            await link.request(
                DeliverSm(esm_class=0x04, short_message=stranger.encode()), timeout=5
            )
            await link.request(DeliverSm(short_message=b"hello from a phone"), timeout=5)
        finally:
            self.extras_sent.set()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SmppLink(Role.SMSC, self, window=256), "127.0.0.1", 0
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()


async def test_esme_client_counts_errors_and_matches_odd_receipts() -> None:
    smsc = _PickySmsc()
    port = await smsc.start()
    try:
        result = await _smsrouter(
            "sim", "esme", "--port", str(port), "--count", "40", "--window", "8",
            "--text", "Привет", "--receipt-timeout", "10",
        )  # fmt: skip
    finally:
        await smsc.stop()
    assert result["sent"] == 40
    assert result["accepted"] == 30
    assert result["errors"] == {"0x00000058": 10}
    assert result["receipts_matched"] == 30
    # 30 receipts, a duplicate, one for an unknown id; the MO is no receipt.
    assert result["receipts_received"] == 32
    assert result["receipts_unmatched"] == 2
    assert result["receipts_duplicate"] == 1
    assert result["mo_received"] == 1
    undelivered = sum(1 for n in range(1, 41) if n % 4 and n % 5 == 0)
    assert result["receipts_by_stat"] == {"DELIVRD": 32 - undelivered, "UNDELIV": undelivered}


async def test_esme_client_reports_a_refused_bind() -> None:
    carrier = CarrierSimulator(system_id="load", password="right")
    await carrier.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smsrouter", "sim", "esme", "--port", str(carrier.port),
            "--system-id", "load", "--password", "wrong", "--count", "5",
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        async with asyncio.timeout(RUN_TIMEOUT):
            out, _ = await proc.communicate()
    finally:
        await carrier.stop()
    assert proc.returncode == 1
    result = json.loads(out)
    assert result["binds"] == 0 and result["sent"] == 0
    assert result["bind_errors"] == {"0x0000000E": 1}


# ---------------------------------------------------------------------------
# sim http


async def test_http_client_smsrouter_api_with_webhook(
    app_server: Callable[[web.Application], Awaitable[str]],
) -> None:
    """A fake /v1/messages that answers 202 with ids (and 429 to every 7th
    request), then posts a signed callback for each id, a few badly signed."""
    secret = "hook-secret"
    ids = itertools.count(1)
    requests: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def callbacks(url: str, message_ids: list[str]) -> None:
        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            for message_id in message_ids:
                raw = json.dumps({"id": message_id, "status": "delivered"}).encode()
                sig = _sign("wrong" if message_id.endswith("3") else secret, raw)
                async with http.post(url, data=raw, headers={SIGNATURE_HEADER: sig}) as resp:
                    assert resp.status == 200

    async def messages(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer load-key"
        body = await request.json()
        requests.append(body)
        if len(requests) % 7 == 0:
            return web.json_response({"status": 429}, status=429)
        to = body["to"] if isinstance(body["to"], list) else [body["to"]]
        accepted = [{"id": f"m{next(ids)}", "to": t, "status": "accepted"} for t in to[1:]]
        answer = {"messages": accepted, "rejected": [{"to": to[0], "code": "opted_out"}]}
        task = asyncio.create_task(callbacks(body["callback_url"], [m["id"] for m in accepted]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response(answer, status=202)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    url = await app_server(app)
    result = await _smsrouter(
        "sim", "http", "--url", url, "--key", "load-key", "--count", "100", "--batch", "5",
        "--concurrency", "4", "--senders", "12345", "--destinations", "+1415555{0000..0099}",
        "--webhook-port", "0", "--webhook-secret", secret, "--receipt-timeout", "10",
    )  # fmt: skip
    await asyncio.gather(*tasks, return_exceptions=True)

    assert len(requests) == 20
    assert {r["from"] for r in requests} == {"12345"}
    assert sorted(t for r in requests for t in r["to"]) == [f"+1415555{i:04d}" for i in range(100)]
    assert result["requests"] == 20 and result["sent"] == 100
    assert result["statuses"] == {"202": 18, "429": 2}
    assert result["errors"] == {"429": 2}
    assert result["accepted"] == 18 * 4
    assert result["rejected"] == {"opted_out": 18}
    assert result["connections"] == 4
    assert result["receipts_received"] == result["receipts_matched"] == 72
    assert result["receipts_unmatched"] == 0
    assert result["receipts_by_status"] == {"delivered": 72}
    assert result["signature_failures"] == sum(1 for n in range(1, 73) if str(n).endswith("3"))
    assert 50 <= result["receipt_latency_ms"]["p50"] < 10_000
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


async def test_http_client_kannel_sendsms(
    app_server: Callable[[web.Application], Awaitable[str]],
) -> None:
    """A fake smsbox: checks the sendsms parameters byte for byte, answers
    202, then calls the dlr-url twice per recipient, as Kannel does with
    dlr-mask 31 (8 = delivered to SMSC, then 1 = delivered)."""
    seen: list[dict[str, list[str]]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def reports(dlr_url: str, recipients: list[str]) -> None:
        async with aiohttp.ClientSession() as http:
            for kind in ("8", "1"):
                for _ in recipients:
                    # Kannel substitutes its escapes in the URL it was given.
                    url = dlr_url.replace("%d", kind)
                    async with http.get(url) as resp:
                        assert resp.status == 200

    async def sendsms(request: web.Request) -> web.Response:
        raw_query = request.rel_url.raw_query_string
        assert "+" not in raw_query.replace("%2B", "")  # spaces as %20, never '+'
        params = parse_qs(raw_query, keep_blank_values=True)
        seen.append(params)
        if params["password"] != ["kpass"]:
            return web.Response(status=403, text="Authorization failed for sendsms")
        recipients = params["to"][0].split(" ")
        task = asyncio.create_task(reports(params["dlr-url"][0], recipients))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.Response(status=202, text="0: Accepted for delivery")

    app = web.Application()
    app.router.add_get("/cgi-bin/sendsms", sendsms)
    url = await app_server(app)
    text = "Grüße & 100% ok?"
    result = await _smsrouter(
        "sim", "http", "--api", "kannel", "--url", url, "--username", "kuser",
        "--password", "kpass", "--count", "30", "--batch", "3", "--concurrency", "3",
        "--senders", "+14155550100", "--destinations", "+1415555{1000..1029}", "--text", text,
        "--webhook-port", "0", "--receipt-timeout", "10",
    )  # fmt: skip
    await asyncio.gather(*tasks, return_exceptions=True)

    assert len(seen) == 10
    first = seen[0]
    assert first["username"] == ["kuser"]
    assert first["from"] == ["+14155550100"]
    assert first["text"] == [text]
    assert first["charset"] == ["UTF-8"]
    assert "coding" not in first  # all GSM 03.38
    assert first["dlr-mask"] == ["31"]
    dlr_url = first["dlr-url"][0]
    assert dlr_url.startswith(result["callback_url"])
    assert parse_qs(urlsplit(dlr_url).query)["status"] == ["%d"]
    assert sorted(t for p in seen for t in p["to"][0].split(" ")) == [
        f"+1415555{i}" for i in range(1000, 1030)
    ]
    assert len({unquote(p["dlr-url"][0]) for p in seen}) == 10  # one ref per request

    assert result["statuses"] == {"202": 10}
    assert result["accepted"] == 30 and result["errors"] == {}
    assert result["receipts_received"] == 60
    assert result["receipts_final"] == result["receipts_matched"] == 30
    assert result["receipts_by_status"] == {"1": 30, "8": 30}


async def test_http_client_jasmin_send(
    app_server: Callable[[web.Application], Awaitable[str]],
) -> None:
    """A fake Jasmin /send: form fields checked, `Success "<id>"`, then a
    level 1 and a level 2 DLR posted as forms to the dlr-url."""
    forms: list[dict[str, str]] = []
    tasks: set[asyncio.Task[None]] = set()
    acks: list[str] = []

    async def dlrs(url: str, message_id: str) -> None:
        async with aiohttp.ClientSession() as http:
            for fields in (
                {"id": message_id, "message_status": "ESME_ROK", "level": "1"},
                {"id": message_id, "message_status": "DELIVRD", "level": "2", "id_smsc": "7"},
            ):
                async with http.post(url, data=fields) as resp:
                    acks.append(await resp.text())

    async def send(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        forms.append(form)
        message_id = f"uuid-{len(forms)}"
        task = asyncio.create_task(dlrs(form["dlr-url"], message_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.Response(text=f'Success "{message_id}"')

    app = web.Application()
    app.router.add_post("/send", send)
    url = await app_server(app)
    result = await _smsrouter(
        "sim", "http", "--api", "jasmin", "--url", url, "--username", "ju",
        "--password", "jp", "--count", "12", "--concurrency", "2",
        "--senders", "Acme", "--destinations", "+1415555{1000..1011}",
        "--webhook-port", "0", "--receipt-timeout", "10",
    )  # fmt: skip
    await asyncio.gather(*tasks, return_exceptions=True)

    assert len(forms) == 12
    assert {k: v for k, v in forms[0].items() if k != "to"} == {
        "username": "ju",
        "password": "jp",
        "from": "Acme",
        "content": "smsrouter load test",
        "dlr": "yes",
        "dlr-url": result["callback_url"],
        "dlr-level": "2",
        "dlr-method": "POST",
    }
    assert result["accepted"] == 12
    assert result["receipts_received"] == 24
    assert result["receipts_final"] == result["receipts_matched"] == 12
    assert result["receipts_by_status"] == {"DELIVRD": 12, "ESME_ROK": 12}
    assert set(acks) == {"ACK/Jasmin"}


async def test_http_client_exits_1_when_nothing_answers() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "sim", "http", "--url",
        f"http://127.0.0.1:{_free_port()}", "--count", "3", "--concurrency", "2",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    async with asyncio.timeout(RUN_TIMEOUT):
        out, _ = await proc.communicate()
    assert proc.returncode == 1
    result = json.loads(out)
    assert result["errors"] == {"connect_error": 3} and result["accepted"] == 0


# ---------------------------------------------------------------------------
# sim http: the transport, in process, against raw servers on both loops
#
# The CLI runs on uvloop, the tests above on plain asyncio: the transports
# differ in details (uvloop's are no asyncio.Transport subclasses, for one),
# so these scenarios run on each.

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_both_loops(scenario: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    """A plain test (pytest-asyncio leaves it alone) that runs `scenario`
    in a fresh loop of each kind, bounded by RUN_TIMEOUT."""

    async def bounded() -> None:
        async with asyncio.timeout(RUN_TIMEOUT):
            await scenario()

    def test(loop: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(bounded())

    test.__name__ = test.__qualname__ = getattr(scenario, "__name__", "scenario")
    test.__doc__ = scenario.__doc__
    return pytest.mark.parametrize("loop", list(LOOPS))(test)


def _accepted_answer(n: int, extra_headers: bytes = b"") -> bytes:
    body = b'{"messages":[{"id":"m%d","status":"accepted"}],"rejected":[]}' % n
    return (
        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra_headers, body)
    )


class _ScriptedApi:
    """A raw smsrouter /v1/messages on 127.0.0.1. Request n (from 1, in the
    order they arrive) gets what `script(n)` says:

    * ``ok`` — 202 with id ``m<n>``; ``split`` — the same in two writes;
    * ``close`` — 202 with ``Connection: close``, then hang up;
    * ``drop`` — hang up unanswered; ``hold`` — never answer;
    * ``garbage`` — bytes that are no HTTP answer;
    * ``eof`` — 202 without Content-Length: the body ends with the connection.
    """

    def __init__(self, script: Callable[[int], str]) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests.append((head, body))
                n = len(self.requests)
                action = self.script(n)
                if action == "ok":
                    writer.write(_accepted_answer(n))
                elif action == "split":
                    answer = _accepted_answer(n)
                    writer.write(answer[:30])
                    await writer.drain()
                    await asyncio.sleep(0.01)  # most likely a segment of its own
                    writer.write(answer[30:])
                elif action == "close":
                    writer.write(_accepted_answer(n, b"Connection: close\r\n"))
                    break
                elif action == "drop":
                    break
                elif action == "garbage":
                    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                elif action == "eof":
                    body = b'{"messages":[{"id":"m%d"}]}' % n
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n\r\n")
                    writer.write(body)
                    break
                else:
                    assert action == "hold", action
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up
        finally:
            writer.close()


async def _scripted_run(
    script: Callable[[int], str], **options: Any
) -> tuple[dict[str, Any], _ScriptedApi]:
    api = _ScriptedApi(script)
    url = await api.start()
    try:
        load = HttpLoad(HttpOptions(url=url, key="k", **options))
        result = await load.run()
    finally:
        await api.stop()
    return result, api


@on_both_loops
async def test_http_client_reopens_connections_the_server_ends() -> None:
    """Every 4th request is dropped unanswered (an error each, no resend);
    three answers say `Connection: close` (no error): the streams reopen
    their connection for the next request each time."""
    drops, closes = {4, 8, 12, 16, 20}, {5, 10, 15}
    result, api = await _scripted_run(
        lambda n: "drop" if n in drops else "close" if n in closes else "ok",
        count=20,
        concurrency=2,
    )
    assert len(api.requests) == result["requests"] == 20
    assert result["errors"] == {"disconnected": 5}
    assert result["statuses"] == {"202": 15}
    assert result["accepted"] == 15
    assert result["connections"] == 2
    # Eight connections ended under a request; the one of request 20 (the
    # last) and at most one other stream's last need no successor.
    assert 6 <= result["reconnects"] <= 7
    assert api.connections == 2 + result["reconnects"]


@on_both_loops
async def test_http_client_counts_timeouts_and_bad_answers() -> None:
    """One connection, one request at a time: an answer that never comes,
    one that is no HTTP, one whose body runs to the close, one in pieces."""
    script = {1: "hold", 2: "garbage", 3: "eof", 4: "split", 5: "ok"}
    result, api = await _scripted_run(script.__getitem__, count=5, concurrency=1, timeout=0.5)
    assert len(api.requests) == 5
    assert result["errors"] == {"timeout": 1, "bad_response": 1}
    assert result["statuses"] == {"202": 3}
    assert result["accepted"] == 3
    # hold, garbage and eof each cost the connection.
    assert result["reconnects"] == 3 and api.connections == 4
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


@on_both_loops
async def test_http_client_sends_what_the_smsrouter_api_takes() -> None:
    """The request bytes: one head per request, Bearer key, exact length, JSON body."""
    result, api = await _scripted_run(
        lambda n: "ok",
        count=6,
        batch=3,
        concurrency=1,
        senders=["12345"],
        destinations=[f"+1415555{i:04d}" for i in range(6)],
        text='Grüße "quoted"',
        callback_url="http://127.0.0.1:1/cb?x=1",
    )
    assert result["accepted"] == 2 and result["errors"] == {}
    (head, body), _ = api.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/messages HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert headers["Host"].startswith("127.0.0.1:")
    assert headers["Authorization"] == "Bearer k"
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {
        "from": "12345",
        "to": ["+14155550000", "+14155550001", "+14155550002"],
        "text": 'Grüße "quoted"',
        "callback_url": "http://127.0.0.1:1/cb?x=1",
    }


@on_both_loops
async def test_http_client_paces_to_the_rate_and_stops_while_waiting() -> None:
    """A paced run sends everything; a stop while every stream waits for a
    token (the next one 100 s away) ends the run at once."""
    result, _ = await _scripted_run(lambda n: "ok", count=30, concurrency=4, rate=300)
    assert result["accepted"] == 30 and result["errors"] == {}

    first_request = asyncio.Event()

    def script(n: int) -> str:
        first_request.set()
        return "ok"

    api = _ScriptedApi(script)
    url = await api.start()
    try:
        load = HttpLoad(HttpOptions(url=url, key="k", count=100, concurrency=3, rate=0.01))
        run = asyncio.ensure_future(load.run())
        await first_request.wait()  # the bucket's one token went out
        load.stop()
        result = await run
    finally:
        await api.stop()
    assert result["interrupted"] is True
    assert result["requests"] == 1 and result["statuses"] == {"202": 1}
    assert len(api.requests) == 1


# ---------------------------------------------------------------------------
# sim webhook


async def test_webhook_receiver_counts_get_post_and_bad_signatures() -> None:
    secret = "s3cret"
    heard: list[tuple[str, str]] = []
    receiver = WebhookReceiver(
        secret=secret,
        keep_bodies=False,
        listener=lambda key, status, at: heard.append((key, status)),
    )
    await receiver.start()
    good = json.dumps({"id": "m1", "status": "delivered"}).encode()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{receiver.port}"
            calls = [
                http.post(base + "/dlr", data=good, headers={SIGNATURE_HEADER: _sign(secret, good)}),
                http.post(base + "/dlr", data=good, headers={SIGNATURE_HEADER: _sign("x", good)}),
                http.get(base + "/kannel?ref=k7&status=1"),
                http.post(base + "/jasmin", data={"id": "u1", "message_status": "DELIVRD"}),
            ]  # fmt: skip
            for call in calls:
                async with call as resp:
                    assert resp.status == 200
                    assert await resp.text() == "ACK/Jasmin"
        await receiver.wait_for(4, timeout=5)
    finally:
        await receiver.stop()
    assert receiver.callbacks == []  # count-only
    assert receiver.received == 4
    assert receiver.by_method == {"POST": 3, "GET": 1}
    assert receiver.by_status == {"delivered": 2, "1": 1, "DELIVRD": 1}
    # Kannel and Jasmin sign nothing: with a secret set, they count too.
    assert receiver.signature_failures == 3
    assert heard == [("m1", "delivered"), ("m1", "delivered"), ("k7", "1"), ("u1", "DELIVRD")]
    summary = receiver.summary()
    assert summary["received"] == 4 and summary["signature_failures"] == 3


async def test_webhook_receiver_keeps_bodies_by_default() -> None:
    receiver = WebhookReceiver(secret="k")
    await receiver.start()
    raw = b'{"id": "m9", "status": "failed"}'
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                receiver.url, data=raw, headers={SIGNATURE_HEADER: _sign("k", raw)}
            ):
                pass
            async with http.get(receiver.url + "?ref=r1&status=2"):
                pass
        callbacks = await receiver.wait_for(2, timeout=5)
        with pytest.raises(TimeoutError):
            await receiver.wait_for(3, timeout=0.1)
    finally:
        await receiver.stop()
    assert [c.body for c in callbacks] == [{"id": "m9", "status": "failed"}, {}]
    assert [c.signature_ok for c in callbacks] == [True, False]
    assert callbacks[1].method == "GET" and callbacks[1].params == {"ref": "r1", "status": "2"}


async def test_sim_webhook_cli_prints_its_summary_on_sigterm() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "sim", "webhook", "--port", str(port),
        "--secret", "abc", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            line = await proc.stderr.readline()  # "... listening on ..."
        assert f":{port}/" in line.decode()
        raw = b'{"id": "a", "status": "delivered"}'
        async with aiohttp.ClientSession() as http:
            for sig in (_sign("abc", raw), "sha256=00"):
                async with http.post(
                    f"http://127.0.0.1:{port}/x", data=raw, headers={SIGNATURE_HEADER: sig}
                ) as resp:
                    assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/k?ref=1&status=8") as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(RUN_TIMEOUT):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    summary = json.loads(out)
    assert summary["received"] == 3
    assert summary["by_method"] == {"GET": 1, "POST": 2}
    assert summary["by_status"] == {"8": 1, "delivered": 2}
    assert summary["signature_failures"] == 2


async def _read_answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers, body) of one answer; the body by Content-Length."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


def _chunked(raw: bytes, pieces: int) -> bytes:
    size = -(-len(raw) // pieces)
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _receiver_over_one_connection(keep_bodies: bool) -> Callable[[str], None]:
    async def scenario() -> None:
        secret = "s3cret"
        heard: list[tuple[str, str]] = []
        receiver = WebhookReceiver(
            secret=secret,
            keep_bodies=keep_bodies,
            listener=lambda key, status, at: heard.append((key, status)),
        )
        await receiver.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        m1 = b'{"id":"m1","status":"delivered","extra":[1,{"deep":2}]}'
        m2 = b'{"id": "m2", "status": "failed"}'
        form = b"id=u1&message_status=DELIVRD&level=2&text=hello+w%C3%B6rld"
        try:
            # smsrouter: chunked and signed; then the same with a bad signature.
            writer.write(
                b"POST /cb HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nX-Smsrouter-Signature: %s\r\n\r\n%s"
                % (_sign(secret, m1).encode(), _chunked(m1, 3))
            )
            writer.write(
                b"POST /cb HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                b"x-smsrouter-signature: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (_sign("other", m1).encode(), len(m1), m1)
            )
            # Kannel: a GET of the dlr-url; Jasmin: a form.
            writer.write(b"GET /k/dlr?ref=k%201&status=16 HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write(
                b"POST /jasmin HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
            )
            for _ in range(4):
                assert await _read_answer(reader) == (
                    "HTTP/1.1 200 OK",
                    {"content-type": "text/plain; charset=utf-8", "content-length": "10"},
                    b"ACK/Jasmin",
                )
            # A body sent only once the receiver said to go on.
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"X-Smsrouter-Signature: %s\r\nContent-Length: %d\r\n\r\n"
                % (_sign(secret, m2).encode(), len(m2))
            )
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(m2)
            assert (await _read_answer(reader))[2] == b"ACK/Jasmin"
            # Two requests in one write: two answers, in order.
            writer.write(
                b"GET /a?ref=p1&status=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /b?status=2&ref=p2 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert [(await _read_answer(reader))[2] for _ in range(2)] == [b"ACK/Jasmin"] * 2
            await receiver.wait_for(7, timeout=5)
        finally:
            writer.close()
            await receiver.stop()
        assert heard == [
            ("m1", "delivered"),
            ("m1", "delivered"),
            ("k 1", "16"),
            ("u1", "DELIVRD"),
            ("m2", "failed"),
            ("p1", "1"),
            ("p2", "2"),
        ]
        assert receiver.received == 7
        assert receiver.by_method == {"POST": 4, "GET": 3}
        assert receiver.by_status == {
            "delivered": 2, "16": 1, "DELIVRD": 1, "failed": 1, "1": 1, "2": 1,
        }  # fmt: skip
        # Only the two signed with the secret pass.
        assert receiver.signature_failures == 5
        if not keep_bodies:
            assert receiver.callbacks == []
            return
        callbacks = receiver.callbacks
        signed = [c.signature_ok for c in callbacks]
        assert signed == [True, False, False, False, True, False, False]
        assert callbacks[0].raw == m1  # the chunks put back together
        assert callbacks[0].body == {"id": "m1", "status": "delivered", "extra": [1, {"deep": 2}]}
        assert callbacks[0].signature == _sign(secret, m1)
        assert callbacks[2].method == "GET"
        assert callbacks[2].params == {"ref": "k 1", "status": "16"}
        assert callbacks[3].params == {
            "id": "u1", "message_status": "DELIVRD", "level": "2", "text": "hello wörld",
        }  # fmt: skip
        assert callbacks[3].body == {}

    scenario.__name__ = f"test_webhook_receiver_over_one_connection_keep_bodies_{keep_bodies}"
    return on_both_loops(scenario)


test_webhook_receiver_over_one_connection_counting = _receiver_over_one_connection(False)
test_webhook_receiver_over_one_connection_keeping = _receiver_over_one_connection(True)


@on_both_loops
async def test_webhook_receiver_statuses_http10_and_garbage() -> None:
    """No body after a 204; another status and reply set while running;
    an HTTP/1.0 client hung up after its answer; garbage gets a 400."""
    receiver = WebhookReceiver(status=204, keep_bodies=False)
    await receiver.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        writer.write(b"GET /?ref=a&status=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 204 No Content\r\n\r\n"
        receiver.status, receiver.reply = 500, "no"
        writer.write(b"GET /?ref=b&status=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status_line, _, body = await _read_answer(reader)
        assert (status_line, body) == ("HTTP/1.1 500 Internal Server Error", b"no")
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        writer.write(b"GET /?ref=c&status=1 HTTP/1.0\r\n\r\n")
        assert (await _read_answer(reader))[2] == b"no"
        assert await reader.read() == b""  # closed after the answer
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        writer.write(b"\x16\x03\x01 this is no HTTP\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await reader.read()).endswith(b"\r\n\r\n")  # and then closed
        writer.close()
    finally:
        await receiver.stop()
    assert receiver.received == 3
    assert receiver.by_status == {"1": 3}


def test_webhook_signatures_are_hmac_sha256_of_the_current_secret() -> None:
    for secret in ["", "k", "hook-secret", "x" * 64, "y" * 65, "ünï" * 40]:
        for raw in [b"", b"{}", bytes(range(256)) * 4]:
            assert _Signer(secret).sign(raw).decode() == _sign(secret, raw)
    receiver = WebhookReceiver(secret="a")
    raw = b'{"id":"x"}'
    assert receiver.verify(raw, _sign("a", raw))
    receiver.secret = "b"  # tests change it on a running receiver
    assert not receiver.verify(raw, _sign("a", raw))
    assert receiver.verify(raw, _sign("b", raw))
    assert not receiver.verify(raw, None) and not receiver.verify(raw, "sha256=zz")


# ---------------------------------------------------------------------------
# End to end: the real router


ROUTER_CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[log]
level = "info"
[[carriers]]
name = "sim"
host = "127.0.0.1"
port = {carrier_port}
system_id = "router"
password = "secret"
window = 64
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.0062"
[[accounts]]
id = "load"
credit = "1000000"
api_keys = ["load-key"]
smpp = {{ system_id = "load", password = "load-pass", max_binds = 2 }}
webhook_secret = "hook-secret"
[[numbers]]
number = "12345"
account = "load"
type = "short_code"
[rates]
short_code = 1000
[shutdown]
drain_seconds = 3
"""


async def test_load_clients_against_the_real_router(tmp_path: Path, database_url: str) -> None:
    """100 messages over HTTP with signed callbacks, then 100 over two SMPP
    binds with their receipts: the router's ids match what comes back."""
    carrier = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.05)
    await carrier.start()
    config = tmp_path / "router.toml"
    config.write_text(ROUTER_CONFIG.format(carrier_port=carrier.port))
    router = RouterProcess(config, env={"SMSROUTER_DATABASE_URL": database_url})
    try:
        await router.start()
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(router.base_url + "/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)
        via_http = await _smsrouter(
            "sim", "http", "--url", router.base_url, "--key", "load-key", "--count", "100",
            "--concurrency", "10", "--senders", "12345", "--destinations",
            "+1415555{0000..0099}", "--webhook-port", "0", "--webhook-secret", "hook-secret",
            "--receipt-timeout", "20",
        )  # fmt: skip
        via_smpp = await _smsrouter(
            "sim", "esme", "--port", str(router.smpp_port), "--system-id", "load",
            "--password", "load-pass", "--binds", "2", "--window", "20", "--count", "100",
            "--senders", "12345", "--destinations", "+1212555{0000..0099}",
            "--receipt-timeout", "20",
        )  # fmt: skip
    finally:
        await router.kill()
        await carrier.stop()
    assert via_http["statuses"] == {"202": 100}, router.output()
    assert via_http["accepted"] == 100
    assert via_http["receipts_final"] == via_http["receipts_matched"] == 100
    assert via_http["receipts_by_status"] == {"delivered": 100}
    assert via_http["signature_failures"] == 0

    assert via_smpp["binds"] == 2
    assert via_smpp["accepted"] == 100 and via_smpp["errors"] == {}
    assert via_smpp["receipts_received"] == via_smpp["receipts_matched"] == 100
    assert via_smpp["receipts_by_stat"] == {"DELIVRD": 100}
    assert len(carrier.submits) == 200
