"""What the built-in cores share: values with a deadline, accounting rules, touch as get + set."""

from __future__ import annotations

import struct
import time


# The deadline rides in front of the value, a C double on the core's clock.
_DEADLINE = struct.Struct("d")


class Expiring(bytes):
    """A stored value with a ttl, in one object: 8 bytes of deadline, then the value.

    Why not a second dict of deadlines, or a wrapper object holding the value: a dict
    entry plus a float costs ~76 bytes per key, a wrapper 48, this 24 (the deadline and
    the header of a tracked object); a value without a ttl stays a bare ``bytes`` that
    pays nothing. ``now >= deadline`` means expired, so an entry is already gone at
    exactly its deadline.
    """

    __slots__ = ()

    @property
    def deadline(self) -> float:
        return _DEADLINE.unpack_from(self)[0]

    @property
    def value(self) -> bytes:
        return self[_DEADLINE.size:]  # a slice of a bytes subclass is plain bytes


def stored(value: bytes, ttl: float | None, clock) -> bytes | Expiring:
    """What a core keeps for ``value``: the bytes themselves, or an Expiring when ttl is set."""
    if not ttl:  # None and 0 both mean "never expires"
        return value
    return Expiring(_DEADLINE.pack(clock() + ttl) + value)


class CoreBase:
    """Budget, counters and the clock; subclasses keep the entries and the policy.

    Rules every built-in core keeps (tests/core_contract.py checks them):
    - ``nbytes`` charges ``len(key) + len(value)`` per stored entry, never above max_bytes.
    - ``set`` on a live key replaces it. A value too big for the whole budget raises
      ValueError, and the old entry under that key is removed first: a client's write
      must never leave a stale value visible.
    - ttl None or 0: no expiry. A negative ttl is already past (as in memcached): set
      removes the old entry and stores nothing.
    - Expiry is lazy: an expired entry is dropped when it is next touched (get, set,
      delete, or chosen for eviction) and counted in ``expirations``; until then it is
      still in ``len()`` and ``nbytes``. Entries dropped to make room count in
      ``evictions``. ``clear()`` empties the core and keeps both counters (like
      memcached's flush_all keeps its stats).
    """

    name = ""

    def __init__(self, max_bytes: int, clock=time.monotonic):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.evictions = 0
        self.expirations = 0
        self._clock = clock

    def touch(self, key: bytes, ttl: float | None) -> bool:
        """Give a live key a new ttl (None or 0: none); counts as an access, like a get."""
        value = self.get(key)
        if value is None:
            return False
        # The size is unchanged, so this set evicts nothing.
        self.set(key, value, ttl)
        return True

    def _uncharge(self, key: bytes, entry: bytes | Expiring) -> bool:
        """Release an entry just taken out; True if it was live, False (an expiration) if not."""
        if type(entry) is not Expiring:
            self.nbytes -= len(key) + len(entry)
            return True
        self.nbytes -= len(key) + len(entry) - _DEADLINE.size
        if self._clock() >= entry.deadline:
            self.expirations += 1
            return False
        return True

    def _refuse_oversized(self, key: bytes, value: bytes) -> int:
        size = len(key) + len(value)
        if size > self.max_bytes:
            raise ValueError(
                f"{self.name}: entry of {size} bytes (key {len(key)} + value {len(value)})"
                f" exceeds max_bytes {self.max_bytes}")
        return size
