"""The default core: S3-FIFO's queues, with the small queue's share set by ghost hits as ARC
sets its lists' sizes. O(1) per operation.

S3-FIFO (Yang et al., SOSP'23): a new entry goes into a small FIFO queue; when it reaches
the queue's head it moves to the main queue if it was read meanwhile, else it is evicted
and its key kept as a ghost. The main queue is a CLOCK with a 2-bit count per entry
(each read adds one, up to 3): at the head, an entry with a count goes back to the tail
with one less, one without is evicted. A key written again while it is a ghost goes
straight to main. One-hit wonders thus leave fast, scans pass through the small queue,
and an entry proven once is kept for as long as it keeps being read.

S3-FIFO's weak spot is the small queue's fixed 10%: a workload whose entries come back
after a while (a recency-heavy one) needs a longer trial, a skewed one a shorter. So
the share adapts as in ARC (Megiddo & Modha, FAST'03): a write of a ghost of the small
queue means that queue was too short for it, and moves the target up by one entry's
worth (the mean entry size, so that one large value does not swing it); a ghost of the
main queue moves it down. As in ARC, the step is weighted by the ratio of the ghosts'
numbers when the other one is larger. The ghosts remember the last evictions, from
either queue, as many as the cache holds entries (storage_node/cores/ghost.py).

A set always stores (a written value is readable at once), so a core cannot refuse an
entry as an admission filter does. Instead an entry larger than the small queue's share
waits at that queue's head, ghost or not: it is the first to go, and the next such entry
replaces it, rather than one large value of unknown worth flushing many small proven
ones; read before its turn, it moves to main like any other.

Expired entries are dropped before any live one is evicted for room: an expiry index
(storage_node/cores/expiry.py) keeps the ttl'd keys in deadline order.

Layout, for speed and memory in pure Python: an entry's state is which dict holds it,
never a per-entry object. ``_fresh`` and ``_read`` hold the small queue (not read / read
since written), ``_counts[c]`` the main queue's entries of count c, and a hit on an
entry at count 3 (the hot ones) is one dict lookup. The queues' order lives in two
deques of keys. A key that leaves out of turn (delete, expiry, rewrite) stays in its
deque, and ``_stale`` counts such leftovers per queue, so the head skips them: a stale
place always precedes the key's live one in the same deque.

This module is the reference. Its compiled twin, storage_node/cores/_adaptive.c, does the
same steps in the same order in C (3 to 20 times the speed, a quarter less memory per
entry), and storage_node.cores.CORES["adaptive"] is that one when it is built;
tests/storage_node/cores/test_adaptive_twins.py holds the two to the same state after every operation. A
change of policy here is made there too.
"""

from __future__ import annotations

import time
from collections import deque

from storage_node.cores.adaptive_evict import AdaptiveEviction
from storage_node.cores.adaptive_walk import MAX_COUNT, AdaptiveWalk
from storage_node.cores.base import CoreBase, Expiring
from storage_node.cores.expiry import ExpiryIndex
from storage_node.cores.ghost import MAIN, SMALL, Ghosts

START_SHARE = 0.1  # the small queue's share before any ghost hit, as in S3-FIFO
# The share stays within these bounds so that neither queue vanishes for good.
MIN_SHARE, MAX_SHARE = 0.001, 0.99


class AdaptiveCore(AdaptiveEviction, AdaptiveWalk, CoreBase):
    """S3-FIFO with an ARC-adapted small queue; see the module's docstring.

    The hot paths (a get, a write of a new key, evicting from the small queue) are written
    out inline rather than through helpers: in CPython each call costs as much as a dict
    lookup, and these paths are a handful of lookups long.
    """

    name = "adaptive"
    ENTRY_OVERHEAD = 232
    TTL_OVERHEAD = 96

    def __init__(self, max_bytes: int, clock=time.monotonic, entry_overhead: int = 0, hash=hash):
        super().__init__(max_bytes, clock, entry_overhead)
        self._ghosts = Ghosts(hash)
        self._expiry = ExpiryIndex()
        self.clear()

    def __len__(self) -> int:
        return self._entries

    # --- reads ---------------------------------------------------------------------------

    def _peek(self, key: bytes):
        for level in (*reversed(self._counts), self._read, self._fresh):
            entry = level.get(key)
            if entry is not None:
                return entry
        return None

    def get(self, key: bytes) -> bytes | None:
        entry = self._hot.get(key)
        if entry is None:
            return self._get_cold(key)
        # _live(), written out: this is the path of most hits.
        if type(entry) is Expiring:
            if self._clock() >= entry:
                self._drop(key, self._hot, MAIN)
                return None
            return entry.value
        return entry

    def _get_cold(self, key: bytes) -> bytes | None:
        """A get of an entry below the top count (it climbs one count) or not stored.
        Written out, lookup by lookup: a miss reaches the end, and misses are many."""
        counts = self._counts
        entry = counts[2].get(key)
        if entry is not None:
            return self._climb(key, entry, 2)
        entry = counts[1].get(key)
        if entry is not None:
            return self._climb(key, entry, 1)
        entry = counts[0].get(key)
        if entry is not None:
            return self._climb(key, entry, 0)
        entry = self._read.get(key)
        if entry is not None:
            return self._live(key, entry, self._read, SMALL)
        entry = self._fresh.get(key)
        if entry is None:
            return None
        if type(entry) is Expiring and self._clock() >= entry:
            self._drop(key, self._fresh, SMALL)
            return None
        del self._fresh[key]
        self._read[key] = entry
        return entry.value if type(entry) is Expiring else entry

    def _live(self, key: bytes, entry: bytes | Expiring, level: dict, queue: int) -> bytes | None:
        """The value of an entry just found in ``level``, or None if it expired (dropped)."""
        if type(entry) is Expiring:
            if self._clock() >= entry:
                self._drop(key, level, queue)
                return None
            return entry.value
        return entry

    def _climb(self, key: bytes, entry: bytes | Expiring, count: int) -> bytes | None:
        """A hit on a main entry below the top count: one count up."""
        level = self._counts[count]
        if type(entry) is Expiring and self._clock() >= entry:
            self._drop(key, level, MAIN)
            return None
        del level[key]
        self._counts[count + 1][key] = entry
        return entry.value if type(entry) is Expiring else entry

    # --- writes --------------------------------------------------------------------------

    def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        counts = self._counts
        if (key in self._hot or key in counts[2] or key in counts[1] or key in counts[0]
                or key in self._read or key in self._fresh):
            queue, count = self._take(key) or (None, 0)
        else:
            queue, count = None, 0
        if ttl is not None and ttl < 0:
            return
        if ttl:
            entry = Expiring(self._clock() + ttl)
            entry.value = value
            size = len(key) + len(value) + self.entry_overhead + self._ttl_overhead
        else:
            entry = value
            size = len(key) + len(value) + self.entry_overhead
        if size > self.max_bytes:
            self._refuse_oversized(key, value, ttl)
        if queue is None:
            ghost = self._ghosts.pop(key)
            if ghost is None:
                queue = SMALL
            else:
                queue = self._adapt(ghost, size)
        if self.nbytes + size > self.max_bytes:
            self._make_room(self.max_bytes - size)
        if queue == SMALL:
            self._small_bytes += size
            if count:
                self._read[key] = entry
                self._small_order.append(key)
            else:
                self._fresh[key] = entry
                if size > self._target:
                    self._small_order.appendleft(key)  # unproven and large: first to go
                else:
                    self._small_order.append(key)
        else:
            counts[count][key] = entry
            self._main_order.append(key)
        self.nbytes += size
        self._entries += 1
        if ttl:
            self._note_deadline(key, entry, ttl)

    def delete(self, key: bytes) -> bool:
        return self._take(key) is not None

    def clear(self) -> None:
        self._fresh: dict[bytes, bytes | Expiring] = {}
        self._read: dict[bytes, bytes | Expiring] = {}
        self._counts: list[dict[bytes, bytes | Expiring]] = [{} for _ in range(MAX_COUNT + 1)]
        self._hot = self._counts[MAX_COUNT]
        self._small_order: deque[bytes] = deque()
        self._main_order: deque[bytes] = deque()
        self._stale: tuple[dict[bytes, int], dict[bytes, int]] = ({}, {})  # [SMALL], [MAIN]
        self._small_bytes = 0
        self._entries = 0
        self._target = self.max_bytes * START_SHARE
        self._until_upkeep = 0
        self._ghosts.clear()
        self._expiry.clear()
        self.nbytes = 0
        self._generation += 1

    def _adapt(self, ghost: int, size: int) -> int:
        """Move the small queue's target on a write of a ghost; the queue the entry goes to."""
        # As ARC, in entries: a step of one entry (the mean size, so that a large value
        # does not swing the share), times the other ghost's weight when it is the larger.
        step = self.nbytes / self._entries if self._entries else size
        small, main = self._ghosts.population()
        if ghost == SMALL:  # a longer small queue would have kept it until this write
            step *= max(1.0, main / (small + 1))
            self._target = min(self._target + step, self.max_bytes * MAX_SHARE)
        else:
            step *= max(1.0, small / (main + 1))
            self._target = max(self._target - step, self.max_bytes * MIN_SHARE)
        # A value too big for the small queue proves its worth there, read during a trial
        # at the head, however often it came back: in main it would push out many.
        return SMALL if size > self._target else MAIN

    def _take(self, key: bytes) -> tuple[int, int] | None:
        """Remove ``key``; where it was, as (queue, count or 1 if read), if it was live."""
        counts = self._counts
        for count in (3, 2, 1, 0):
            level = counts[count]
            if key in level:
                return (MAIN, count) if self._drop(key, level, MAIN) else None
        for read, level in ((1, self._read), (0, self._fresh)):
            if key in level:
                return (SMALL, read) if self._drop(key, level, SMALL) else None
        return None

    def _drop(self, key: bytes, level: dict, queue: int) -> bool:
        """Remove a stored entry out of its queue's turn; True if it was live."""
        entry = level.pop(key)
        stale = self._stale[queue]
        stale[key] = stale.get(key, 0) + 1
        self._entries -= 1
        if queue == SMALL:
            self._small_bytes -= self._size(key, entry)
        return self._uncharge(key, entry)
