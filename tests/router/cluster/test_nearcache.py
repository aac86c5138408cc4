"""router/cluster/nearcache.py: the near cache of hot keys on a fake clock: what it keeps,
for how long, within which bytes, and what a write makes it forget."""

from __future__ import annotations

import tracemalloc

from twisted.internet.task import Clock

from router.cluster.nearcache import OVERHEAD, NearCache
from router.config.topology import NearCacheSpec
from shared import entry


def near(max_bytes=1 << 20, ttl=2.0, hot=(b"k",)):
    clock = Clock()
    return NearCache(NearCacheSpec(max_bytes, ttl), clock.seconds, set(hot)), clock


def test_a_hot_keys_entry_is_answered_until_its_ttl():
    cache, clock = near(ttl=2.0)
    stored = entry.pack(b"v", 5, 77)
    cache.offer(b"k", stored, cache.epoch)
    clock.advance(1.999)
    assert cache.get(b"k", clock.seconds()) == stored
    clock.advance(0.001)
    assert cache.get(b"k", clock.seconds()) is None
    assert (len(cache), cache.nbytes, cache.hits) == (0, 0, 1)


def test_only_hot_keys_and_plain_values_are_kept():
    cache, clock = near(hot=(b"hot", b"gone", b"neg", b"stale"))
    cache.offer(b"cold", entry.pack(b"v"), cache.epoch)
    cache.offer(b"gone", b"", cache.epoch)  # a miss
    cache.offer(b"neg", entry.NEGATIVE, cache.epoch)
    cache.offer(b"stale", entry.with_bits(entry.pack(b"v"), entry.STALE), cache.epoch)
    assert len(cache) == 0
    cache.offer(b"hot", entry.pack(b"v"), cache.epoch)
    assert cache.get(b"hot", clock.seconds()) == entry.pack(b"v")


def test_bytes_charged_never_pass_max_bytes_and_the_oldest_go_first():
    keys = [b"k%03d" % i for i in range(100)]
    value = entry.pack(b"x" * 100)
    each = 4 + len(value) + OVERHEAD
    cache, clock = near(max_bytes=10 * each, hot=keys)
    for key in keys:
        cache.offer(key, value, cache.epoch)
        assert cache.nbytes <= cache.max_bytes
        clock.advance(0.01)
    assert len(cache) == 10 and cache.nbytes == 10 * each
    now = clock.seconds()
    assert [k for k in keys if cache.get(k, now) is not None] == keys[-10:]
    assert cache.evicted == 90
    # An entry bigger than the whole budget is not kept, and evicts nothing.
    cache.offer(keys[0], entry.pack(b"x" * (10 * each)), cache.epoch)
    assert len(cache) == 10 and cache.get(keys[0], now) is None


def test_a_write_drops_the_key_and_any_answer_read_before_it():
    cache, clock = near(hot=(b"k", b"other"))
    cache.offer(b"k", entry.pack(b"old"), cache.epoch)
    asked = cache.epoch  # a get went to the node...
    cache.drop(b"k")  # ...a write of the key came through...
    cache.offer(b"k", entry.pack(b"old"), asked)  # ...and the get's (older) answer came back
    assert cache.get(b"k", clock.seconds()) is None
    cache.offer(b"k", entry.pack(b"new"), cache.epoch)  # asked after the write
    assert cache.get(b"k", clock.seconds()) == entry.pack(b"new")
    cache.offer(b"other", entry.pack(b"o"), cache.epoch)
    cache.clear()
    assert (len(cache), cache.nbytes) == (0, 0)
    assert not cache.holds(b"other", clock.seconds())


def test_the_overhead_charged_covers_what_an_entry_costs():
    cache, _ = near(max_bytes=1 << 30, hot=[b"%08d" % i for i in range(2000)])
    values = [entry.pack(b"%010d" % i) for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i, value in enumerate(values):
            cache.offer(b"%08d" % i, bytearray(value), cache.epoch)  # kept as a copy
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert used <= cache.nbytes, f"{used} bytes used, {cache.nbytes} charged"
