"""Least-recently-used core (placeholder: to be replaced by the tuned implementation)."""

from __future__ import annotations

import time
from collections import OrderedDict


class LRUCore:
    name = "lru"

    def __init__(self, max_bytes: int, clock=time.monotonic):
        self.max_bytes = max_bytes
        self.clock = clock
        self.nbytes = 0
        self.evictions = 0
        self.expirations = 0
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._expiry: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> bytes | None:
        value = self._data.get(key)
        if value is None:
            return None
        if self._expiry:
            deadline = self._expiry.get(key)
            if deadline is not None and self.clock() >= deadline:
                self._remove(key)
                self.expirations += 1
                return None
        self._data.move_to_end(key)
        return value

    def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        size = len(key) + len(value)
        if size > self.max_bytes:
            raise ValueError(f"value of {size} bytes exceeds the budget of {self.max_bytes}")
        if key in self._data:
            self._remove(key)
        while self.nbytes + size > self.max_bytes:
            old, _ = next(iter(self._data.items()))
            self._remove(old)
            self.evictions += 1
        self._data[key] = value
        self.nbytes += size
        if ttl:
            self._expiry[key] = self.clock() + ttl

    def delete(self, key: bytes) -> bool:
        if key in self._data:
            self._remove(key)
            return True
        return False

    def clear(self) -> None:
        self._data.clear()
        self._expiry.clear()
        self.nbytes = 0

    def _remove(self, key: bytes) -> None:
        value = self._data.pop(key)
        self._expiry.pop(key, None)
        self.nbytes -= len(key) + len(value)
