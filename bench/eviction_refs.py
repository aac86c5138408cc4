"""Reference eviction policies for bench/eviction.py, written from their papers for clarity,
not speed: LRU, LFU, SIEVE, S3-FIFO and W-TinyLFU (Caffeine's, with its hill climber).

Each is a read-through cache over a budget in size units (objects, or bytes on a sized
trace): ``access(key, size)`` answers whether the request hit and, on a miss, admits the
object and evicts until it fits, as bench/eviction.py replays a trace through a core
(get; on a miss, set). Keys are ints. An object larger than the whole budget is never
stored (the cores refuse it too).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict


class LRU:
    name = "LRU"

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self.data: OrderedDict[int, int] = OrderedDict()

    def access(self, key: int, size: int) -> bool:
        if key in self.data:
            self.data.move_to_end(key)
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity:
                self.used -= self.data.popitem(last=False)[1]
            self.data[key] = size
            self.used += size
        return False


class LFU:
    """In-cache LFU: evicts the least frequently used resident, the least recent among
    equals; counts start at 1 and are forgotten on eviction (no aging)."""

    name = "LFU"

    def __init__(self, capacity: int):
        self.capacity, self.used, self.clock = capacity, 0, 0
        self.data: dict[int, list] = {}  # key -> [frequency, last use, size]
        self.heap: list[tuple] = []  # (frequency, last use, key), stale ones skipped

    def access(self, key: int, size: int) -> bool:
        self.clock += 1
        entry = self.data.get(key)
        if entry is not None:
            entry[0] += 1
            entry[1] = self.clock
            heapq.heappush(self.heap, (entry[0], self.clock, key))
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity:
                freq, use, victim = heapq.heappop(self.heap)
                found = self.data.get(victim)
                if found is not None and found[0] == freq and found[1] == use:
                    del self.data[victim]
                    self.used -= found[2]
            self.data[key] = [1, self.clock, size]
            heapq.heappush(self.heap, (1, self.clock, key))
            self.used += size
            if len(self.heap) > 4 * len(self.data) + 64:  # drop stale heap entries
                self.heap = [(e[0], e[1], k) for k, e in self.data.items()]
                heapq.heapify(self.heap)
        return False


class SIEVE:
    """SIEVE (Zhang et al., NSDI'24): a FIFO whose hand walks from the oldest entry to the
    newest, clearing visited bits and evicting the first unvisited entry; new entries go
    in at the newest end and survivors stay in place."""

    name = "SIEVE"

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self.data: dict[int, list] = {}  # key -> [visited, newer, older, size]
        self.newest = self.oldest = self.hand = None

    def access(self, key: int, size: int) -> bool:
        node = self.data.get(key)
        if node is not None:
            node[0] = True
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity:
                self._evict()
            node = self.data[key] = [False, None, self.newest, size]
            if self.newest is not None:
                self.data[self.newest][1] = key
            self.newest = key
            if self.oldest is None:
                self.oldest = key
            self.used += size
        return False

    def _evict(self) -> None:
        key = self.hand if self.hand is not None else self.oldest
        while self.data[key][0]:
            self.data[key][0] = False
            key = self.data[key][1]
            if key is None:
                key = self.oldest
        visited, newer, older, size = self.data.pop(key)
        self.hand = newer
        if newer is not None:
            self.data[newer][2] = older
        else:
            self.newest = older
        if older is not None:
            self.data[older][1] = newer
        else:
            self.oldest = newer
        self.used -= size


class S3FIFO:
    """S3-FIFO (Yang et al., SOSP'23): a small FIFO (10%) that new objects enter, a main
    FIFO with 2-bit CLOCK reinsertion, and a ghost FIFO of keys evicted from the small
    queue (as large as main); an object read while in the small queue moves to main, an
    object found in the ghost goes straight to main. As in the authors' libCacheSim, an
    object at least as large as the small queue is not admitted there (it would flush it)."""

    name = "S3-FIFO"

    def __init__(self, capacity: int, small_ratio: float = 0.1):
        self.capacity = capacity
        self.small_max = max(1, int(capacity * small_ratio))
        self.ghost_max = capacity - self.small_max
        self.small: OrderedDict[int, int] = OrderedDict()  # key -> size
        self.main: OrderedDict[int, int] = OrderedDict()
        self.ghost: OrderedDict[int, int] = OrderedDict()
        self.freq: dict[int, int] = {}
        self.small_used = self.main_used = self.ghost_used = 0

    def access(self, key: int, size: int) -> bool:
        if key in self.freq:
            self.freq[key] = min(self.freq[key] + 1, 3)
            return True
        if size > self.capacity:
            return False
        # (size 1 is an object-count trace, where a 1-object small queue must still admit)
        if size >= self.small_max and size > 1 and key not in self.ghost:
            return False
        while self.small_used + self.main_used + size > self.capacity:
            if self.main_used > self.capacity - self.small_max or not self.small:
                self._evict_main()
            else:
                self._evict_small()
        if key in self.ghost:
            self.ghost_used -= self.ghost.pop(key)
            self.main[key] = size
            self.main_used += size
        else:
            self.small[key] = size
            self.small_used += size
        self.freq[key] = 0
        return False

    def _evict_small(self) -> None:
        while self.small:
            key, size = self.small.popitem(last=False)
            self.small_used -= size
            if self.freq[key] > 0:
                self.main[key] = size
                self.main_used += size
                self.freq[key] = 0
                continue
            del self.freq[key]
            self.ghost[key] = size
            self.ghost_used += size
            while self.ghost_used > self.ghost_max:
                self.ghost_used -= self.ghost.popitem(last=False)[1]
            return

    def _evict_main(self) -> None:
        while self.main:
            key, size = self.main.popitem(last=False)
            if self.freq[key] > 0:
                self.freq[key] -= 1
                self.main[key] = size
                continue
            del self.freq[key]
            self.main_used -= size
            return


class CountMinSketch:
    """TinyLFU's frequency sketch as Caffeine keeps it: four 4-bit counters per key in a
    table of the next power of two above the cache's entry count, every count halved once
    ten times that many increments have been made (aging)."""

    def __init__(self, entries: int):
        width = 1 << max(4, (4 * max(entries, 1) - 1).bit_length())
        self.mask = width - 1
        self.table = bytearray(width)
        self.sample, self.additions = 10 * max(entries, 1), 0
        self.cache: dict[int, tuple] = {}  # key -> its four slots (the bench's keys are few)

    def _slots(self, key: int):
        slots = self.cache.get(key)
        if slots is None:
            slots = self.cache[key] = self._hash_slots(key)
        return slots

    def _hash_slots(self, key: int):
        h = (key * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
        mask = self.mask
        return (h & mask, (h >> 16) & mask, (h >> 32) & mask, (h >> 48) & mask ^ (h & 0xF))

    def frequency(self, key: int) -> int:
        table = self.table
        return min(table[i] for i in self._slots(key))

    def increment(self, key: int) -> None:
        table, added = self.table, False
        for i in self._slots(key):
            if table[i] < 15:
                table[i] += 1
                added = True
        if added:
            self.additions += 1
            if self.additions >= self.sample:
                self.table = bytearray(c >> 1 for c in table)
                self.additions //= 2


class WTinyLFU:
    """W-TinyLFU as Caffeine implements it: an LRU window (1% at first) in front of a
    segmented LRU main space (probation, and protected at 80% of main); an entry leaving the
    window is admitted to main only if the sketch counts it more often requested than
    main's victim. With ``climb`` the window is resized by Caffeine's hill climber: every
    ten cache sizes of requests it moves a step of the budget between window and main in
    the direction that last raised the hit ratio, restarting with big steps after a jump."""

    def __init__(self, capacity: int, mean_size: float = 1.0, climb: bool = True):
        self.name = "W-TinyLFU" if climb else "W-TinyLFU 1%"
        self.capacity, self.climb = capacity, climb
        self.window_max = capacity - int(capacity * 0.99)
        self.protected_max = int(0.8 * (capacity - self.window_max))
        self.window: OrderedDict[int, int] = OrderedDict()
        self.probation: OrderedDict[int, int] = OrderedDict()
        self.protected: OrderedDict[int, int] = OrderedDict()
        self.window_used = self.probation_used = self.protected_used = 0
        self.sketch = CountMinSketch(int(capacity / mean_size))
        self.sample = self.sketch.sample
        self.hits = self.misses = 0
        self.previous_rate = 0.0
        self.step = -0.0625 * capacity

    def access(self, key: int, size: int) -> bool:
        self.sketch.increment(key)
        hit = self._find(key)
        if not hit and size <= self.capacity:
            self.window[key] = size
            self.window_used += size
            self._evict()
        if self.climb:
            self._climb(hit)
        return hit

    def _find(self, key: int) -> bool:
        if key in self.window:
            self.window.move_to_end(key)
        elif key in self.probation:
            size = self.probation.pop(key)
            self.probation_used -= size
            self.protected[key] = size
            self.protected_used += size
            self._demote()
        elif key in self.protected:
            self.protected.move_to_end(key)
        else:
            return False
        return True

    def _demote(self) -> None:
        while self.protected_used > self.protected_max and self.protected:
            key, size = self.protected.popitem(last=False)
            self.protected_used -= size
            self.probation[key] = size
            self.probation_used += size

    def _evict(self) -> None:
        candidates = []
        while self.window_used > self.window_max and self.window:
            key, size = self.window.popitem(last=False)
            self.window_used -= size
            self.probation[key] = size
            self.probation_used += size
            candidates.append(key)
        # Main over budget: each candidate, newest last, duels the probation's LRU entry.
        while self.window_used + self.probation_used + self.protected_used > self.capacity:
            victim = next(iter(self.probation), None)
            if victim is None:
                victim, size = next(iter(self.protected.items()))
                self.protected_used -= self.protected.pop(victim)
                self.probation[victim] = size
                self.probation_used += size
                self.probation.move_to_end(victim, last=False)
            candidate = candidates[-1] if candidates else None
            if candidate is None or candidate == victim or candidate not in self.probation:
                self.probation_used -= self.probation.pop(victim)
                continue
            if self.sketch.frequency(candidate) > self.sketch.frequency(victim):
                self.probation_used -= self.probation.pop(victim)
            else:
                self.probation_used -= self.probation.pop(candidate)
                candidates.pop()

    def _climb(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self.hits + self.misses < self.sample:
            return
        rate = self.hits / (self.hits + self.misses)
        change = rate - self.previous_rate
        amount = self.step if change >= 0 else -self.step
        if abs(change) >= 0.05:
            self.step = 0.0625 * self.capacity * (1 if amount >= 0 else -1)
        else:
            self.step = 0.98 * amount
        self.previous_rate, self.hits, self.misses = rate, 0, 0
        amount = int(amount)
        if amount > 0:  # a larger window, taken from protected
            amount = min(amount, self.protected_max)
            self.window_max += amount
            self.protected_max -= amount
            self._demote()
        elif amount < 0:
            amount = min(-amount, self.window_max - 1)
            self.window_max -= amount
            self.protected_max += amount
            self._evict()
