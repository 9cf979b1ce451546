"""Several router instances on one PostgreSQL (CONTRACT §9).

Each test starts two or three daemons on one database of the test's own
server, each with its own `[instance] id` and its own carrier system_id, so
that the carrier simulator's record says which instance sent each part.
Messages go to every instance's HTTP port; what is checked is at the
carrier: each acknowledged message exactly once, no sender above its rate
over all instances together, a killed instance's work taken over within a
lease, and a paused owner sending nothing after its takeover.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import smpplib.client
import smpplib.consts

from smsrouter.router.shards import shard_of
from smsrouter.sims.carrier import AcceptedSubmit, CarrierSimulator
from smsrouter.sims.webhook import WebhookReceiver
from tests.e2e.daemon import RouterProcess

LEASE = 2.0

# What every instance of these tests shares; `system_id` is how it binds
# the carrier (its own, so that the simulator says who sent a part).
_SHARED = """
[http]
listen = "127.0.0.1:0"
[smpp]
listen = "127.0.0.1:0"
[log]
level = "info"
[[carriers]]
name = "sim"
port = {carrier_port}
system_id = "{system_id}"
window = 16
reconnect_delay = 0.1
reconnect_max_delay = 0.5
[[routes]]
prefix = "1"
carriers = [ {{ name = "sim", cost = "0.004" }} ]
[[prices]]
prefix = "1"
price = "0.01"
[[accounts]]
id = "acme"
credit = "1000000"
api_keys = ["acme-key"]
callback_url = "{webhook_url}"
webhook_secret = "hook-secret"
{numbers}
[shutdown]
drain_seconds = 2
"""
CONFIG = (
    """
[instance]
id = "{instance}"
lease_seconds = {lease}
"""
    + _SHARED
)


def _senders(count: int) -> list[str]:
    """Short codes in distinct shards, so that every instance owns some."""
    chosen: dict[int, str] = {}
    for n in itertools.count(30000):
        chosen.setdefault(shard_of(str(n)), str(n))
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("unreachable")


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSimulator]:
    # One carrier account bound from every instance under its own
    # system_id: a receipt goes to any of them, as a carrier's does.
    sim = CarrierSimulator(receipt_delay=0.02, seed=3, receipt_account=lambda system_id: "fleet")
    await sim.start()
    yield sim
    await sim.stop()


class Fleet:
    """The instances of one test, killed (by PID) when it ends."""

    def __init__(
        self, tmp_path: Path, database_url: str, carrier: CarrierSimulator, webhook_url: str
    ) -> None:
        self.tmp_path = tmp_path
        self.env = {"SMSROUTER_DATABASE_URL": database_url}
        self.carrier = carrier
        self.webhook_url = webhook_url
        self.instances: dict[str, RouterProcess] = {}

    async def start(self, instance: str, numbers: str) -> RouterProcess:
        config = self.tmp_path / f"{instance}.toml"
        config.write_text(
            CONFIG.format(
                instance=instance,
                system_id=instance,
                lease=LEASE,
                carrier_port=self.carrier.port,
                webhook_url=self.webhook_url,
                numbers=numbers,
            )
        )
        router = RouterProcess(config, env=self.env)
        self.instances[instance] = router
        await router.start()
        await router.wait_for_event("carrier bound")
        return router

    def __iter__(self) -> Iterator[RouterProcess]:
        return iter(self.instances.values())


@pytest.fixture
async def fleet(
    tmp_path: Path, database_url: str, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path, database_url, carrier, webhook.url)
    yield fleet
    for router in fleet:
        if router.proc is not None and router.proc.returncode is None:
            # A test that stopped one (SIGSTOP) must not leave it stopped.
            router.proc.send_signal(signal.SIGCONT)
        await router.kill()
        print(router.output())


def _numbers(senders: list[str], rate: float) -> str:
    return "\n".join(
        f'[[numbers]]\nnumber = "{s}"\naccount = "acme"\ntype = "short_code"\nrate = {rate}'
        for s in senders
    )


async def _shards_owned(router: RouterProcess) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(router.base_url + "/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("smsrouter_shards_owned "):
            return int(float(line.split()[1]))
    return 0


async def _until(predicate: object, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate() if callable(predicate) else predicate
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _split(fleet: Fleet) -> None:
    """Until the instances hold every shard between them, each a share."""
    routers = list(fleet)

    async def settled() -> bool:
        owned = [await _shards_owned(r) for r in routers]
        return sum(owned) == 1024 and min(owned) >= 1024 // len(routers) - 1

    await _until(settled, "the shards to be split", timeout=30.0)


async def _send(
    routers: list[RouterProcess], senders: list[str], count: int, prefix: str
) -> dict[str, str]:
    """`count` messages round-robin over the instances and senders: text →
    message id of those acknowledged."""
    acked: dict[str, str] = {}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer acme-key"}) as http:

        async def one(n: int) -> None:
            router = routers[n % len(routers)]
            text = f"{prefix}-{n}"
            # Every sender through every instance: most messages are stored
            # by an instance that does not own their sender.
            sender = senders[(n // len(routers)) % len(senders)]
            body = {"from": sender, "to": f"+1415555{n:04d}", "text": text}
            try:
                async with http.post(router.base_url + "/v1/messages", json=body) as resp:
                    if resp.status == 202:
                        acked[text] = (await resp.json())["messages"][0]["id"]
            except aiohttp.ClientError:
                pass  # an instance killed under us: that request is unknown

        await asyncio.gather(*(one(n) for n in range(count)))
    return acked


async def _all_delivered(database_url: str, ids: set[str], timeout: float = 60.0) -> None:
    conn = await asyncpg.connect(database_url)
    try:

        async def delivered() -> bool:
            rows = await conn.fetch(
                "SELECT status FROM messages WHERE id = ANY($1::uuid[])", list(ids)
            )
            return len(rows) == len(ids) and all(r["status"] == "delivered" for r in rows)

        try:
            await _until(delivered, "every acknowledged message delivered", timeout)
        except AssertionError:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM messages WHERE id = ANY($1::uuid[])"
                " GROUP BY status",
                list(ids),
            )
            stuck = await conn.fetch(
                "SELECT body, sender FROM messages WHERE id = ANY($1::uuid[])"
                " AND status <> 'delivered'",
                list(ids),
            )
            raise AssertionError(
                f"not every acknowledged message delivered: {[tuple(r) for r in rows]}"
                f" of {len(ids)}; not delivered: {[tuple(r) for r in stuck][:20]}"
            ) from None
    finally:
        await conn.close()


def _within_rate(submits: list[AcceptedSubmit], rate: float, slack: float = 0.25) -> None:
    """Per sender, over every instance together: in any stretch of time T
    at most capacity + rate·T parts (CONTRACT §2 bucket, capacity max(1,
    rate)); `slack` for the simulator stamping a part when it reads it, on
    a loaded machine. A second full bucket after a takeover would exceed
    this by `capacity` parts."""
    by_sender: dict[str, list[AcceptedSubmit]] = defaultdict(list)
    for s in submits:
        by_sender[s.source_addr].append(s)
    capacity = max(1.0, rate)
    for sender, parts in by_sender.items():
        parts.sort(key=lambda p: p.received_at)
        times = [p.received_at for p in parts]
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                allowed = capacity + rate * (times[j] - start + slack)
                assert j - i + 1 <= allowed + 1e-9, (
                    f"sender {sender}: {j - i + 1} parts in {times[j] - start:.3f} s, from"
                    f" {Counter(p.system_id for p in parts[i : j + 1])}"
                )


async def test_two_instances_send_each_message_once_within_each_senders_rate(
    fleet: Fleet, carrier: CarrierSimulator, webhook: WebhookReceiver, database_url: str
) -> None:
    senders = _senders(8)
    rate = 10.0
    first = await fleet.start("alpha", _numbers(senders, rate))
    second = await fleet.start("beta", _numbers(senders, rate))
    await _split(fleet)

    acked = await _send([first, second], senders, 240, "two")
    assert len(acked) == 240
    await _all_delivered(database_url, set(acked.values()))

    at_carrier = Counter(s.text for s in carrier.submits)
    assert {t: n for t, n in at_carrier.items() if n != 1} == {}
    assert set(at_carrier) == set(acked)
    # Both instances sent: the work was split, not done by one.
    by_instance = Counter(s.system_id for s in carrier.submits)
    assert set(by_instance) == {"alpha", "beta"}, by_instance
    _within_rate(list(carrier.submits), rate)

    await _until(
        lambda: (
            set(acked.values())
            <= {c.body["id"] for c in webhook.callbacks if c.body.get("status") == "delivered"}
        ),
        "every callback",
    )
    # A stopping instance hands its shards back at once: the other holds all.
    assert await second.terminate() == 0
    await _until(
        lambda: _owned_exactly(first, 1024), "the survivor to hold every shard", timeout=2 * LEASE
    )


CAPPED = """
[[accounts]]
id = "capped"
credit = "1000000"
api_keys = ["capped-key"]
daily_limit = {limit}
daily_alarm = {alarm}
alert_url = "{alert_url}"
webhook_secret = "hook-secret"
[[numbers]]
number = "{sender}"
account = "capped"
type = "short_code"
rate = 100
"""


async def test_two_instances_accept_exactly_the_daily_limit_and_alarm_once(
    fleet: Fleet, webhook: WebhookReceiver
) -> None:
    """CONTRACT §6 "Daily thresholds" on every instance: 50 concurrent
    senders over two instances, each of which knows only what it accepted
    itself; the database's count (migration 0014) lets exactly the limit
    through and raises the alarm once."""
    limit, alarm = 20, 8
    (sender,) = _senders(1)
    capped = CAPPED.format(limit=limit, alarm=alarm, alert_url=webhook.url, sender=sender)
    routers = [await fleet.start(name, capped) for name in ("alpha", "beta")]
    statuses: Counter[tuple[int, str]] = Counter()
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer capped-key"}) as http:

        async def post(n: int) -> None:
            body = {"from": sender, "to": f"+1415777{n:04d}", "text": f"capped {n}"}
            async with http.post(routers[n % 2].base_url + "/v1/messages", json=body) as resp:
                answer = await resp.json()
                code = "" if resp.status == 202 else answer["rejected"][0]["code"]
                statuses[resp.status, code] += 1

        await asyncio.gather(*(post(n) for n in range(50)))
    assert statuses == {(202, ""): limit, (422, "limit_reached"): 50 - limit}, statuses

    async def gauges_up() -> bool:
        for router in routers:
            async with (
                aiohttp.ClientSession() as http,
                http.get(router.base_url + "/metrics") as resp,
            ):
                if 'smsrouter_account_alarm{account="capped"} 1.0' not in await resp.text():
                    return False
        return True

    await _until(gauges_up, "the alarm gauge on both instances", timeout=10)
    await _until(
        lambda: any(c.body.get("kind") == "daily_alarm" for c in webhook.callbacks),
        "the alarm's POST",
    )
    await asyncio.sleep(1.0)  # a second alarm, if any, would be on its way
    alarms = [c for c in webhook.callbacks if c.body.get("kind") == "daily_alarm"]
    assert len(alarms) == 1, alarms
    assert alarm <= alarms[0].body["count"] <= limit
    assert alarms[0].signature_ok


RATED = """
[[accounts]]
id = "rated"
credit = "1000000"
api_keys = ["rated-key"]
max_tps = 10
[[numbers]]
number = "{sender}"
account = "rated"
type = "short_code"
rate = 100
"""


async def test_two_instances_keep_an_account_within_its_max_tps(fleet: Fleet) -> None:
    """CONTRACT §6 "Throughput plan" over all its binds and requests: 50
    concurrent requests over two instances, whose own buckets would each
    let 10 through; the database's bucket (migration 0014) lets a second's
    worth and its margin through (and what drains meanwhile), the rest get
    429 with Retry-After."""
    (sender,) = _senders(1)
    routers = [await fleet.start(name, RATED.format(sender=sender)) for name in ("alpha", "beta")]
    answers: list[tuple[int, str, str | None]] = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer rated-key"}) as http:

        async def post(n: int) -> None:
            body = {"from": sender, "to": f"+1415888{n:04d}", "text": f"rated {n}"}
            async with http.post(routers[n % 2].base_url + "/v1/messages", json=body) as resp:
                answer = await resp.json()
                code = "" if resp.status == 202 else answer["code"]
                answers.append((resp.status, code, resp.headers.get("Retry-After")))

        started = time.monotonic()
        await asyncio.gather(*(post(n) for n in range(50)))
        elapsed = time.monotonic() - started
    # A second's worth and the margin (1.25 s), plus what drained while the
    # burst lasted, at 10 a second.
    accepted = sum(1 for status, _, _ in answers if status == 202)
    assert 10 <= accepted <= int(10 * (1.25 + elapsed)), (elapsed, answers)
    assert {a for a in answers if a[0] != 202} == {(429, "throughput_exceeded", "1")}


async def _owned_exactly(router: RouterProcess, count: int) -> bool:
    return await _shards_owned(router) == count


async def test_sigkill_of_one_of_three_loses_nothing_and_is_taken_over_within_a_lease(
    fleet: Fleet, carrier: CarrierSimulator, webhook: WebhookReceiver, database_url: str
) -> None:
    senders = _senders(12)
    routers = [await fleet.start(name, _numbers(senders, 50.0)) for name in ("a", "b", "c")]
    await _split(fleet)
    victim = routers[2]

    before = await _send(routers, senders, 150, "early")
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    await victim.proc.wait()
    killed_at = datetime.now().astimezone()
    after = await _send(routers[:2], senders, 150, "late")
    acked = {**before, **after}
    assert len(acked) >= 300 - 1  # at most a request in flight to the victim

    # Takeover: the victim's shards are claimed by the survivors within a
    # lease (and a round) of its death.
    async def taken_over() -> bool:
        return sum([await _shards_owned(r) for r in routers[:2]]) == 1024

    await _until(taken_over, "the takeover", timeout=LEASE + 5)
    claims = [
        datetime.fromisoformat(line["timestamp"])
        for r in routers[:2]
        for line in r.lines
        if line.get("event") == "shards claimed"
        and datetime.fromisoformat(line["timestamp"]) > killed_at
    ]
    assert claims and min(claims) - killed_at <= timedelta(seconds=LEASE + 1), claims
    print(f"takeover {(min(claims) - killed_at).total_seconds():.2f} s after the kill")

    await _all_delivered(database_url, set(acked.values()))
    await _until(
        lambda: (
            set(acked.values())
            <= {c.body["id"] for c in webhook.callbacks if c.body.get("status") == "delivered"}
        ),
        "every acknowledged message's callback",
        timeout=60,
    )
    at_carrier = Counter(s.text for s in carrier.submits)
    assert not [t for t in acked if at_carrier[t] == 0]
    # Only parts outstanding on the killed instance may go twice: the first
    # copy of every duplicate left from the victim.
    first_by: dict[str, str] = {}
    for s in carrier.submits:
        first_by.setdefault(s.text, s.system_id)
    for text, n in at_carrier.items():
        if n > 1:
            assert n == 2 and first_by[text] == "c", (text, n, first_by[text])
    duplicates = sum(n - 1 for n in at_carrier.values())
    print(f"acknowledged={len(acked)} at_carrier={len(at_carrier)} duplicates={duplicates}")


async def test_a_paused_owner_sends_nothing_after_its_takeover(
    fleet: Fleet, carrier: CarrierSimulator, database_url: str
) -> None:
    # Slow senders keep work queued on both instances while one is paused.
    senders = _senders(8)
    first = await fleet.start("one", _numbers(senders, 2.0))
    paused = await fleet.start("two", _numbers(senders, 2.0))
    await _split(fleet)
    acked = await _send([first, paused], senders, 80, "queued")
    assert len(acked) == 80
    assert paused.proc is not None
    paused.proc.send_signal(signal.SIGSTOP)
    stopped_at = datetime.now().astimezone()
    try:
        await _until(lambda: _owned_exactly(first, 1024), "the takeover", timeout=LEASE * 2 + 5)
        taken_at = datetime.now().astimezone()
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    await _all_delivered(database_url, set(acked.values()), timeout=90)

    # The woken instance learns it lost its shards and takes a share again
    # (new leases, new epochs): until that claim it sends nothing.
    await _split(fleet)
    reclaimed_at = min(
        datetime.fromisoformat(line["timestamp"])
        for line in paused.lines
        if line.get("event") == "shards claimed"
        and datetime.fromisoformat(line["timestamp"]) > stopped_at
    )
    late = [s for s in carrier.submits if s.system_id == "two" and taken_at < s.at < reclaimed_at]
    assert late == [], f"{len(late)} parts sent by the paused owner after its takeover"
    at_carrier = Counter(s.text for s in carrier.submits)
    assert not [t for t in acked if at_carrier[t] == 0]
    # A part goes twice only if it was at the carrier when the owner paused.
    for text, n in at_carrier.items():
        if n > 1:
            firsts = [s.at for s in carrier.submits if s.text == text]
            assert n == 2 and abs(min(firsts) - stopped_at) < timedelta(seconds=2), text
    _within_rate(list(carrier.submits), 2.0)


WORKERS_CONFIG = (
    """
[instance]
lease_seconds = {lease}
[database]
data_dir = "{data_dir}"
"""
    + _SHARED
)


async def _owned_by_worker(router: RouterProcess, workers: int) -> dict[str, int]:
    """Shards held per worker, read from /metrics over new connections
    (the kernel spreads them over the workers) until every one answered."""
    seen: dict[str, int] = {}
    for _ in range(200):
        async with (
            aiohttp.ClientSession() as http,
            http.get(router.base_url + "/metrics") as resp,
        ):
            text = await resp.text()
        instance = next(
            line.split('instance="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("smsrouter_instance_info{")
        )
        owned = next(
            int(float(line.split()[1]))
            for line in text.splitlines()
            if line.startswith("smsrouter_shards_owned ")
        )
        seen[instance] = owned
        if len(seen) == workers:
            break
    return seen


async def test_two_workers_on_the_embedded_database_send_each_message_once(
    tmp_path: Path, carrier: CarrierSimulator, webhook: WebhookReceiver
) -> None:
    senders = _senders(8)
    config = tmp_path / "router.toml"
    config.write_text(
        WORKERS_CONFIG.format(
            lease=LEASE,
            system_id="fleet",
            data_dir=tmp_path / "pg",
            carrier_port=carrier.port,
            webhook_url=webhook.url,
            numbers=_numbers(senders, 10.0),
        )
    )
    router = RouterProcess(config, args=("--workers", "2"))
    try:
        await router.start()

        async def split() -> bool:
            owned = await _owned_by_worker(router, 2)
            return len(owned) == 2 and sorted(owned.values()) == [512, 512]

        await _until(split, "the workers to split the shards", timeout=30)
        acked = await _send([router], senders, 200, "workers")
        assert len(acked) == 200
        await _until(
            lambda: (
                set(acked.values())
                <= {c.body["id"] for c in webhook.callbacks if c.body.get("status") == "delivered"}
            ),
            "every callback",
            timeout=60,
        )
        at_carrier = Counter(s.text for s in carrier.submits)
        assert {t: n for t, n in at_carrier.items() if n != 1} == {}
        assert set(at_carrier) == set(acked)
        _within_rate(list(carrier.submits), 10.0)
        assert await router.terminate() == 0
    finally:
        await router.kill()
        print(router.output())


PARTNER = """
[[accounts]]
id = "partner"
credit = "1000000"
smpp = {{ system_id = "partner", password = "pw-12345", max_binds = 4 }}
{numbers}
"""


def _smpp_partner_run(submit_port: int, receive_port: int, senders: list[str], count: int) -> int:
    """smpplib (a third-party ESME): submits with receipts requested on a
    transmitter bind of one instance, and reads them on a receiver bind of
    another; how many receipts arrived."""
    receipts: list[object] = []
    receiver = smpplib.client.Client("127.0.0.1", receive_port, timeout=10)
    receiver.set_message_received_handler(lambda pdu: receipts.append(pdu))
    receiver.connect()
    receiver.bind_receiver(system_id="partner", password="pw-12345")
    sender = smpplib.client.Client("127.0.0.1", submit_port, timeout=10)
    sender.connect()
    sender.bind_transmitter(system_id="partner", password="pw-12345")
    try:
        for n in range(count):
            sender.send_message(
                source_addr_ton=3,
                source_addr_npi=0,
                source_addr=senders[n % len(senders)],
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                destination_addr=f"1415555{n:04d}",
                short_message=f"smpp-{n}".encode(),
                registered_delivery=1,
            )
            sender.read_once()  # its submit_sm_resp
        deadline = time.monotonic() + 60
        while len(receipts) < count and time.monotonic() < deadline:
            receiver.read_once()
        return len(receipts)
    finally:
        for client in (sender, receiver):
            client.unbind()
            client.disconnect()


async def test_receipts_go_out_on_the_instance_that_holds_the_receiving_bind(
    fleet: Fleet, carrier: CarrierSimulator
) -> None:
    """CONTRACT §9: deliver_sm receipts go out on a receiving bind of the
    account, whichever instance holds it; here only the first instance holds
    one, and every submit_sm went to the second."""
    senders = _senders(6)
    partner = PARTNER.format(numbers=_numbers(senders, 50.0).replace('"acme"', '"partner"'))
    holder = await fleet.start("holder", partner)
    other = await fleet.start("other", partner)
    await _split(fleet)
    got = await asyncio.to_thread(_smpp_partner_run, other.smpp_port, holder.smpp_port, senders, 40)
    assert got == 40
