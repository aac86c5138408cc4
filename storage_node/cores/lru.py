"""Least-recently-used core: one OrderedDict, oldest first, every operation O(1)."""

from __future__ import annotations

import time
from collections import OrderedDict

from storage_node.cores.base import CoreBase, Expiring, OrderWalk, stored


class LRUCore(CoreBase):
    """Evicts the entry read or written longest ago.

    ``_data`` maps key -> bytes, or -> Expiring when the entry has a ttl, in recency
    order (front = least recent). OrderedDict keeps that order in C: move_to_end and
    popitem(last=False) are O(1). Expired entries need no sweep here: untouched, they
    drift to the front and are evicted like any idle entry (counted as expirations).

    A walk (storage_node/cores/walk.py) copies the recency order when it starts: one
    pass over the OrderedDict's links, about half a second per million entries that
    churned (they lie all over memory), in one step. Ranks are all 0.
    """

    name = "lru"
    ENTRY_OVERHEAD = 304
    TTL_OVERHEAD = 48

    def __init__(self, max_bytes: int, clock=time.monotonic, entry_overhead: int = 0):
        super().__init__(max_bytes, clock, entry_overhead)
        self._data: OrderedDict[bytes, bytes | Expiring] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def _peek(self, key: bytes):
        return self._data.get(key)

    def get(self, key: bytes) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if type(entry) is Expiring:
            if self._clock() >= entry:
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return entry.value
        self._data.move_to_end(key)
        return entry

    def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        if key in self._data:
            self._drop(key)
        if ttl is not None and ttl < 0:
            return
        size = self._refuse_oversized(key, value, ttl)
        entry = stored(value, ttl, self._clock)
        data = self._data
        while self.nbytes + size > self.max_bytes:
            if self._uncharge(*data.popitem(last=False)):
                self.evictions += 1
        data[key] = entry
        self.nbytes += size

    def delete(self, key: bytes) -> bool:
        return key in self._data and self._drop(key)

    def clear(self) -> None:
        self._data.clear()
        self.nbytes = 0
        self._generation += 1

    def walk(self) -> OrderWalk:
        data = self._data

        def locate(key: bytes):
            entry = data.get(key)
            return None if entry is None else (entry, 0)

        return OrderWalk(self, [list(data)], [None], locate)

    def restore(self, key: bytes, value: bytes, ttl: float | None, rank: int | None) -> None:
        """As the most recent entry: a set, which for LRU is the whole state (rank 0)."""
        if rank is not None and (type(rank) is not int or rank != 0):
            raise ValueError(f"lru: rank {rank!r} is not 0, the one rank of an LRU entry")
        self.set(key, value, ttl)

    def _drop(self, key: bytes) -> bool:
        return self._uncharge(key, self._data.pop(key))
