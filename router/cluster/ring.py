"""The consistent-hash ring: which storage node owns a key, placed by node name and weight."""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable
from types import MappingProxyType

import mmh3

# Keys and points live on a 32-bit circle; shares and moves are exact counts of it.
RING_SIZE = 1 << 32

# Bump when point placement changes (point names, hash, tie rule): digests must differ.
_PLACEMENT_VERSION = "ringcache-ring-v1"


def murmur3_32(data: bytes) -> int:
    """The default hash: 32-bit unsigned MurmurHash3, seed 0, the same in every process."""
    return mmh3.hash(data, 0, signed=False)


def routing_key(group: str, key: bytes) -> bytes:
    """The bytes a (group, key) pair is placed by, so equal keys of two groups spread apart."""
    return group.encode() + b":" + key


class HashRing:
    """Node names on a circle, ``max(1, round(vnodes * weight))`` points each.

    A key belongs to the first point at or after its hash, wrapping at the top. Points that
    hash equal are ordered by node name, so the lower name owns the key on every router.
    """

    def __init__(
        self,
        nodes: Iterable[tuple[str, float]],
        vnodes: int = 160,
        hash_fn: Callable[[bytes], int] | None = None,
    ) -> None:
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise ValueError(f"vnodes must be a positive integer, got {vnodes!r}")
        weights: dict[str, float] = {}
        for name, weight in nodes:
            if name in weights:
                raise ValueError(f"duplicate node name {name!r}")
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"node {name!r}: weight must be positive, got {weight!r}")
            weights[name] = weight
        self.vnodes = vnodes
        self.weights = MappingProxyType(weights)
        self._hash = hash_fn or murmur3_32
        self._hash_name = "mmh3_32" if hash_fn is None else f"{hash_fn.__module__}.{hash_fn.__qualname__}"
        self._counts = {name: max(1, round(vnodes * w)) for name, w in weights.items()}
        points = sorted(
            (self._hash(f"{name}-{i}".encode()), name)
            for name, count in self._counts.items()
            for i in range(count)
        )
        # Parallel lists: bisect on plain ints is the fast path of every request.
        self._hashes = [h for h, _ in points]
        self._owners = [name for _, name in points]
        # Owners with the first repeated at the end: a key past the last point wraps to
        # the first one without a test.
        self._wrapped = self._owners + self._owners[:1]

    def __len__(self) -> int:
        return len(self.weights)

    @property
    def digest(self) -> str:
        """16 hex digits naming the placement: equal digests mean every key has the same owner.

        Built from the hash, the placement version and each node's name and point count, so
        it ignores node order and addresses, and equal rings written differently (vnodes 160
        weight 1 versus vnodes 80 weight 2) agree.
        """
        lines = [_PLACEMENT_VERSION, self._hash_name]
        lines += [f"{name}\t{self._counts[name]}" for name in sorted(self._counts)]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    def owner(self, key: bytes) -> str:
        """The node that owns ``key``."""
        if not self._hashes:
            raise LookupError("the ring has no nodes")
        return self._wrapped[bisect.bisect_left(self._hashes, self._hash(key))]

    def points(self) -> tuple[list[int], list[str]]:
        """The ring's point hashes, ascending, and the node owning each."""
        return list(self._hashes), list(self._owners)

    def owners(self, key: bytes, n: int) -> list[str]:
        """The first ``n`` distinct nodes clockwise from ``key`` (fewer if the ring is smaller)."""
        n = min(n, len(self.weights))
        found: list[str] = []
        if n <= 0:
            return found
        start = self._index(key)
        size = len(self._owners)
        for step in range(size):
            name = self._owners[(start + step) % size]
            if name not in found:
                found.append(name)
                if len(found) == n:
                    break
        return found

    def shares(self) -> dict[str, float]:
        """Each node's exact fraction of the key space."""
        counts = dict.fromkeys(self.weights, 0)
        previous = self._hashes[-1] - RING_SIZE if self._hashes else 0
        for h, name in zip(self._hashes, self._owners):
            counts[name] += h - previous  # the arc (previous, h] ends at this point
            previous = h
        return {name: count / RING_SIZE for name, count in counts.items()}

    def moves(self, other: HashRing) -> dict[tuple[str, str], float]:
        """Share of the key space moving from each owner here to a different owner in ``other``."""
        return {pair: count / RING_SIZE for pair, count in self._moved_counts(other).items()}

    def diff(self, other: HashRing) -> float:
        """Exact share of the key space whose owner differs between this ring and ``other``."""
        return sum(self._moved_counts(other).values()) / RING_SIZE

    def _index(self, key: bytes) -> int:
        i = bisect.bisect_left(self._hashes, self._hash(key))
        return 0 if i == len(self._hashes) else i

    def _moved_counts(self, other: HashRing) -> Counter[tuple[str, str]]:
        # Every point of either ring is a boundary; between two boundaries both owners are
        # constant, so one merged pass over the boundaries measures the change exactly.
        if not self._hashes or not other._hashes:
            raise LookupError("cannot compare with a ring that has no nodes")
        bounds = sorted(set(self._hashes).union(other._hashes))
        moved: Counter[tuple[str, str]] = Counter()
        i = j = 0
        previous = bounds[-1] - RING_SIZE
        for b in bounds:
            while i < len(self._hashes) and self._hashes[i] < b:
                i += 1
            while j < len(other._hashes) and other._hashes[j] < b:
                j += 1
            old = self._owners[i % len(self._owners)]
            new = other._owners[j % len(other._owners)]
            if old != new:
                moved[old, new] += b - previous
            previous = b
        return moved
