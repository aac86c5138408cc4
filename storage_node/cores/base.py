"""What the built-in cores share: values with a deadline, accounting rules, touch as get + set."""

from __future__ import annotations

import sys
import time


class Expiring(float):
    """A stored value with a ttl: the float itself is the deadline on the core's clock, and
    ``value`` the bytes, held by reference.

    Why a float subclass: a get must hand back the value without copying it (a slice of a
    64 KiB value costs more than the rest of the get), and the deadline must cost little.
    This is one 48-byte object (a tuple of deadline and value would be 56 plus a 24-byte
    float); a value without a ttl stays a bare ``bytes`` that pays nothing. The float
    compares as the deadline: ``clock() >= entry`` means expired, so an entry is already
    gone at exactly its deadline.
    """

    __slots__ = ("value",)


def stored(value: bytes, ttl: float | None, clock) -> bytes | Expiring:
    """What a core keeps for ``value``: the bytes themselves, or an Expiring when ttl is set."""
    if not ttl:  # None and 0 both mean "never expires"
        return value
    entry = Expiring(clock() + ttl)
    entry.value = value
    return entry


def payload(entry: bytes | Expiring) -> bytes:
    """The value of a stored entry."""
    return entry.value if type(entry) is Expiring else entry


# A churning table's bytes per entry at most (see oversized): a dict's 6 slots with 24-byte
# entries, and for an OrderedDict its 56-byte node and 8-byte pointer per slot too.
DICT_BYTES = 128
ORDERED_DICT_BYTES = 256


def oversized(table: dict, entry_bytes: int) -> bool:
    """Whether a dict (or OrderedDict) keeps a table far larger than its entries need.

    A dict never shrinks as entries leave, only when it next grows: one that drained
    (its entries moved on, as entries climb through a core's states) keeps a table sized
    for all it once held. ``entry_bytes`` is what a churning table takes per entry at
    most (a dict grows to up to 6 slots an entry): a table above that, and above 4 KiB,
    is worth copying, and the copy costs its entries, which its drain paid for.
    """
    return sys.getsizeof(table) > entry_bytes * len(table) + 4096


class CoreBase:
    """Budget, counters and the clock; subclasses keep the entries and the policy.

    Rules every built-in core keeps (tests/storage_node/cores/core_contract.py checks them):
    - ``nbytes`` charges ``len(key) + len(value) + entry_overhead`` per stored entry, never
      above max_bytes. The node passes the class's measured ENTRY_OVERHEAD (what an entry
      costs in memory beyond its bytes: object headers and the core's own structure), so
      that a node's RSS follows its --max-memory; alone, a core charges no overhead. When
      it charges one, an entry with a ttl is charged TTL_OVERHEAD more (its Expiring
      object, and what the core keeps to find it when it expires).
    - ``set`` on a live key replaces it. A value too big for the whole budget raises
      ValueError, and the old entry under that key is removed first: a client's write
      must never leave a stale value visible.
    - ttl None or 0: no expiry. A negative ttl is already past (as in memcached): set
      removes the old entry and stores nothing.
    - An expired entry is never returned. Dropping one counts in ``expirations``; until it
      is dropped it is still in ``len()`` and ``nbytes``. Entries dropped to make room
      count in ``evictions``. ``clear()`` empties the core and keeps both counters (like
      memcached's flush_all keeps its stats).
    """

    name = ""
    # Bytes an entry takes in a node's RSS beyond len(key) + len(value), and what a ttl
    # adds; measured per core by tests/integration/test_entry_overhead.py, which fails when a figure
    # stops being true.
    ENTRY_OVERHEAD = 0
    TTL_OVERHEAD = 0

    def __init__(self, max_bytes: int, clock=time.monotonic, entry_overhead: int = 0):
        self.max_bytes = max_bytes
        self.entry_overhead = entry_overhead
        self._ttl_overhead = self.TTL_OVERHEAD if entry_overhead else 0
        self.nbytes = 0
        self.evictions = 0
        self.expirations = 0
        self._clock = clock
        self._generation = 0  # one more at each clear(), which ends the walks in progress

    def touch(self, key: bytes, ttl: float | None) -> bool:
        """Give a live key a new ttl (None or 0: none); counts as an access, like a get."""
        value = self.get(key)
        if value is None:
            return False
        # The size is unchanged, so this set evicts nothing.
        self.set(key, value, ttl)
        return True

    def ttl_left(self, key: bytes) -> float | None:
        """Seconds the live entry under ``key`` has left, or None when it has no expiry
        (or is not there). Not an access: incr and append keep an entry's ttl with it."""
        entry = self._peek(key)
        if type(entry) is not Expiring:
            return None
        return max(entry - self._clock(), 0.0)

    def _peek(self, key: bytes) -> bytes | Expiring | None:
        """The stored entry under ``key``, without counting an access."""
        raise NotImplementedError

    def _size(self, key: bytes, entry: bytes | Expiring) -> int:
        """What the entry is charged."""
        if type(entry) is Expiring:
            return len(key) + len(entry.value) + self.entry_overhead + self._ttl_overhead
        return len(key) + len(entry) + self.entry_overhead

    def _uncharge(self, key: bytes, entry: bytes | Expiring) -> bool:
        """Release an entry just taken out; True if it was live, False (an expiration) if not."""
        if type(entry) is not Expiring:
            self.nbytes -= len(key) + len(entry) + self.entry_overhead
            return True
        self.nbytes -= len(key) + len(entry.value) + self.entry_overhead + self._ttl_overhead
        if self._clock() >= entry:
            self.expirations += 1
            return False
        return True

    def _refuse_oversized(self, key: bytes, value: bytes, ttl: float | None) -> int:
        """The new entry's charge; ValueError if it exceeds the whole budget."""
        overhead = self.entry_overhead + (self._ttl_overhead if ttl else 0)
        size = len(key) + len(value) + overhead
        if size > self.max_bytes:
            raise ValueError(
                f"{self.name}: entry of {size} bytes (key {len(key)} + value {len(value)}"
                f" + overhead {overhead}) exceeds max_bytes {self.max_bytes}")
        return size


class OrderWalk:
    """The pure cores' walk cursor (storage_node/cores/walk.py): the keys of each queue,
    copied in order when the walk starts, each looked up when the cursor reaches it.

    ``orders`` are the copied queues, coldest first; ``skips[i]`` (or None) counts, per
    key, the places of queue i to pass over before its live one (a core that leaves
    stale places in a queue, as the adaptive core does, copies that count with the
    queue); ``locate(key)`` gives the stored entry and its rank now, or None.
    """

    def __init__(self, core: CoreBase, orders: list[list], skips: list[dict | None], locate):
        self._core = core
        self._generation = core._generation
        self._orders = orders
        self._skips = skips
        self._locate = locate
        self._queue = 0
        self._at = 0

    def take(self, n: int) -> list[tuple]:
        core = self._core
        if core._generation != self._generation:
            self._orders = []  # cleared since the start: nothing more to give
        out = []
        if self._queue >= len(self._orders):
            return out
        now = core._clock()
        locate = self._locate
        while len(out) < n and self._queue < len(self._orders):
            order, skips = self._orders[self._queue], self._skips[self._queue]
            at, end = self._at, min(len(order), self._at + n - len(out))
            for key in order[at:end]:
                if skips and skips.get(key):
                    skips[key] -= 1
                    continue
                found = locate(key)
                if found is None:
                    continue
                stored, rank = found
                if type(stored) is Expiring:
                    left = stored - now
                    if left > 0:
                        out.append((key, stored.value, left, rank))
                else:
                    out.append((key, stored, None, rank))
            self._at = end
            if end == len(order):
                self._orders[self._queue] = None  # its copy is no longer needed
                self._queue += 1
                self._at = 0
        return out
