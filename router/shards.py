"""Sender shards and who owns them (CONTRACT §9).

Sender queues are split into SHARDS shards by a stable hash of the sender
number; each shard is owned by one instance through a lease row
(`store/leases.py`), and only the owner releases its senders' messages to
carriers, so every per-sender bucket lives in one process. This module
holds the decisions, with the clock passed in: which shard a sender is in,
how many shards an instance should hold, and whether this instance may
send right now.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from smsrouter.router.senders import canonical_sender, sender_of_key

# Fixed for the life of a database: changing it would move senders between
# shards under their owners. 1,024 spreads well over tens of instances and
# keeps a renewal (one UPDATE of the rows an instance holds) small.
SHARDS = 1024

# A lease is trusted locally until this long before it could expire in the
# database: the renewal's own round trip and a little clock drift between
# the two readings of time.
LEASE_MARGIN = 1.0


def _shard(canonical: str) -> int:
    # BLAKE2b, not CRC-32: CRC-32 is linear, and the low bits of
    # consecutive numbers (a block of short codes, a range of long codes)
    # landed in a few neighbouring shards, so one instance got them all.
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SHARDS


def shard_of(sender: str) -> int:
    """The shard of a sender number, the same in every process, whichever
    way it is spelled ("14155550101" and "+14155550101" are one)."""
    return _shard(canonical_sender(sender))


@functools.lru_cache(maxsize=100_000)
def shard_of_key(key: str) -> int:
    """The shard of a scheduler key (`SenderRates.queue_key`: the canonical
    sender, perhaps with a country): every key of one sender in one shard."""
    return _shard(sender_of_key(key))


def fair_share(live_instances: int, shards: int = SHARDS) -> int:
    """Shards each of `live_instances` should hold (rounded up, so that
    together they cover every shard)."""
    return math.ceil(shards / max(1, live_instances))


@dataclass(frozen=True, slots=True)
class LeasePlan:
    claim: tuple[int, ...]
    release: tuple[int, ...]


def plan_leases(
    held: Iterable[int], claimable: Sequence[int], live_instances: int, shards: int = SHARDS
) -> LeasePlan:
    """What to claim and what to hand back this round.

    An instance below its fair share claims free or expired shards up to
    it; one above hands back its highest-numbered surplus, so that a new
    instance gets work without waiting for anyone to die. Shards that no one
    else can take (nobody else is live) stay: an instance alone holds all.
    """
    held = sorted(held)
    fair = fair_share(live_instances, shards)
    if len(held) < fair:
        mine = set(held)
        wanted = [s for s in claimable if s not in mine][: fair - len(held)]
        return LeasePlan(tuple(wanted), ())
    if len(held) > fair and live_instances > 1:
        return LeasePlan((), tuple(held[fair:]))
    return LeasePlan((), ())


class Ownership:
    """The shards this instance holds, with their fencing epochs, and until
    when (on the local monotonic clock) its leases may be trusted.

    Trust runs from the start of the renewal that confirmed the leases, so a
    process paused past its lease (a GC pause, SIGSTOP, a stopped VM) finds
    on waking that it may not send, before any renewal tells it so.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.epochs: dict[int, int] = {}
        # Shards being handed back: nothing new leaves for them.
        self.leaving: set[int] = set()
        self.valid_until = -math.inf
        # Per shard, the monotonic time from which its previous owner sent
        # nothing: a bucket of its senders starts empty at that time.
        self._quiet: dict[int, float] = {}
        # Owner of every shard with no lease at all: a router that shares
        # its database with no one (the engine's default, and its tests).
        self.everything = False

    @classmethod
    def sole(cls, clock: Callable[[], float]) -> Ownership:
        owner = cls(clock)
        owner.everything = True
        owner.valid_until = math.inf
        return owner

    def owns(self, shard: int) -> bool:
        return self.everything or (shard in self.epochs and shard not in self.leaving)

    def trusted(self) -> bool:
        """Whether the leases may be trusted now."""
        return self._clock() < self.valid_until

    def may_send(self, shard: int) -> bool:
        return self.owns(shard) and self._clock() < self.valid_until

    def fence(self, shard: int) -> tuple[int, int]:
        """(shard, epoch) to record a sent part under; (-1, 0) unfenced."""
        if self.everything:
            return -1, 0
        return shard, self.epochs.get(shard, 0)

    def confirmed(self, started: float, lease_seconds: float) -> None:
        """A renewal that started at `started` (monotonic) confirmed every
        lease still held."""
        self.valid_until = started + lease_seconds - LEASE_MARGIN

    def distrust(self) -> None:
        """Something said a lease was lost (a fenced write): stop sending
        until a renewal says which."""
        self.valid_until = -math.inf

    def gained(self, shard: int, epoch: int, quiet_since: float) -> None:
        self.epochs[shard] = epoch
        self.leaving.discard(shard)
        if quiet_since > -math.inf:
            self._quiet[shard] = quiet_since
        else:
            self._quiet.pop(shard, None)

    def lost(self, shard: int) -> None:
        self.epochs.pop(shard, None)
        self.leaving.discard(shard)
        self._quiet.pop(shard, None)

    def empty_at(self, key: str) -> float:
        """When a new bucket of `key` was last empty, as far as this
        instance knows: the time its shard's previous owner went quiet
        (-inf when it has none), so that a takeover never starts a sender
        with a full bucket its previous owner had just spent."""
        if not self._quiet:
            return -math.inf
        return self._quiet.get(shard_of_key(key), -math.inf)

    def forget_quiet(self, before: float) -> None:
        """Drop quiet times older than `before` (every bucket started since
        is full anyway)."""
        for shard in [s for s, at in self._quiet.items() if at < before]:
            del self._quiet[shard]
