"""CONTRACT §6 "Opt-out" and §8 against the router subprocess: an account's
own list (GET/PUT/DELETE /v1/opt-outs) and its effect on sends over HTTP
and SMPP, the DELETE rules (a subscriber's STOP and an operator's import
are not the account's to lift), a change committed by another process,
the operator's list, and `smsrouter admin opt-outs import` of a file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smsrouter.connectors.smpp import BindTransceiver, CommandStatus, SubmitSm, SubmitSmResp
from smsrouter.router.store.writes import OPT_OUTS_CHANNEL, opt_out_notice
from tests.e2e.conftest import StartRouter
from tests.e2e.daemon import RouterProcess
from tests.raw_esme import RawEsme

OPS_TOKEN = "ops-token-0123456789abcdefghijkl"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
KEY_C = {"Authorization": "Bearer key-c"}
KEY_D = {"Authorization": "Bearer key-d"}
SENDER = "+14155550101"
SUBSCRIBER = "+14155550123"
OTHER = "+14155550124"

CONFIG = f"""
[admin]
listen = "127.0.0.1:0"
tokens = [{{ name = "ops", token = "{OPS_TOKEN}" }}]
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "c"
api_keys = ["key-c"]
smpp = {{ system_id = "optc", password = "optc-pw" }}
credit = "1000"
[[accounts]]
id = "d"
api_keys = ["key-d"]
credit = "1000"
[[numbers]]
number = "{SENDER}"
account = "c"
type = "long_code"
[[numbers]]
number = "+14155550102"
account = "d"
type = "long_code"
[shutdown]
drain_seconds = 1
"""


def _opt_out_url(router: RouterProcess, number: str) -> str:
    return f"{router.base_url}/v1/opt-outs/{number.replace('+', '%2B')}"


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json(content_type=None)


async def _send(
    http: aiohttp.ClientSession, router: RouterProcess, to: str, key: dict[str, str] = KEY_C
) -> tuple[int, Any]:
    sender = SENDER if key is KEY_C else "+14155550102"
    body = {"from": sender, "to": to, "text": "hello"}
    async with http.post(router.base_url + "/v1/messages", json=body, headers=key) as resp:
        return resp.status, await _json(resp)


def _refusal_code(answer: tuple[int, Any]) -> tuple[int, str | None]:
    status, body = answer
    rejected = body.get("rejected") or []
    return status, rejected[0]["code"] if rejected else None


async def test_a_number_the_account_opts_out_is_refused_at_once_over_http_and_smpp(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    esme = await RawEsme.connect(router.smpp_port)
    try:
        assert await esme.bind(BindTransceiver, "optc", "optc-pw") == CommandStatus.ESME_ROK
        async with aiohttp.ClientSession() as http:
            async with http.put(_opt_out_url(router, SUBSCRIBER), headers=KEY_C) as resp:
                assert resp.status == 201, await resp.text()
                entry = await _json(resp)
            assert (entry["number"], entry["source"]) == (SUBSCRIBER, "account")
            assert entry["created_at"].endswith("Z")
            # The send right after the PUT, in the same process: refused.
            assert _refusal_code(await _send(http, router, SUBSCRIBER)) == (422, "opted_out")
            # Only this account's: another account still reaches the number.
            assert (await _send(http, router, SUBSCRIBER, KEY_D))[0] == 202
            assert (await _send(http, router, OTHER))[0] == 202
            # A second PUT: listed already.
            async with http.put(_opt_out_url(router, SUBSCRIBER), headers=KEY_C) as resp:
                assert resp.status == 200
            # A number in any E.164 spelling is the same subscriber.
            async with http.put(
                f"{router.base_url}/v1/opt-outs/+1 415 555 0123", headers=KEY_C
            ) as resp:
                assert resp.status == 200
        submit = SubmitSm(
            source_addr_ton=1, source_addr_npi=1, source_addr=SENDER[1:],
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=SUBSCRIBER[1:],
            short_message=b"hello",
        )  # fmt: skip
        esme.send(submit)
        answer = await esme.read()
        assert isinstance(answer, SubmitSmResp), answer
        assert answer.command_status == CommandStatus.ESME_RX_P_APPN  # 0x65
    finally:
        esme.close()
        await esme.wait_closed()


async def test_delete_lifts_only_the_accounts_own_entries(
    start_router: StartRouter, database_url: str
) -> None:
    router = await start_router(CONFIG)
    db = await asyncpg.connect(database_url)
    try:
        # A subscriber's STOP and an operator's import, as other processes
        # commit them: with their NOTIFY.
        async with db.transaction():
            await db.execute(
                "INSERT INTO opt_outs (account_id, recipient, source)"
                " VALUES ('c', $1, 'subscriber'), ('c', $2, 'import')",
                SUBSCRIBER,
                OTHER,
            )
            for number in (SUBSCRIBER, OTHER):
                await db.execute(
                    "SELECT pg_notify($1, $2)", OPT_OUTS_CHANNEL, opt_out_notice("c", number, True)
                )
    finally:
        await db.close()
    async with aiohttp.ClientSession() as http:
        # Heard from the other process within the contract's second.
        deadline = time.monotonic() + 5
        while _refusal_code(await _send(http, router, SUBSCRIBER)) != (422, "opted_out"):
            assert time.monotonic() < deadline, "the STOP committed elsewhere was not heard"
            await asyncio.sleep(0.05)
        assert _refusal_code(await _send(http, router, OTHER)) == (422, "opted_out")
        for number, source in ((SUBSCRIBER, "subscriber"), (OTHER, "import")):
            async with http.delete(_opt_out_url(router, number), headers=KEY_C) as resp:
                assert resp.status == 409
                problem = await _json(resp)
            assert problem["code"] == "opted_out_by_subscriber"
            assert problem["source"] == source
        # Still refused: only the subscriber's START lifts a STOP.
        assert _refusal_code(await _send(http, router, SUBSCRIBER)) == (422, "opted_out")

        own = "+14155550125"
        async with http.put(_opt_out_url(router, own), headers=KEY_C) as resp:
            assert resp.status == 201
        async with http.delete(_opt_out_url(router, own), headers=KEY_C) as resp:
            assert resp.status == 204
        assert (await _send(http, router, own))[0] == 202
        async with http.delete(_opt_out_url(router, own), headers=KEY_C) as resp:
            assert resp.status == 404
            assert (await _json(resp))["code"] == "not_found"
        # Another account's entry is none of this one's.
        async with http.delete(_opt_out_url(router, SUBSCRIBER), headers=KEY_D) as resp:
            assert resp.status == 404
        async with http.put(f"{router.base_url}/v1/opt-outs/12345", headers=KEY_C) as resp:
            assert resp.status == 422
            problem = await _json(resp)
        assert [(e["field"], e["code"]) for e in problem["errors"]] == [
            ("number", "invalid_number")
        ]
        async with http.get(router.base_url + "/v1/opt-outs") as resp:
            assert resp.status == 401


async def test_the_lists_of_the_account_and_of_the_operator_page_with_cursors(
    start_router: StartRouter,
) -> None:
    router = await start_router(CONFIG)
    admin = f"http://127.0.0.1:{router.admin_port}/admin/v1"
    numbers = [f"+1415555020{i}" for i in range(5)]
    async with aiohttp.ClientSession() as http:
        for number in reversed(numbers):
            async with http.put(_opt_out_url(router, number), headers=KEY_C) as resp:
                assert resp.status == 201
        async with http.put(_opt_out_url(router, SUBSCRIBER), headers=KEY_D) as resp:
            assert resp.status == 201
        seen: list[str] = []
        url = router.base_url + "/v1/opt-outs?limit=2"
        while True:
            async with http.get(url, headers=KEY_C) as resp:
                assert resp.status == 200
                page = await _json(resp)
            seen += [e["number"] for e in page["opt_outs"]]
            assert all(e["source"] == "account" for e in page["opt_outs"])
            if page["next"] is None:
                break
            url = router.base_url + f"/v1/opt-outs?limit=2&after={page['next']}"
        assert seen == numbers  # in number order, this account's only
        async with http.get(
            router.base_url + "/v1/opt-outs?limit=0&after=nonsense&x=1", headers=KEY_C
        ) as resp:
            assert resp.status == 422
            fields = {e["field"] for e in (await _json(resp))["errors"]}
        assert fields == {"limit", "after", "x"}

        async with http.get(f"{admin}/opt-outs?account=c&limit=3", headers=OPS) as resp:
            assert resp.status == 200
            page = await _json(resp)
        assert [e["number"] for e in page["opt_outs"]] == numbers[:3]
        assert {e["account"] for e in page["opt_outs"]} == {"c"}
        async with http.get(
            f"{admin}/opt-outs?account=c&after={page['next']}", headers=OPS
        ) as resp:
            assert [e["number"] for e in (await _json(resp))["opt_outs"]] == numbers[3:]
        async with http.get(f"{admin}/opt-outs", headers=OPS) as resp:
            every = (await _json(resp))["opt_outs"]
        assert [(e["account"], e["number"]) for e in every] == [
            *(("c", n) for n in numbers),
            ("d", SUBSCRIBER),
        ]
        async with http.get(f"{admin}/opt-outs?account=nobody", headers=OPS) as resp:
            assert resp.status == 404
        async with http.get(f"{admin}/opt-outs?account=c") as resp:
            assert resp.status == 401


async def _admin_cli(router: RouterProcess, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsrouter", "admin",
        "--url", f"http://127.0.0.1:{router.admin_port}", *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSROUTER_ADMIN_TOKEN": OPS_TOKEN},
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_an_imported_file_is_refused_at_once_and_audited(
    start_router: StartRouter, tmp_path: Path
) -> None:
    router = await start_router(CONFIG)
    numbers = [f"+1646555{i:04d}" for i in range(3000)]
    lines = [*numbers[:1500], "", "not-a-number", *numbers[1500:], "+1646555000", numbers[0]]
    listing = tmp_path / "list.txt"
    listing.write_text("\r\n".join(lines) + "\r\n")
    code, out, err = await _admin_cli(router, "opt-outs", "import", "c", str(listing))
    assert code == 0, err
    totals = json.loads(out)
    assert totals["received"] == 3003  # the blank line is not one
    assert totals["added"] == 3000
    assert totals["invalid"] == [
        {"line": 1502, "value": "not-a-number"},
        {"line": 3003, "value": "+1646555000"},
    ]
    assert totals["requests"] == 1
    async with aiohttp.ClientSession() as http:
        assert _refusal_code(await _send(http, router, numbers[2999])) == (422, "opted_out")
        assert (await _send(http, router, numbers[0], KEY_D))[0] == 202
        async with http.get(
            f"http://127.0.0.1:{router.admin_port}/admin/v1/audit", headers=OPS
        ) as resp:
            entries = (await _json(resp))["entries"]
        imports = [e for e in entries if e["action"] == "opt_outs.import"]
        assert [(e["actor"], e["target"], e["after"]) for e in imports] == [
            ("ops", "c", {"received": 3003, "added": 3000})
        ]
        async with http.delete(_opt_out_url(router, numbers[0]), headers=KEY_C) as resp:
            assert resp.status == 409  # the operator's, not the account's
    code, out, err = await _admin_cli(router, "opt-outs", "list", "c", "--limit", "2")
    assert code == 0, err
    assert [e["number"] for e in json.loads(out)["opt_outs"]] == numbers[:2]
    code, _, err = await _admin_cli(router, "opt-outs", "import", "nobody", str(listing))
    assert code == 1
    assert "404" in err
    code, _, err = await _admin_cli(router, "opt-outs", "import", "c", str(tmp_path / "none"))
    assert code == 2
