"""A group's near cache: the entries of its hot keys, kept in the router process.

A get of a key the group's HotKeys (router/cluster/hotkeys.py) sampled in its window is
answered by its node as usual, and the node's entry (value, flags, CAS unique) is kept here for at
most ``ttl`` seconds; gets of it in that time are answered from here, with no node hop.
Entries cost their key, their entry and OVERHEAD bytes, and the oldest go first to keep
``nbytes`` within ``max_bytes`` (every entry lives the same ttl, so the oldest is also the
first to expire).

Writes through this router drop the key at once (``drop``), before they are sent and again
when they are answered; ``epoch`` counts those drops, and a node's answer is only kept
(``offer``) when no write was dropped between the get's send and its answer, so an answer
read before a write can never outlive it here. Writes through other routers are seen when
the entry expires: a read is at most ``ttl`` stale (README, Consistency).
"""

from __future__ import annotations

from shared.entry import bits, positive

# Bytes charged per entry besides its key and entry: the dict slot, the tuple, the
# float and the objects' headers, as CPython 3.11 allocates them (tests measure it).
OVERHEAD = 200


class NearCache:
    """Entries of hot keys by key, each until its expiry; at most ``max_bytes`` charged."""

    def __init__(self, spec, clock, admits):
        self.spec = spec  # router.config.topology.NearCacheSpec
        self.max_bytes = spec.max_bytes
        self.ttl = spec.ttl
        self.clock = clock  # seconds (reactor.seconds)
        # Which keys' answers are worth keeping (``key in admits``): the group's HotKeys.counts,
        # the keys sampled in its window.
        self.admits = admits
        self._entries: dict[bytes, tuple[bytes, float]] = {}  # key -> (entry, expires at)
        self.nbytes = 0
        self.epoch = 0  # drops so far: an answer is kept only under the epoch it was asked in
        self.hits = 0
        self.stored = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> bytes | None:
        """The entry kept for ``key`` (a node's entry, as GET_MANY answers it), or None."""
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= now:
            self._remove(key, found[0])
            return None
        self.hits += 1
        return found[0]

    def every(self, keys: list, now: float) -> list | None:
        """The entries of ``keys`` when every one is held, else None (looking no further
        than the first that is not). Not counted as hits: the caller counts what it answers."""
        entries = self._entries
        found = []
        for key in keys:
            held = entries.get(key)
            if held is None or held[1] <= now:
                return None
            found.append(held[0])
        return found

    def holds(self, key: bytes, now: float) -> bool:
        """Whether a get of ``key`` would be answered here now (not counted as a hit)."""
        found = self._entries.get(key)
        return found is not None and found[1] > now

    def offer(self, key: bytes, stored, epoch: int) -> None:
        """A node answered ``stored`` for ``key`` to a get asked under ``epoch``: kept when
        the key is admitted, the entry a plain value, and nothing was written since."""
        if epoch != self.epoch or key not in self.admits or not positive(stored) or bits(stored):
            return
        key, stored = bytes(key), bytes(stored)
        size = len(key) + len(stored) + OVERHEAD
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= len(key) + len(old[0]) + OVERHEAD
        entries = self._entries
        while self.nbytes + size > self.max_bytes:
            oldest = next(iter(entries))
            self._remove(oldest, entries[oldest][0])
            self.evicted += 1
        entries[key] = (stored, self.clock() + self.ttl)
        self.nbytes += size
        self.stored += 1

    def drop(self, key: bytes) -> None:
        """``key`` is being written (or was): forget it, and any answer now in flight."""
        self.epoch += 1
        found = self._entries.get(key)
        if found is not None:
            self._remove(key, found[0])

    def clear(self) -> None:
        """Every key is being written (flush_all, restore)."""
        self.epoch += 1
        self._entries.clear()
        self.nbytes = 0

    def _remove(self, key: bytes, stored: bytes) -> None:
        del self._entries[key]
        self.nbytes -= len(key) + len(stored) + OVERHEAD
