"""Deadlines of a core's ttl'd entries in roughly deadline order, so that expired entries can
be found and dropped before a live one is evicted for their room.

Keys are queued by the order of their writes, one queue per band of ttls (a band is
the powers of two between two ttls: 300 s and 400 s share one), so within a band a later
write rarely has an earlier deadline: a group whose entries all get the group's ttl is
in deadline order exactly. Each key waits with the deadline it was written with; the
core checks, when a key comes due, that the entry is still there and really expired
(it may have been deleted or rewritten since). Every write is queued once and popped
once, so finding expired entries costs O(1) amortized.
"""

from __future__ import annotations

from collections import deque


class ExpiryIndex:
    def __init__(self):
        self._bands: dict[int, tuple[deque, deque]] = {}  # band -> (keys, deadlines)
        self.size = 0  # keys queued, including those whose entries have left since

    def add(self, key: bytes, deadline: float, ttl: float) -> None:
        band = int(ttl).bit_length()
        queue = self._bands.get(band)
        if queue is None:
            queue = self._bands[band] = (deque(), deque())
        queue[0].append(key)
        queue[1].append(deadline)
        self.size += 1

    def pop_due(self, now: float) -> bytes | None:
        """A key whose deadline has passed (taken off the index), or None if none has."""
        for band, (keys, deadlines) in self._bands.items():
            if deadlines[0] <= now:
                deadlines.popleft()
                key = keys.popleft()
                if not keys:
                    del self._bands[band]  # keeps this loop over live bands only
                self.size -= 1
                return key
        return None

    def prune(self, waiting) -> None:
        """Drop keys from the front of each band while ``waiting(key, deadline)`` is false:
        the keys of entries evicted since, which in a band's write order go first."""
        for band, (keys, deadlines) in list(self._bands.items()):
            while keys and not waiting(keys[0], deadlines[0]):
                keys.popleft()
                deadlines.popleft()
                self.size -= 1
            if not keys:
                del self._bands[band]

    def compact(self, waiting) -> None:
        """Keep only the keys for which ``waiting(key, deadline)`` is true: the core calls this
        once the keys of entries that left since outnumber its entries, so that they do not
        pile up (each costs O(1) to look at once, for the many writes that queued them)."""
        for band, (keys, deadlines) in list(self._bands.items()):
            kept = [(key, deadline) for key, deadline in zip(keys, deadlines) if waiting(key, deadline)]
            self.size -= len(keys) - len(kept)
            if kept:
                self._bands[band] = (deque(k for k, _ in kept), deque(d for _, d in kept))
            else:
                del self._bands[band]

    def clear(self) -> None:
        self._bands.clear()
        self.size = 0
