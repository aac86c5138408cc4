"""A group's hot keys: a sampled heavy-hitter tracker over a sliding window, Pelikan's way.

One get in ``every`` (on average: the gap to the next sample is drawn at random, so a
client cycling through a few keys is not sampled in step with them) hands its key to the
group's HotKeys. That keeps the last ``window`` samples in a ring and a count per key
over the ring: a sample costs a dict update and one ring slot, whatever the traffic, and
the counts are exact over the window. A key with ``hot_samples`` or more samples in the
window is hot: at the defaults (one get in 32, 2,048 samples, 2 of them) a key is hot when
it draws about 0.1% of the group's last ~65,000 gets (Zipf(1.2) over 20,000 keys: the
~140 hottest, three quarters of the gets). One get in 8 cost the pipelined get path a
third more Python time per key (bench/hotpath.py, 0.60 -> 0.90 us), one in 32 a tenth. Samples older than ``horizon``
seconds leave the window too, so a key that stops being read stops being hot.

A group's near cache (router/cluster/nearcache.py) admits every key in the window (one
sample is enough): caching a key costs its bytes, bounded by the cache's max_bytes, while
each key left out costs a node hop per get (bench/README.md: with a bar of 2 samples a
serial client of Zipf(1.2) keys saw 0.82x twemproxy in the run made, with 1 sample
1.07x and 1.15x in the runs beside it, all at one get in 8; 8 nodes kept 9,040 reads of
30,000 against 7,370). "Hot" in
/v1/hot is the higher bar.

Why not a count-min sketch with a top-k heap (NetCache, CoT) or HeavyKeeper: they count
every get to find heavy hitters in streams far larger than their memory; here the stream
is already sampled down to a few thousand keys a second, and exact counts over the last
``window`` of them need no hashing, no decay and no heap on the hot path
(bench/hot_tracker.py puts the two side by side). Memory is the ring's keys and one
counter per distinct key in it: at most ``window`` keys of at most 250 bytes (memcached's
key limit), about 0.7 MB at the defaults (tests/router/cluster/test_hotkeys.py measures it).
"""

from __future__ import annotations

import heapq
import random
from array import array

EVERY = 32  # one get in EVERY is sampled, on average
WINDOW = 2048  # samples counted
HOT_SAMPLES = 2  # samples in the window that make a key hot
HORIZON = 60.0  # seconds a sample counts at most


class Sampler:
    """Which gets are sampled: one in ``every`` on average, the gaps drawn from ``rng``.
    The data plane subtracts each run's keys from ``left`` and samples while it is spent."""

    __slots__ = ("every", "left", "_random", "_span")

    def __init__(self, every: int = EVERY, rng: random.Random | None = None):
        self.every = every
        self._random = (rng or random.Random()).random  # (randint costs 4 times as much)
        self._span = 2 * every - 1
        self.left = self.gap()

    def gap(self) -> int:
        """Gets until the next sample: uniform over 1 .. 2*every-1 (mean ``every``)."""
        return int(self._random() * self._span) + 1

    def due(self, n: int = 1) -> int:
        """Count ``n`` gets; answers how many of them are sampled."""
        self.left -= n
        taken = 0
        while self.left <= 0:
            taken += 1
            self.left += self.gap()
        return taken

    def pick(self, n: int) -> int:
        """Which of ``n`` gets (0 .. n-1) a sample takes."""
        return int(self._random() * n) if n > 1 else 0


class HotKeys:
    """The sampled gets of one group over a window: counts per key, hot keys, rates."""

    def __init__(self, clock, every: int = EVERY, window: int = WINDOW,
                 hot_samples: int = HOT_SAMPLES, horizon: float = HORIZON):
        self.clock = clock  # seconds, monotonic enough (reactor.seconds)
        self.every = every
        self.window = window
        self.hot_samples = hot_samples
        self.horizon = horizon
        self._keys: list = [None] * window  # the ring of sampled keys; None: a free slot
        self._times = array("d", bytes(8 * window))  # when each slot was sampled
        self._next = 0  # the slot the next sample takes (the oldest sample's)
        # Samples per key in the window: every key here was drawn by about one get in
        # 65,000 lately (at the defaults), and a near cache admits these (nearcache.py).
        self.counts: dict[bytes, int] = {}
        self.hot: set[bytes] = set()  # keys with hot_samples or more in the window
        self.samples = 0  # taken since start

    def add(self, key: bytes) -> None:
        """One sampled get of ``key``."""
        keys, counts = self._keys, self.counts
        at = self._next
        old = keys[at]
        if old is not None:
            self._forget(old)
        n = counts.get(key, 0) + 1
        if n == 1:
            key = bytes(key)  # the window keeps its own copy, not a slice of a client's buffer
        counts[key] = n
        if n >= self.hot_samples:
            self.hot.add(key)
        keys[at] = key
        self._times[at] = self.clock()
        self._next = at + 1 if at + 1 < self.window else 0
        self.samples += 1

    def _forget(self, key: bytes) -> None:
        n = self.counts[key] - 1
        if n:
            self.counts[key] = n
            if n < self.hot_samples:
                self.hot.discard(key)
        else:
            del self.counts[key]
            self.hot.discard(key)

    def expire(self) -> None:
        """Drop the samples older than ``horizon`` (oldest first)."""
        cutoff = self.clock() - self.horizon
        keys, times = self._keys, self._times
        at = self._next
        for _ in range(self.window):
            if keys[at] is None:
                at = at + 1 if at + 1 < self.window else 0
                continue
            if times[at] > cutoff:
                return
            self._forget(keys[at])
            keys[at] = None
            at = at + 1 if at + 1 < self.window else 0

    def __len__(self) -> int:
        """Samples in the window."""
        return len(self._keys) - self._keys.count(None)

    def span(self) -> float:
        """Seconds the window covers: from its oldest sample to now (at least 1)."""
        times = [t for k, t in zip(self._keys, self._times) if k is not None]
        return max(1.0, self.clock() - min(times)) if times else 1.0

    def top(self, n: int = 10) -> list[tuple[bytes, float, bool]]:
        """The ``n`` keys with most samples in the window, hottest first: (key, estimated
        gets per second, hot). A rate is the key's samples times ``every`` over the span."""
        self.expire()
        scale = self.every / self.span()
        best = heapq.nlargest(n, self.counts.items(), key=lambda kv: (kv[1], kv[0]))
        return [(key, count * scale, count >= self.hot_samples) for key, count in best]
