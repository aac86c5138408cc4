"""The adaptive core's walk and restore (storage_node/cores/walk.py): its entries listed
coldest first with their state, and put back in it. A mixin of AdaptiveCore
(storage_node/cores/adaptive.py), whose attributes it reads; the compiled twin does the
same in storage_node/cores/_adaptive.c (core_walk, restore_entry)."""

from __future__ import annotations

from storage_node.cores.base import Expiring, OrderWalk
from storage_node.cores.ghost import MAIN, SMALL

MAX_COUNT = 3  # the main queue's CLOCK counts go 0..MAX_COUNT (adaptive.py)
# An entry's rank in a walk: which of the core's dicts holds it.
FRESH, READ, MAIN0 = 0, 1, 2  # main with count c: MAIN0 + c


class AdaptiveWalk:
    def walk(self) -> OrderWalk:
        """The small queue head to tail, then the main queue's; ranks FRESH, READ or
        MAIN0 + count. The start copies both queues' keys (C speed: about 6 ms a million)
        and their stale counts, which skip the stale places as the queues' heads do."""
        return OrderWalk(self, [list(self._small_order), list(self._main_order)],
                         [dict(self._stale[SMALL]), dict(self._stale[MAIN])], self._rank_of)

    def _rank_of(self, key: bytes):
        counts = self._counts
        for rank, level in ((5, counts[3]), (4, counts[2]), (3, counts[1]), (2, counts[0]),
                            (READ, self._read), (FRESH, self._fresh)):
            entry = level.get(key)
            if entry is not None:
                return entry, rank
        return None

    def restore(self, key: bytes, value: bytes, ttl: float | None, rank: int | None) -> None:
        """Store at the tail of the queue ``rank`` names, in that state (None: MAIN0, an
        entry proven elsewhere); no ghost is consulted and the target does not move."""
        if rank is None:
            rank = MAIN0
        if type(rank) is not int or not FRESH <= rank <= MAIN0 + MAX_COUNT:
            raise ValueError(f"adaptive: rank {rank!r} is not a state 0..{MAIN0 + MAX_COUNT}")
        self._take(key)
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
        if self.nbytes + size > self.max_bytes:
            self._make_room(self.max_bytes - size)
        if rank < MAIN0:
            self._small_bytes += size
            (self._read if rank == READ else self._fresh)[key] = entry
            self._small_order.append(key)
        else:
            self._counts[rank - MAIN0][key] = entry
            self._main_order.append(key)
        self.nbytes += size
        self._entries += 1
        if ttl:
            self._note_deadline(key, entry, ttl)
