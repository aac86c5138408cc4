"""The adaptive core's eviction and expiry (storage_node/cores/adaptive.py's docstring tells
the policy): make room by the small queue's head (to main if read, else to the ghosts) or
the main queue's CLOCK head, expired entries first, and the upkeep of the state dicts. A
mixin of AdaptiveCore, whose attributes it reads and writes; the compiled twin does the
same steps in storage_node/cores/_adaptive.c."""

from __future__ import annotations

from storage_node.cores.adaptive_walk import MAX_COUNT
from storage_node.cores.base import DICT_BYTES, Expiring, oversized
from storage_node.cores.ghost import MAIN, SMALL


class AdaptiveEviction:
    """Room for a write, expired entries first; see the module's docstring."""

    # --- eviction ------------------------------------------------------------------------

    def _make_room(self, budget: int) -> None:
        """Evict until at most ``budget`` bytes are charged; expired entries go first."""
        if self._expiry.size:
            self._drop_expired(budget)
            if self._expiry.size > self._entries:
                # Entries evicted in write order leave their keys at the front of the
                # index: drop those, not waiting for their deadlines (or a compaction).
                self._expiry.prune(self._waits_for)
        self._until_upkeep -= 1
        if self._until_upkeep < 0:
            self._upkeep()
        small_order, fresh, read = self._small_order, self._fresh, self._read
        stale, overhead = self._stale[SMALL], self.entry_overhead
        while self.nbytes > budget:
            if self._small_bytes <= self._target and self._small_bytes != self.nbytes:
                self._evict_main()
                continue
            # The small queue's head: to main if it was read, else evicted to the ghosts.
            key = small_order.popleft()
            if stale and key in stale:
                self._skip(stale, key)
                continue
            entry = fresh.pop(key, None)
            promote = entry is None
            if promote:
                entry = read.pop(key)
            if type(entry) is Expiring:
                size = len(key) + len(entry.value) + overhead + self._ttl_overhead
                expired = self._clock() >= entry
            else:
                size = len(key) + len(entry) + overhead
                expired = False
            self._small_bytes -= size
            if expired:
                self.nbytes -= size
                self._entries -= 1
                self.expirations += 1
            elif promote:
                self._counts[0][key] = entry
                self._main_order.append(key)
            else:
                self.nbytes -= size
                self._entries -= 1
                self.evictions += 1
                self._ghosts.add(key, SMALL)

    def _evict_main(self) -> None:
        """The main queue's head: back to the tail one count lower, or evicted."""
        key = self._main_order.popleft()
        stale = self._stale[MAIN]
        if stale and key in stale:
            self._skip(stale, key)
            return
        counts = self._counts
        for count in range(MAX_COUNT + 1):  # the head has mostly been passed over: 0 first
            level = counts[count]
            entry = level.pop(key, None)
            if entry is not None:
                break
        if type(entry) is Expiring and self._clock() >= entry:
            self._entries -= 1
            self._uncharge(key, entry)
        elif count:
            counts[count - 1][key] = entry
            self._main_order.append(key)
        else:
            self._entries -= 1
            self._uncharge(key, entry)
            self.evictions += 1
            self._ghosts.add(key, MAIN)

    @staticmethod
    def _skip(stale: dict[bytes, int], key: bytes) -> None:
        if stale[key] == 1:
            del stale[key]
        else:
            stale[key] -= 1

    def _upkeep(self) -> None:
        """Every sixteenth of the entries' worth of evictions: fit the ghosts' window to the
        entry count, and give back the tables of state dicts that emptied out."""
        entries = self._entries
        self._until_upkeep = entries // 16
        self._ghosts.fit(entries)
        # (The list of count dicts is changed in place: callers up the stack may hold it.)
        if oversized(self._fresh, DICT_BYTES):
            self._fresh = dict(self._fresh)
        if oversized(self._read, DICT_BYTES):
            self._read = dict(self._read)
        counts = self._counts
        for count, level in enumerate(counts):
            if oversized(level, DICT_BYTES):
                counts[count] = dict(level)
        self._hot = counts[MAX_COUNT]

    # --- expiry --------------------------------------------------------------------------

    def _locate(self, key: bytes) -> tuple[dict, int] | None:
        """The dict holding ``key`` and its queue."""
        for level in self._counts:
            if key in level:
                return level, MAIN
        for level in (self._read, self._fresh):
            if key in level:
                return level, SMALL
        return None

    def _note_deadline(self, key: bytes, entry: Expiring, ttl: float) -> None:
        expiry = self._expiry
        expiry.add(key, float(entry), ttl)
        if expiry.size > 2 * self._entries + 64:
            expiry.compact(self._waits_for)

    def _waits_for(self, key: bytes, deadline: float) -> bool:
        found = self._locate(key)
        return found is not None and found[0][key] == deadline

    def _drop_expired(self, budget: int) -> None:
        """Drop entries whose deadline has passed until ``budget`` is met or none is due."""
        now = self._clock()
        expiry = self._expiry
        while self.nbytes > budget:
            key = expiry.pop_due(now)
            if key is None:
                return
            found = self._locate(key)
            if found is not None:
                level, queue = found
                entry = level[key]
                if type(entry) is Expiring and now >= entry:
                    self._drop(key, level, queue)

