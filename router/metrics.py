"""Prometheus metrics, named as the contract fixes them (CONTRACT §5).

Module-level collectors in the default registry: one router per process.
Counters and histograms are updated from the event loop's thread only
(`router.loop_metrics`); gauges are prometheus_client's.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from prometheus_client import Gauge

from smsrouter.router.loop_metrics import LoopCounter as Counter
from smsrouter.router.loop_metrics import LoopHistogram as Histogram

_NS = "smsrouter"

# Latency buckets from 0.5 ms to 10 s: group commit answers in about a
# millisecond, carriers in tens of milliseconds, a sick one in seconds.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES_RECEIVED = Counter(
    "messages_received",
    "Messages accepted (committed) by ingress and account",
    ["ingress", "account"],
    namespace=_NS,
)
MESSAGES_REJECTED = Counter(
    "messages_rejected",
    "Messages refused at admission by ingress and reason",
    ["ingress", "reason"],
    namespace=_NS,
)
SUBMITTED = Counter(
    "messages_submitted",
    "Parts accepted by a carrier (submit_sm_resp ESME_ROK)",
    ["carrier"],
    namespace=_NS,
)
SUBMIT_ERRORS = Counter(
    "submit_errors",
    "Parts a carrier refused or lost, by status",
    ["carrier", "status"],
    namespace=_NS,
)
DLR_RECEIVED = Counter(
    "dlr_received",
    "Delivery receipts from carriers by status",
    ["carrier", "status"],
    namespace=_NS,
)
RECEIPTS_UNMATCHED = Counter(
    "receipts_unmatched",
    "Carrier receipts that matched no submitted part after the grace period",
    namespace=_NS,
)
QUEUE_DEPTH = Gauge("queue_depth", "Parts waiting in sender queues", namespace=_NS)
SENDER_QUEUES_ACTIVE = Gauge(
    "sender_queues_active", "Sender queues with work or a refilling bucket", namespace=_NS
)
THROTTLED = Counter(
    "throttled",
    "Requests refused or paused by a rate limit, by reason",
    ["reason"],
    namespace=_NS,
)
CARRIER_UP = Gauge("carrier_up", "Bound sessions per carrier", ["carrier"], namespace=_NS)
CARRIER_HEALTH = Gauge(
    "carrier_health",
    "Carrier health score from 0 (down) to 1 (healthy)",
    ["carrier"],
    namespace=_NS,
)
SUBMIT_LATENCY = Histogram(
    "submit_latency_seconds",
    "submit_sm to submit_sm_resp",
    ["carrier"],
    namespace=_NS,
    buckets=_LATENCY,
)
INGRESS_LATENCY = Histogram(
    "ingress_latency_seconds",
    "Request received to acknowledgement sent (after commit)",
    ["ingress"],
    namespace=_NS,
    buckets=_LATENCY,
)
CALLBACKS = Counter(
    "callbacks",
    "Outgoing notifications (webhooks, SMPP receipts) by result",
    ["result"],
    namespace=_NS,
)
ACCOUNT_ALARM = Gauge(
    "account_alarm",
    "1 while an account's day has passed its daily_alarm (CONTRACT §6)",
    ["account"],
    namespace=_NS,
)
CONTENT_FLAGGED = Counter(
    "content_flagged",
    "Messages let through that a flagging [[content_rules]] entry matched (CONTRACT §6)",
    ["rule"],
    namespace=_NS,
)
SENDER_FLAGGED = Gauge(
    "sender_flagged",
    "1 while a sender number is flagged or suspended by its opt-out rate (CONTRACT §6)",
    ["sender"],
    namespace=_NS,
)
ESME_BINDS = Gauge("esme_binds", "Partner ESME binds by account", ["account"], namespace=_NS)
COMMIT_LATENCY = Histogram(
    "commit_seconds",
    "Group commit: one transaction of batched writes, by writer",
    ["writer"],
    namespace=_NS,
    buckets=_LATENCY,
)
COMMIT_BATCH = Histogram(
    "commit_batch_operations",
    "Operations carried by one group commit, by writer",
    ["writer"],
    namespace=_NS,
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
MO_RECEIVED = Counter(
    "mo_received", "Mobile-originated messages (parts) from carriers", ["carrier"], namespace=_NS
)
SHARDS_OWNED = Gauge(
    "shards_owned",
    "Sender shards this instance holds a lease on (CONTRACT §9)",
    namespace=_NS,
)
OUTBOX_BACKLOG = Gauge(
    "outbox_backlog",
    "Outbox rows (webhooks, SMPP receipts) not yet done, by kind",
    ["kind"],
    namespace=_NS,
)
BUILD_INFO = Gauge(
    "build_info",
    "1, labelled with the package version and whether the router is compiled",
    ["version", "build"],
    namespace=_NS,
)
# CONTRACT §9: which process of several answered a scrape (`--workers N`
# share one port): its [instance] id and PID.
INSTANCE_INFO = Gauge(
    "instance_info",
    "1, labelled with this process's instance id and PID",
    ["instance", "pid"],
    namespace=_NS,
)
MO_UNROUTED = Counter("mo_unrouted", "MO to a number that no account owns (dropped)", namespace=_NS)


C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)


class Labelled(Protocol[C_co]):
    """A metric with labels: its `labels()` gives the child of some values."""

    def labels(self, *values: str) -> C_co: ...


class Children(Generic[C]):
    """A labelled metric's children, each looked up once.

    prometheus_client's `labels()` checks its arguments and takes a lock on
    every call (about 1.3 µs); a message asks for the same few children
    several times on its way. Label values here come from config and status
    words, so the cache stays as small as the metric's own set of children.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Labelled[C]) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], C] = {}

    def __call__(self, *values: str) -> C:
        try:
            return self._children[values]
        except KeyError:
            child = self._children[values] = self._metric.labels(*values)
            return child


received = Children(MESSAGES_RECEIVED)
rejected = Children(MESSAGES_REJECTED)
throttled = Children(THROTTLED)
submitted = Children(SUBMITTED)
submit_errors = Children(SUBMIT_ERRORS)
submit_latency = Children(SUBMIT_LATENCY)
carrier_health = Children(CARRIER_HEALTH)
dlr_received = Children(DLR_RECEIVED)
ingress_latency = Children(INGRESS_LATENCY)
callbacks = Children(CALLBACKS)
commit_latency = Children(COMMIT_LATENCY)
commit_batch = Children(COMMIT_BATCH)
content_flagged = Children(CONTENT_FLAGGED)
