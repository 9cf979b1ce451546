"""PostgreSQL, the system of record.

- `operations`: the operations the writer commits and the records it hands back;
- `group_commit`: the writer (`GroupCommit`), its queue, batching, retries and health;
- `listeners`: who hears what a group commit did (`CommitListener`);
- `writes`: the batch SQL of each operation, a flush in one transaction;
- `notices`: what an ended message owes the outside, and its batches;
- `queries`: the reads; `balances`: the accounts' credit rows;
- `schema`: the column and status lists the SQL spells.

The router's modules import from those; the names are also here, as one
namespace for tests and tools.
"""

from smsrouter.router.store.balances import balance
from smsrouter.router.store.group_commit import (
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
    GroupCommit,
    Settled,
    StoreError,
    Waiter,
)
from smsrouter.router.store.listeners import CommitListener, CommitListeners
from smsrouter.router.store.operations import (
    BatchSettled,
    CarrierReceipt,
    Finished,
    InsertMessage,
    MessageEnded,
    MessageEvent,
    NewNotification,
    Notification,
    Operation,
    OptOutChange,
    OutboxDone,
    OutboxKept,
    OutboxRetry,
    PartSent,
)
from smsrouter.router.store.queries import (
    get_message,
    pending_messages,
    pending_notifications,
    stored_message_ids,
)
from smsrouter.router.store.writes import final_of_parts

__all__ = [
    "RETRY_FIRST_SECONDS",
    "RETRY_MAX_SECONDS",
    "BatchSettled",
    "CarrierReceipt",
    "CommitListener",
    "CommitListeners",
    "Finished",
    "GroupCommit",
    "InsertMessage",
    "MessageEnded",
    "MessageEvent",
    "NewNotification",
    "Notification",
    "Operation",
    "OptOutChange",
    "OutboxDone",
    "OutboxKept",
    "OutboxRetry",
    "PartSent",
    "Settled",
    "StoreError",
    "Waiter",
    "balance",
    "final_of_parts",
    "get_message",
    "pending_messages",
    "pending_notifications",
    "stored_message_ids",
]
