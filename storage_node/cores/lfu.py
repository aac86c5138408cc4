"""Least-frequently-used core: one OrderedDict per frequency, a capped count, slow aging; O(1)."""

from __future__ import annotations

import time
from collections import OrderedDict

from storage_node.cores.base import (DICT_BYTES, ORDERED_DICT_BYTES, CoreBase, Expiring,
                                     OrderWalk, oversized, stored)

# Counts stop here, as Caffeine's 4-bit counters do: past a few reads "hot" is hot enough,
# and a small cap keeps the aging hand's round (below) short.
MAX_FREQUENCY = 15


class LFUCore(CoreBase):
    """Evicts the entry read the fewest times; among equals, the least recently used.

    Frequency: a new entry has 1, each get (and touch) that finds it adds 1, up to
    MAX_FREQUENCY. A set on a live key replaces the value and keeps the count: writes
    are not demand. ``_levels[f]`` holds the entries with frequency f as key -> bytes (or
    Expiring), least recent first; ``_freq`` maps key -> f only for f >= 2, because most
    entries of a cache are read never or once and so cost nothing there. ``_min`` is a
    lower bound of the lowest non-empty level; eviction raises it past empty levels, at
    most MAX_FREQUENCY steps.

    Aging: a pure LFU keeps a once-hot key forever, even after its ttl has passed and no
    one reads it. So each eviction first moves a hand one level round 2..MAX_FREQUENCY
    and looks at the least recent entry there: if it has expired it is dropped (an
    expiration, and maybe room enough), otherwise it loses one count and goes to the
    most recent end of the level below. Idle entries thus sink one level per round of
    the hand they spend at the front of their level, while a scan of fresh keys needs
    about MAX_FREQUENCY**2 evictions before it can reach a key that was fully hot.

    A walk (storage_node/cores/walk.py) goes level by level from 1 up, each least recent
    first, and an entry's rank is its frequency; the copy of the levels' order when it
    starts costs what LRU's does (a pass over OrderedDict links).
    """

    name = "lfu"
    ENTRY_OVERHEAD = 304
    TTL_OVERHEAD = 48

    def __init__(self, max_bytes: int, clock=time.monotonic, entry_overhead: int = 0):
        super().__init__(max_bytes, clock, entry_overhead)
        self.clear()

    def __len__(self) -> int:
        return len(self._levels[1]) + len(self._freq)

    def _peek(self, key: bytes):
        return self._levels[self._freq.get(key, 1)].get(key)

    def get(self, key: bytes) -> bytes | None:
        freq = self._freq.get(key, 1)
        level = self._levels[freq]
        entry = level.get(key)
        if entry is None:
            return None
        if type(entry) is Expiring:
            if self._clock() >= entry:
                self._remove(key)
                return None
            value = entry.value
        else:
            value = entry
        if freq < MAX_FREQUENCY:
            del level[key]  # _unlink, inlined: this is the hot path
            if not level:
                level.clear()
            self._levels[freq + 1][key] = entry
            self._freq[key] = freq + 1
        else:
            level.move_to_end(key)
        return value

    def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        self._store(key, value, ttl, self._remove(key) or 1)

    def restore(self, key: bytes, value: bytes, ttl: float | None, rank: int | None) -> None:
        """As the most recent entry of frequency ``rank`` (None: 2, read once since written)."""
        if rank is None:
            rank = 2
        if type(rank) is not int or not 1 <= rank <= MAX_FREQUENCY:
            raise ValueError(f"lfu: rank {rank!r} is not a frequency 1..{MAX_FREQUENCY}")
        self._remove(key)
        self._store(key, value, ttl, rank)

    def walk(self) -> OrderWalk:
        levels = self._levels[1:]

        def locate(key: bytes):  # (levels and _freq are replaced as they drain)
            f = self._freq.get(key, 1)
            entry = self._levels[f].get(key)
            return None if entry is None else (entry, f)

        return OrderWalk(self, [list(level) for level in levels], [None] * len(levels), locate)

    def _store(self, key: bytes, value: bytes, ttl: float | None, freq: int) -> None:
        if ttl is not None and ttl < 0:
            return
        size = self._refuse_oversized(key, value, ttl)
        entry = stored(value, ttl, self._clock)
        if self.nbytes + size > self.max_bytes:
            self._until_upkeep -= 1
            if self._until_upkeep < 0:
                self._upkeep()
            while self.nbytes + size > self.max_bytes:
                self._evict_one()
        self._place(key, entry, freq)
        self.nbytes += size

    def delete(self, key: bytes) -> bool:
        return self._remove(key) > 0

    def clear(self) -> None:
        self._levels = [OrderedDict() for _ in range(MAX_FREQUENCY + 1)]  # [0] unused
        self._freq: dict[bytes, int] = {}
        self._min = 1
        self._hand = 1
        self._until_upkeep = 0
        self.nbytes = 0
        self._generation += 1

    def _upkeep(self) -> None:
        """Every sixteenth of the entries' worth of evicting writes: give back the tables
        of levels and of ``_freq`` that drained. Entries climb through the levels and
        the aging hand moves them down, so a level that once held many may hold few."""
        entries = len(self)
        self._until_upkeep = entries // 16
        levels = self._levels
        for freq, level in enumerate(levels):
            if oversized(level, ORDERED_DICT_BYTES):
                levels[freq] = OrderedDict(level)
        if oversized(self._freq, DICT_BYTES):
            self._freq = dict(self._freq)

    def _evict_one(self) -> None:
        """One step of the aging hand, then the least frequently used entry goes, unless
        the hand found an expired entry: dropping that one made room already."""
        levels = self._levels
        self._hand = hand = self._hand + 1 if self._hand < MAX_FREQUENCY else 2
        aged = levels[hand]
        if aged:
            key, entry = next(iter(aged.items()))
            if type(entry) is Expiring and self._clock() >= entry:
                self._remove(key)
                return
            self._unlink(aged, key)
            del self._freq[key]
            self._place(key, entry, hand - 1)
        while not levels[self._min]:
            self._min += 1
        level = levels[self._min]
        key = next(iter(level))
        entry = self._unlink(level, key)
        if self._min > 1:
            del self._freq[key]
        if self._uncharge(key, entry):
            self.evictions += 1

    def _place(self, key: bytes, entry: bytes | Expiring, freq: int) -> None:
        self._levels[freq][key] = entry
        if freq > 1:
            self._freq[key] = freq
        if freq < self._min:
            self._min = freq

    def _remove(self, key: bytes) -> int:
        """Remove key if stored: its frequency if it was live, 0 if absent or expired."""
        freq = self._freq.pop(key, 1)
        level = self._levels[freq]
        if key not in level:
            return 0
        return freq if self._uncharge(key, self._unlink(level, key)) else 0

    @staticmethod
    def _unlink(level: OrderedDict, key: bytes) -> bytes | Expiring:
        entry = level.pop(key)
        if not level:
            # A dict keeps its table when its entries leave, so a level that every entry
            # passed through would hold a table sized for all of them; clear() frees it.
            level.clear()
        return entry
