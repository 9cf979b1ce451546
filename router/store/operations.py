"""The operations the writer commits, and the records it hands back.

Each operation is one change to apply in a group commit (`group_commit`);
`writes` holds the SQL of each kind. Several are made for every message:
their __init__ is written out so that mypyc compiles it (setup.py,
COMPILED_INITS).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from smsrouter.router.messages import Message, Status


@dataclass(frozen=True, slots=True)
class Unpaid:
    """InsertMessage's result when some of its messages could not be stored
    (CONTRACT §6): the balance could not pay for them ("Credit"),
    `limited`, their account's day had reached its daily_limit ("Daily
    thresholds"), or `throttled`, they would take the account over its
    max_tps over all instances ("Throughput plan"). Those were not stored,
    the others were."""

    message_ids: frozenset[uuid.UUID]  # every one not stored
    limited: frozenset[uuid.UUID] = frozenset()  # of them, those past the daily limit
    throttled: frozenset[uuid.UUID] = frozenset()  # those over max_tps (all instances)


@dataclass(slots=True)
class IdempotentAnswer:
    """What a POST /v1/messages with an Idempotency-Key answered (CONTRACT
    §3), stored with its messages: a repeat answers it again."""

    account_id: str
    key: str
    request_hash: bytes  # SHA-256 of the request body
    status: int
    body: bytes
    # The answer again when some recipients could not be stored (refused
    # `insufficient_credit` or `limit_reached`, CONTRACT §6): status and
    # body given which. Told inside the commit, so that the answer stored
    # with the key is the one the request gets.
    unpaid: Callable[[Unpaid], tuple[int, bytes]] | None = field(default=None, compare=False)
    # The body is the 202 of the request's one message and is made again
    # from that message's row (`queries.AcceptedMessage`): not stored with
    # it, ~140 bytes fewer to write for nearly every keyed request.
    from_message: bool = False

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS): one
    # is made per request that sends a key.
    def __init__(
        self,
        account_id: str,
        key: str,
        request_hash: bytes,
        status: int,
        body: bytes,
        unpaid: Callable[[Unpaid], tuple[int, bytes]] | None = None,
        from_message: bool = False,
    ) -> None:
        self.account_id = account_id
        self.key = key
        self.request_hash = request_hash
        self.status = status
        self.body = body
        self.unpaid = unpaid
        self.from_message = from_message


# InsertMessage's result when its Idempotency-Key was taken by another
# request: none of its messages was stored.
KEY_TAKEN = "key_taken"


@dataclass(slots=True)
class InsertMessage:
    """New messages; one operation is one transaction, so a batch request's
    recipients are stored all together or not at all. With an `answer`,
    they are stored only if its key is free, and take it; else the result
    is KEY_TAKEN."""

    messages: Sequence[Message]
    answer: IdempotentAnswer | None = None

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        messages: Sequence[Message],
        answer: IdempotentAnswer | None = None,
    ) -> None:
        self.messages = messages
        self.answer = answer


@dataclass(slots=True)
class PartSent:
    """A carrier accepted one part (submit_sm_resp with ESME_ROK)."""

    message_id: uuid.UUID
    part: int
    carrier: str
    carrier_message_id: str
    at: datetime
    # The sender's shard and the epoch of this instance's lease on it, the
    # fencing token (CONTRACT §9); shard -1 when nothing fences the write.
    shard: int = -1
    epoch: int = 0

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        message_id: uuid.UUID,
        part: int,
        carrier: str,
        carrier_message_id: str,
        at: datetime,
        shard: int = -1,
        epoch: int = 0,
    ) -> None:
        self.message_id = message_id
        self.part = part
        self.carrier = carrier
        self.carrier_message_id = carrier_message_id
        self.at = at
        self.shard = shard
        self.epoch = epoch


# What a PartSent's write answers when its lease was taken over meanwhile:
# the part is recorded all the same (its receipt must match), and the
# instance stops sending until a renewal tells it which shards it lost.
FENCED = "fenced"


@dataclass(slots=True)
class MessageEnded:
    """A message ends without a receipt: rejected, failed or expired here."""

    message_id: uuid.UUID
    status: Status
    error_code: str
    at: datetime
    carrier: str | None = None


@dataclass(slots=True)
class CarrierReceipt:
    """A carrier's delivery receipt for one submitted part."""

    carrier: str
    carrier_message_id: str
    status: Status
    error_code: str | None
    at: datetime

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        carrier: str,
        carrier_message_id: str,
        status: Status,
        error_code: str | None,
        at: datetime,
    ) -> None:
        self.carrier = carrier
        self.carrier_message_id = carrier_message_id
        self.status = status
        self.error_code = error_code
        self.at = at


@dataclass(slots=True)
class MessageEvent:
    """A step of a message's history beyond the standard ones (a failover)."""

    message_id: uuid.UUID
    at: datetime
    status: str
    detail: str


@dataclass(slots=True)
class NewNotification:
    """An outbox row that no message status produced (an inbound MO)."""

    notification_kind: str
    account_id: str
    target: str | None
    payload: bytes
    expires_at: datetime
    message_id: uuid.UUID | None = None


@dataclass(slots=True)
class OutboxDone:
    """A notification is finished: delivered, or given up with `error`."""

    outbox_id: int
    at: datetime
    error: str | None = None

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        outbox_id: int,
        at: datetime,
        error: str | None = None,
    ) -> None:
        self.outbox_id = outbox_id
        self.at = at
        self.error = error


@dataclass(slots=True)
class OutboxRetry:
    outbox_id: int
    next_attempt_at: datetime
    error: str


@dataclass(slots=True)
class OutboxKept:
    """A notification held by its batch alone (migration 0018) that its
    first try did not deliver: written as an outbox row of its own, under
    the id it was sent with, as it stands (attempts, next attempt, last
    error; `done_at` when it was given up)."""

    notification: Notification
    error: str | None = None
    done_at: datetime | None = None


@dataclass(slots=True)
class BatchSettled:
    """Every notification of a batch was delivered or kept in an outbox row
    of its own: the batch's row goes."""

    batch: int


@dataclass(frozen=True, slots=True)
class OptOutChange:
    """A subscriber opted out of an account, or back in (CONTRACT §6
    "Opt-out"). `source` is who made the change: 'subscriber' (a STOP or
    START by MO), 'account' (the customer's API) or 'import' (an
    operator). Opting back in removes only an entry of the same source,
    except a subscriber's START, which lifts any. The result is True if
    the list changed."""

    account_id: str
    recipient: str  # E.164 with '+'
    opted_out: bool
    source: str


@dataclass(frozen=True, slots=True)
class RetryHeldReceipts:
    """Try the held receipts again (migration 0015: receipts that matched no
    sent part when they came): the oldest `limit` of them, those held past
    `grace_seconds` given up first. Result: HeldReceiptsTried."""

    limit: int
    grace_seconds: float


@dataclass(frozen=True, slots=True)
class HeldReceiptsTried:
    """What a RetryHeldReceipts did: the messages that ended, how many held
    receipts matched their parts, how many were given up."""

    finished: tuple[Finished, ...]
    matched: int
    given_up: int


Operation = (
    InsertMessage
    | PartSent
    | MessageEnded
    | CarrierReceipt
    | RetryHeldReceipts
    | MessageEvent
    | NewNotification
    | OutboxDone
    | OutboxRetry
    | OutboxKept
    | BatchSettled
    | OptOutChange
)


@dataclass(slots=True)
class Notification:
    """A row of the outbox: something that must leave the router."""

    id: int
    kind: str  # 'webhook' | 'smpp_receipt'
    account_id: str
    message_id: uuid.UUID | None
    target: str | None
    payload: bytes
    attempts: int
    next_attempt_at: datetime
    expires_at: datetime
    # The notification batch (migration 0018) that holds it while it has no
    # outbox row of its own; 0 once it has one.
    batch: int = 0

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        id: int,
        kind: str,
        account_id: str,
        message_id: uuid.UUID | None,
        target: str | None,
        payload: bytes,
        attempts: int,
        next_attempt_at: datetime,
        expires_at: datetime,
        batch: int = 0,
    ) -> None:
        self.id = id
        self.kind = kind
        self.account_id = account_id
        self.message_id = message_id
        self.target = target
        self.payload = payload
        self.attempts = attempts
        self.next_attempt_at = next_attempt_at
        self.expires_at = expires_at
        self.batch = batch


@dataclass(slots=True)
class Finished:
    """A message that ended in this commit, and how; with what is owed to
    the outside about it (store.notices): its DLR webhook's body when it
    has a callback URL, its receipt's when an ESME asked for one."""

    message_id: uuid.UUID
    status: Status
    account_id: str = ""
    done_at: datetime | None = None
    callback_url: str | None = None
    webhook: bytes | None = None
    receipt: bytes | None = None

    # Written out so that mypyc compiles it (setup.py: COMPILED_INITS).
    def __init__(
        self,
        message_id: uuid.UUID,
        status: Status,
        account_id: str = "",
        done_at: datetime | None = None,
        callback_url: str | None = None,
        webhook: bytes | None = None,
        receipt: bytes | None = None,
    ) -> None:
        self.message_id = message_id
        self.status = status
        self.account_id = account_id
        self.done_at = done_at
        self.callback_url = callback_url
        self.webhook = webhook
        self.receipt = receipt
