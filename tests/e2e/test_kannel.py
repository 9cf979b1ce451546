"""Kannel, a stack we did not write, as a partner ESME of the router.

Kannel 1.4.5 (Debian's `kannel`) runs as subprocesses: its bearerbox binds
to our SMPP server as a transceiver, its smsbox takes messages over the
`sendsms` HTTP interface and calls a dlr-url for each delivery report that
bearerbox matched. The router runs as a subprocess on a fresh PostgreSQL
database; the carrier simulator and the dlr-url endpoint run in the test.

What Kannel does that these tests rely on (seen on the wire, smsc.log):

- bind_transceiver with interface_version 0x34 and system_type "VMA"; the
  password is cut to the 8 octets of SMPP 3.4 §5.2.2 before it is sent.
- A long text is split by bearerbox into UDH parts (8-bit reference), one
  submit_sm each. Only the first part asks for a receipt
  (registered_delivery 0x11: receipt plus intermediate notification, which
  the router does not send); the others carry 0, and Kannel stores the
  DLR under the first part's message id only. So a split message gets one
  SMSC ack (type 8) once every part was accepted and one final report
  (type 1) from the first part's receipt, both with %F = that part's id.
- Receipts are matched on receipted_message_id against the submit_sm_resp
  id as a C string (msg-id-type unset).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from smsrouter.sims.carrier import AcceptedSubmit, CarrierSimulator
from smsrouter.sms.text import concat_info, split_udh
from tests.e2e.daemon import RouterProcess
from tests.e2e.kannel import DlrCall, DlrReceiver, Kannel, SendsmsUser, SmscGroup, free_port
from tests.tools import require_tool

SHORT_CODE = "12345"
RECIPIENT = "14155550123"  # Kannel sends it as TON 1 / NPI 1, without '+'
API_KEY = "kannel-key"
SYSTEM_ID = "kannel"
# Kannel cuts passwords to 8 characters (SMPP 3.4 §5.2.2), see the bind test.
PASSWORD = "kpass-01"

PLAIN = "Hello from Kannel"
GSM_EXTENDED = "Price 5€ [promo] {x} ~^|\\"
CYRILLIC = (
    "Съешь же ещё этих мягких французских булок, да выпей чаю. "
    "Широкая электрификация южных губерний даст"
)

CONFIG = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[[carriers]]
name = "sim"
host = "127.0.0.1"
port = {carrier_port}
system_id = "router"
password = "secret"
window = 16
reconnect_delay = 0.2
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.0062"
[[accounts]]
id = "kannel"
credit = "1000000"
api_keys = ["{api_key}"]
smpp = {{ system_id = "{system_id}", password = "{password}", max_binds = 2 }}
[[numbers]]
number = "{sender}"
account = "kannel"
type = "short_code"
rate = 1000
[shutdown]
drain_seconds = 2
"""

# The `smsc = smpp` group, beyond host, port and credentials.
SMSC_OPTIONS: dict[str, str | int | bool] = {
    # One bind for both directions (1.4.5 refuses `port` with `receive-port`).
    "transceiver-mode": True,
    "interface-version": 34,
    "system-type": "VMA",  # bearerbox does not start without one
    # CONTRACT §4: short codes travel as TON 3 / NPI 0, international
    # numbers as TON 1 / NPI 1. Autodetection off: the TON/NPI are ours.
    "source-addr-ton": 3,
    "source-addr-npi": 0,
    "source-addr-autodetect": False,
    "dest-addr-ton": 1,
    "dest-addr-npi": 1,
    "enquire-link-interval": 1,
    "max-pending-submits": 10,
    "reconnect-delay": 1,
}

# A sendsms user allowed to send concatenated messages of up to 5 parts.
USER_OPTIONS: dict[str, str | int | bool] = {"max-messages": 5, "concatenation": True}


@pytest.fixture
def bearerbox() -> str:
    return require_tool("bearerbox", "kannel")


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(system_id="router", password="secret", receipt_delay=0.05)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def dlr() -> AsyncIterator[DlrReceiver]:
    receiver = DlrReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


def _router_process(
    tmp_path: Path, database_url: str, carrier_port: int, password: str, smpp_listen: str
) -> RouterProcess:
    config = tmp_path / "router.toml"
    config.write_text(
        CONFIG.format(
            carrier_port=carrier_port,
            api_key=API_KEY,
            system_id=SYSTEM_ID,
            password=password,
            sender=SHORT_CODE,
        )
    )
    return RouterProcess(
        config,
        env={"SMSROUTER_DATABASE_URL": database_url, "SMSROUTER_SMPP_LISTEN": smpp_listen},
    )


async def _start(router: RouterProcess) -> None:
    """Start the router and wait for its carrier bind."""
    await router.start()
    await _wait_until(
        lambda: any(line.get("event") == "carrier bound" for line in router.lines),
        what="the router's carrier bind",
    )


@pytest.fixture
async def router(
    bearerbox: str, tmp_path: Path, database_url: str, carrier: CarrierSimulator
) -> AsyncIterator[RouterProcess]:
    process = _router_process(tmp_path, database_url, carrier.port, PASSWORD, "127.0.0.1:0")
    try:
        await _start(process)
        yield process
    finally:
        await process.kill()
        print(process.output())  # shown by pytest when the test failed


async def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _metrics(router: RouterProcess) -> str:
    async with aiohttp.ClientSession() as http, http.get(router.base_url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def _final(calls: list[DlrCall], tag: str) -> list[DlrCall]:
    return [c for c in calls if c.query.get("msg") == tag and c.query.get("type") == "1"]


async def test_kannel_sends_through_the_router_and_matches_every_receipt(
    bearerbox: str,
    router: RouterProcess,
    carrier: CarrierSimulator,
    dlr: DlrReceiver,
    tmp_path: Path,
) -> None:
    kannel = Kannel(
        tmp_path / "kannel",
        SmscGroup(
            port=router.smpp_port, system_id=SYSTEM_ID, password=PASSWORD, options=SMSC_OPTIONS
        ),
        SendsmsUser(options=USER_OPTIONS),
        bin_dir=Path(bearerbox).parent,
    )
    await kannel.start()
    try:
        online = await kannel.wait_online()
        assert f":{router.smpp_port}/{router.smpp_port}:{SYSTEM_ID}:" in online
        await _wait_until(
            lambda: any(line.get("event") == "esme bound" for line in router.lines),
            what="the router to log Kannel's bind",
        )
        bound = next(line for line in router.lines if line.get("event") == "esme bound")
        assert bound["account"] == "kannel"
        assert bound["bind"] == "BindTransceiver"
        assert "interface_version: 52 = 0x00000034" in kannel.log("smsc.log")
        # Kannel keeps the link alive with enquire_link; the router answers.
        await _wait_until(
            lambda: "type_name: enquire_link_resp" in kannel.log("smsc.log"),
            what="an enquire_link_resp to Kannel",
        )

        # --- three messages through smsbox's sendsms, one at a time (its
        # HTTP listen backlog is 10).
        messages: dict[str, tuple[str, dict[str, str | int]]] = {
            "plain": (PLAIN, {}),
            "extended": (GSM_EXTENDED, {}),
            "cyrillic": (CYRILLIC, {"coding": 2, "charset": "UTF-8"}),
        }
        for tag, (text, extra) in messages.items():
            status, body = await kannel.sendsms(
                {
                    "from": SHORT_CODE,
                    "to": RECIPIENT,
                    "text": text,
                    "dlr-mask": 31,
                    "dlr-url": dlr.url(msg=tag),
                    **extra,
                }
            )
            assert (status, body) == (202, "0: Accepted for delivery"), kannel.logs()

        # --- Kannel matched a final report for each of the three.
        try:
            await dlr.wait_for(
                lambda calls: all(_final(calls, tag) for tag in messages), timeout=20
            )
        except TimeoutError:
            raise AssertionError(f"DLRs so far: {dlr.calls}\n{kannel.logs()}") from None

        # --- what the carrier got: 2 single messages and the 2 parts of
        # the UCS-2 one, with the addresses of CONTRACT §4.
        await _wait_until(lambda: len(carrier.submits) >= 4, what="4 submit_sm at the carrier")
        assert len(carrier.submits) == 4, carrier.submits
        for submit in carrier.submits:
            assert (submit.source_addr, submit.source_addr_ton) == (SHORT_CODE, 3)
            assert (submit.destination_addr, submit.dest_addr_ton) == (RECIPIENT, 1)
        by_coding: dict[int, list[AcceptedSubmit]] = {}
        for submit in carrier.submits:
            by_coding.setdefault(submit.data_coding, []).append(submit)
        assert sorted(s.text for s in by_coding[0]) == sorted([PLAIN, GSM_EXTENDED])
        extended = next(s for s in by_coding[0] if s.text == GSM_EXTENDED)
        # GSM 03.38 unpacked, extension characters behind the 0x1B escape.
        assert extended.short_message.startswith(b"Price 5\x1be \x1b<promo\x1b> \x1b(x\x1b)")
        parts = by_coding[8]
        assert len(parts) == 2
        concat: list[tuple[int, int, int, str]] = []
        for part in parts:
            assert part.esm_class & 0x40  # Kannel's UDH travels on to the carrier
            info = concat_info(split_udh(part.short_message)[0])
            assert info is not None
            concat.append((info.seq, info.total, info.ref, part.text))
        concat.sort()
        assert [(seq, total) for seq, total, _, _ in concat] == [(1, 2), (2, 2)]
        assert concat[0][2] == concat[1][2]  # one reference for both parts
        assert "".join(text for *_, text in concat) == CYRILLIC

        # --- the reports Kannel made: per message one SMSC ack (8) and one
        # delivered (1), with the router's message id as the foreign id.
        fids: dict[str, str] = {}
        for tag in messages:
            calls = [c.query for c in dlr.calls if c.query.get("msg") == tag]
            assert sorted(c["type"] for c in calls) == ["1", "8"], calls
            ack, final = sorted(calls, key=lambda q: q["type"], reverse=True)
            assert final["fid"] == ack["fid"]
            assert final["fid"] and final["text"].startswith(f"id:{final['fid']} ")
            assert "stat:DELIVRD" in final["text"]
            assert (final["from"], final["to"], final["smsc"]) == (SHORT_CODE, RECIPIENT, "router")
            fids[tag] = final["fid"]
        assert len(set(fids.values())) == 3

        # The ids Kannel matched are the router's own: the API knows them.
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            for tag, fid in fids.items():
                async with http.get(router.base_url + f"/v1/messages/{fid}") as resp:
                    assert resp.status == 200, (tag, await resp.text())
                    message = await resp.json()
                assert message["status"] == "delivered", (tag, message)
                assert (message["from"], message["to"]) == (SHORT_CODE, "+" + RECIPIENT)
                assert message["parts"] == 1  # a UDH part is a message of its own

        # --- bearerbox: still online, 3 messages sent, none failed.
        status_line = kannel.smsc_status_line(await kannel.status())
        assert "(online" in status_line, status_line
        assert re.search(r"sent: sms 3 ", status_line), status_line
        assert "failed 0," in status_line, status_line
        smsc_log = kannel.log("smsc.log")
        # Three receipts came back: the second part asked for none.
        assert smsc_log.count("type_name: deliver_sm\n") == 3, kannel.logs()
        assert "generic_nack" not in smsc_log
        assert "ERROR:" not in smsc_log
        assert "not found" not in smsc_log  # every receipt matched a stored DLR

        # --- the router counted Kannel's 4 submit_sm as SMPP ingress, and 3
        # receipts answered by deliver_sm_resp OK (counted once the answer
        # is in, which may be just after Kannel called the dlr-url).
        receipts_ok = 'smsrouter_callbacks_total{result="ok"} 3.0'
        metrics = ""
        for _ in range(100):
            metrics = await _metrics(router)
            if receipts_ok in metrics:
                break
            await asyncio.sleep(0.05)
        assert receipts_ok in metrics, metrics
        assert 'smsrouter_callbacks_total{result="retry"}' not in metrics
        assert 'smsrouter_messages_received_total{account="kannel",ingress="smpp"} 4.0' in metrics
        assert 'smsrouter_messages_submitted_total{carrier="sim"} 4.0' in metrics
        assert 'smsrouter_esme_binds{account="kannel"} 1.0' in metrics
        assert "smsrouter_messages_rejected_total{" not in metrics
    finally:
        await kannel.stop()
        print(kannel.logs())

    # Kannel unbinds on SIGTERM; both boxes exit cleanly, the router saw it.
    assert kannel.returncodes() == {"bearerbox": 0, "smsbox": 0}
    assert "type_name: unbind_resp" in kannel.log("smsc.log")
    await _wait_until(
        lambda: any(line.get("event") == "esme unbound" for line in router.lines),
        what="the router to log Kannel's unbind",
    )


async def test_kannel_cuts_a_password_longer_than_8_and_the_bind_is_refused(
    bearerbox: str, tmp_path: Path, database_url: str, carrier: CarrierSimulator
) -> None:
    """An account password of more than 8 characters cannot be used from
    Kannel: it sends only the first 8 (SMPP 3.4 §5.2.2), the router answers
    ESME_RINVPASWD and Kannel takes the connection down for good.

    Kannel starts first and the router only once bearerbox finished its
    start-up: bearerbox 1.4.5 panics on a bind refused before that.
    """
    long_password = PASSWORD + "-and-more"
    smpp_port = free_port()
    router = _router_process(
        tmp_path, database_url, carrier.port, long_password, f"127.0.0.1:{smpp_port}"
    )
    kannel = Kannel(
        tmp_path / "kannel",
        SmscGroup(
            port=smpp_port, system_id=SYSTEM_ID, password=long_password, options=SMSC_OPTIONS
        ),
        bin_dir=Path(bearerbox).parent,
    )
    await kannel.start()
    try:
        await kannel.wait_started()
        await _start(router)
        await _wait_until(
            lambda: any(line.get("event") == "bind refused" for line in router.lines),
            what="the router to refuse Kannel's bind",
        )
        refused = next(line for line in router.lines if line.get("event") == "bind refused")
        assert refused["system_id"] == SYSTEM_ID
        assert refused["status"] == "0x0000000E"  # ESME_RINVPASWD
        await _wait_until(
            lambda: re.search(r"SMSCConn \S+ shut down\.", kannel.log("smsc.log")) is not None,
            what="Kannel to give the connection up",
        )
        smsc_log = kannel.log("smsc.log")
        assert "PDU element <password> too long (length is 17, should be 8)" in smsc_log
        assert "rejected login to transmit, code 0x0000000e (Invalid Password)" in smsc_log
        status_line = kannel.smsc_status_line(await kannel.status())
        assert "(online" not in status_line, status_line
        assert not any(line.get("event") == "esme bound" for line in router.lines)
    finally:
        await kannel.stop()
        await router.kill()
        print(kannel.logs())
        print(router.output())
    assert kannel.returncodes() == {"bearerbox": 0, "smsbox": 0}
