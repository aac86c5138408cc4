"""The lease table: which key's load is out, under what token, until when, and who waits
for it (Facebook's memcache leases, NSDI 2013 section 3.2.1).

The node owns a key, so it is the one place that orders the key's fill against its
writes. A miss of a read-through group gets a lease: a token, the right to load the key
and to fill it. While the lease is out, other readers wait here (never poll) and are
answered when it ends. It ends when its holder fills it or gives it back, when a write
or a flush of its key voids it (the holder's late fill is then refused: it may hold what
the write replaced), or when it lapses: its life, which the holder's router sets at its
source's timeout plus a margin, ran out with no fill (the holder died or hung). A lapsed
lease with readers waiting is handed to the first of them, which loads.

This module keeps the table and its bounds; storage_node/lease_ops.py answers the ops
and decides what each waiting reader is told when a lease ends. Leases live in memory
only: a snapshot holds none, and a node that restarts has none (a fill of a token from
before is refused, so its loader's value is simply not cached).
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Readers waiting at one node at most, and the bytes they hold (their keys, plus
# WAITER_BYTES each for the record and the request kept); past either a reader is refused
# with an error rather than kept. With singleflight in every router process at most one
# reader per key per process waits, so only a flood of distinct keys from many processes
# reaches this.
MAX_WAITING = 10_000
MAX_WAITING_BYTES = 16 << 20
WAITER_BYTES = 256
# The longest life a router may ask for a lease (its source's timeout and a margin).
MAX_LIFE = 3600.0


class Waiter:
    """A reader waiting at the node: where to answer it, and its LEASE_GET."""

    __slots__ = ("peer", "request", "size")

    def __init__(self, peer, request):
        self.peer = peer
        self.request = request
        self.size = len(request.key) + WAITER_BYTES


class Lease:
    __slots__ = ("token", "expires", "waiters", "timer")

    def __init__(self, token: int, expires: float):
        self.token = token
        self.expires = expires
        self.waiters: list[Waiter] = []
        self.timer = None  # the lapse, scheduled once a reader waits


class LeaseTable:
    """Leases by (group, key). ``call_later(delay, f, *args)`` (a reactor's) schedules a
    lapse while readers wait; ``on_lapse(group, key, waiters)`` is told of each lapse that
    left readers waiting, which it answers."""

    def __init__(self, clock: Callable[[], float], call_later=None, rng: random.Random | None = None,
                 max_waiting: int = MAX_WAITING, max_waiting_bytes: int = MAX_WAITING_BYTES):
        self.clock = clock
        self.call_later = call_later
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self.on_lapse: Callable[[str, bytes, list[Waiter]], None] = lambda group, key, waiters: None
        self.out: dict[tuple[str, bytes], Lease] = {}  # the leases out, by (group, key)
        self._waited: set[tuple[str, bytes]] = set()  # the leases readers wait on
        # Tokens start at a random place, so that a token from before a restart is not
        # taken for one given out since.
        self._token = (rng or random.SystemRandom()).getrandbits(62)
        self.waiting = self.waiting_bytes = 0
        self.granted = self.parked = self.handed_on = self.lapsed = 0
        self.fills_dropped = self.voided = self.refused = 0

    def __len__(self) -> int:
        return len(self.out)

    def current(self, group: str, key: bytes) -> Lease | None:
        """The key's lease, if one is out and alive. One past its life is ended here (its
        waiters, if its lapse has not come round yet, are handed on first)."""
        lease = self.out.get((group, key))
        if lease is None or lease.expires > self.clock():
            return lease
        self._lapse(group, key, lease)
        return self.out.get((group, key))

    def grant(self, group: str, key: bytes, life: float) -> int:
        """A new lease on ``key``, which has none out: its token."""
        self._token += 1
        self.out[group, key] = Lease(self._token, self.clock() + life)
        self.granted += 1
        return self._token

    def wait(self, group: str, key: bytes, waiter: Waiter, again: bool = False) -> bool:
        """``waiter`` waits for the end of the key's lease (which is out); False, keeping
        nothing, past the bounds. ``again``: a reader already counted, waiting on."""
        if (self.waiting >= self.max_waiting
                or self.waiting_bytes + waiter.size > self.max_waiting_bytes):
            self.refused += 1
            return False
        lease = self.out[group, key]
        lease.waiters.append(waiter)
        self._waited.add((group, key))
        self.waiting += 1
        self.waiting_bytes += waiter.size
        if not again:
            self.parked += 1
        if lease.timer is None and self.call_later is not None:
            delay = max(lease.expires - self.clock(), 0.0)
            lease.timer = self.call_later(delay, self._lapse_due, group, key, lease)
        return True

    def take(self, group: str, key: bytes, token: int) -> list[Waiter] | None:
        """End the key's lease if ``token`` is its token: its waiters. None when it is not
        (voided, lapsed, never given): the holder's fill is to be dropped."""
        lease = self.current(group, key)
        if lease is None or lease.token != token:
            return None
        return self._end(group, key, lease)

    def void(self, group: str, key: bytes) -> list[Waiter]:
        """A write of ``key``: its lease, if any, ends; its waiters."""
        lease = self.out.get((group, key))
        if lease is None:
            return []
        self.voided += 1
        return self._end(group, key, lease)

    def void_group(self, group: str) -> list[tuple[bytes, list[Waiter]]]:
        """A flush of ``group`` (or its removal): every lease of it ends."""
        ended = []
        for g, key in [k for k in self.out if k[0] == group]:
            self.voided += 1
            ended.append((key, self._end(g, key, self.out[g, key])))
        return ended

    def forget(self, peer) -> None:
        """``peer``'s connection is gone: its readers stop waiting (the leases stay)."""
        for place in list(self._waited):
            lease = self.out[place]
            kept = [w for w in lease.waiters if w.peer is not peer]
            for waiter in lease.waiters:
                if waiter.peer is peer:
                    self.waiting -= 1
                    self.waiting_bytes -= waiter.size
            lease.waiters = kept
            if not kept:
                self._waited.discard(place)

    def _end(self, group: str, key: bytes, lease: Lease) -> list[Waiter]:
        del self.out[group, key]
        if lease.timer is not None:
            if lease.timer.active():
                lease.timer.cancel()
            lease.timer = None
        waiters = lease.waiters
        if waiters:
            self._waited.discard((group, key))
            self.waiting -= len(waiters)
            self.waiting_bytes -= sum(w.size for w in waiters)
        return waiters

    def _lapse_due(self, group: str, key: bytes, lease: Lease) -> None:
        lease.timer = None
        if self.out.get((group, key)) is lease:
            self._lapse(group, key, lease)

    def _lapse(self, group: str, key: bytes, lease: Lease) -> None:
        self.lapsed += 1
        waiters = self._end(group, key, lease)
        if waiters:
            self.handed_on += 1
            self.on_lapse(group, key, waiters)
