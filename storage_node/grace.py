"""Grace: a group's entries kept past their ttl, so that a stale copy can be answered
while the source is slow (stale_while_revalidate) or failing (stale_if_error), RFC 5861.

A group with grace holds its core behind a GraceCore. Every entry stored with a ttl is
kept ``grace`` seconds longer (the longer of the two windows), charged to the budget as
any entry; the ops see the core through the wrapper, for which an entry past its ttl is
not there: a get misses it, an add may replace it, a delete answers NOT_FOUND (and drops
the stale copy with it), a touch refuses it. Only the leases (storage_node/leases.py)
look past the ttl, through ``peek``. A group without grace has its bare core: nothing on
its hit path changes.

What the wrapper shows as an entry's ttl is its ttl proper (the core's deadline less the
grace): walks, snapshots and DUMP carry that (negative for a stale entry), and restore
adds this group's grace back, so a change of the windows (CONFIGURE moves the entries to
a new wrapper) keeps every entry's ttl and judges it by the new windows.
"""

from __future__ import annotations


class GraceCore:
    """``core`` with its entries kept ``max(swr, sie)`` seconds past their ttl."""

    def __init__(self, core, stale_while_revalidate: float, stale_if_error: float):
        self.core = core
        self.swr = stale_while_revalidate
        self.sie = stale_if_error
        self.grace = max(stale_while_revalidate, stale_if_error)
        self._left = core.ttl_left
        if getattr(core, "walk", None) is not None:  # a core that cannot list, neither can this
            self.walk = self._walk

    def __getattr__(self, name):  # name, nbytes, max_bytes, evictions, clear ...
        return getattr(self.core, name)

    def __len__(self) -> int:
        return len(self.core)

    def _past(self, key: bytes) -> float | None:
        """Seconds the entry under ``key`` is past its ttl, or None while it is fresh."""
        left = self._left(key)
        if left is None or left >= self.grace:
            return None
        return self.grace - left

    def get(self, key: bytes):
        stored = self.core.get(key)
        if stored is None or self._past(key) is None:
            return stored
        return None

    def peek(self, key: bytes) -> tuple[bytes | None, float | None]:
        """(the stored entry, fresh or stale, or None; seconds past its ttl, or None when
        fresh): an access, as a get."""
        stored = self.core.get(key)
        if stored is None:
            return None, None
        return stored, self._past(key)

    def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        self.core.set(key, value, ttl + self.grace if ttl and ttl > 0 else ttl)

    def delete(self, key: bytes) -> bool:
        stale = self._past(key) is not None
        return self.core.delete(key) and not stale

    def touch(self, key: bytes, ttl: float | None) -> bool:
        stored = self.get(key)
        if stored is None:
            return False
        self.set(key, stored, ttl)  # the size is unchanged: nothing is evicted
        return True

    def ttl_left(self, key: bytes) -> float | None:
        left = self._left(key)
        return None if left is None else max(left - self.grace, 0.0)

    def _walk(self):
        return _Shifted(self.core.walk(), self.grace)

    def restore(self, key: bytes, value: bytes, ttl: float | None, rank) -> None:
        raw = None if ttl is None else ttl + self.grace
        restore = getattr(self.core, "restore", None)
        if restore is None:
            self.core.set(key, value, raw)
        else:
            restore(key, value, raw, rank)


class _Shifted:
    """A walk of the bare core, ttls shown as the entries' own (less the grace)."""

    __slots__ = ("cursor", "shift")

    def __init__(self, cursor, shift: float):
        self.cursor, self.shift = cursor, shift

    def take(self, n: int) -> list[tuple]:
        shift = self.shift
        return [(key, value, None if ttl is None else ttl - shift, rank)
                for key, value, ttl, rank in self.cursor.take(n)]


def with_grace(core, stale_while_revalidate: float, stale_if_error: float):
    """The core a group's ops use: ``core`` itself without grace (or for a core that cannot
    tell an entry's ttl, ``ttl_left``), else a GraceCore."""
    if max(stale_while_revalidate, stale_if_error) <= 0 or getattr(core, "ttl_left", None) is None:
        return core
    return GraceCore(core, stale_while_revalidate, stale_if_error)


def lookup(core, key: bytes) -> tuple[bytes | None, float | None]:
    """(entry or None, seconds past its ttl or None) of ``key`` in a group's core."""
    peek = getattr(core, "peek", None)
    if peek is None:
        return core.get(key), None
    return peek(key)

