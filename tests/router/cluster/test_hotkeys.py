"""router/cluster/hotkeys.py: the sampled heavy-hitter tracker, on a fake clock and seeded
random numbers: it finds the top keys of a Zipf stream, forgets what the window and the
horizon leave behind, and stays within its memory bound."""

from __future__ import annotations

import random
import tracemalloc
from collections import Counter

from twisted.internet.task import Clock

from router.cluster.hotkeys import HotKeys, Sampler


def zipf_stream(n_keys: int, s: float, n: int, rng: random.Random) -> list[bytes]:
    keys = [b"key-%d" % i for i in range(n_keys)]
    weights = [1 / (rank + 1) ** s for rank in range(n_keys)]
    return rng.choices(keys, weights, k=n)


def feed(tracker: HotKeys, sampler: Sampler, stream, clock: Clock, per_second: int) -> None:
    """``stream``'s gets at ``per_second``, each sampled as the data plane samples."""
    for i, key in enumerate(stream):
        if sampler.due():
            tracker.add(key)
        if i % per_second == per_second - 1:
            clock.advance(1)


def test_the_top_keys_of_a_zipf_stream_are_found_in_order_with_their_rates():
    clock, rng = Clock(), random.Random(7)
    stream = zipf_stream(20_000, 1.2, 30_000, rng)
    sampler = Sampler(every=8, rng=random.Random(8))
    tracker = HotKeys(clock.seconds, every=8)
    feed(tracker, sampler, stream, clock, per_second=1000)
    truth = Counter(stream[-16_000:])  # about what the window of 2,048 samples covers
    top = tracker.top(5)
    assert [key for key, _, _ in top] == [key for key, _ in truth.most_common(5)]
    assert all(hot for _, _, hot in top)
    # The hottest key's rate: its share of the last window's gets at 1,000 gets a second.
    key, rate, _ = top[0]
    true_rate = truth[key] / 16
    assert abs(rate - true_rate) / true_rate < 0.15
    # Hot means 2 samples of 2,048 (~0.1% of gets): 138 keys drawing 74% of the gets, not
    # the long tail.
    assert len(tracker.hot) == 138
    assert sum(truth[key] for key in tracker.hot) / 16_000 > 0.7
    assert b"key-19999" not in tracker.hot


def test_a_key_that_stops_being_read_leaves_the_window():
    clock = Clock()
    tracker = HotKeys(clock.seconds, every=1, window=100)
    for _ in range(50):
        tracker.add(b"was-hot")
    assert tracker.hot == {b"was-hot"}
    for i in range(100):
        tracker.add(b"k%d" % (i % 20))  # 5 samples each: all hot, and the old key gone
    assert b"was-hot" not in tracker.hot
    assert len(tracker.hot) == 20
    assert len(tracker) == 100


def test_samples_older_than_the_horizon_do_not_count():
    clock = Clock()
    tracker = HotKeys(clock.seconds, every=1, window=100, horizon=60)
    for _ in range(10):
        tracker.add(b"morning")
    clock.advance(30)
    for _ in range(10):
        tracker.add(b"noon")
    clock.advance(40)  # the first ten are 70 s old, the next 40 s
    assert [key for key, _, _ in tracker.top()] == [b"noon"]
    assert tracker.hot == {b"noon"}
    clock.advance(30)
    assert tracker.top() == [] and tracker.hot == set() and len(tracker) == 0


def test_rates_are_samples_times_the_sampling_over_the_span():
    clock = Clock()
    tracker = HotKeys(clock.seconds, every=8, window=1000)
    for _ in range(10):
        tracker.add(b"a")
        clock.advance(1)
    for _ in range(5):
        tracker.add(b"b")
    # 10 s since the oldest sample: a's 10 samples are 80 gets, 8/s; b's 5 are 4/s.
    assert tracker.top() == [(b"a", 8.0, True), (b"b", 4.0, True)]


def test_the_sampler_takes_one_get_in_every_on_average_and_never_in_step():
    sampler = Sampler(every=8, rng=random.Random(1))
    taken = sum(sampler.due() for _ in range(80_000))
    assert 9_600 <= taken <= 10_400
    # Counted a run at a time (a multi-get of 100 keys) it samples as many.
    sampler = Sampler(every=8, rng=random.Random(2))
    assert 9_600 <= sum(sampler.due(100) for _ in range(800)) <= 10_400
    # A client cycling through 8 keys is still sampled on every one of them.
    sampler = Sampler(every=8, rng=random.Random(3))
    seen = Counter(i % 8 for i in range(8_000) if sampler.due())
    assert len(seen) == 8 and min(seen.values()) > 60


def test_memory_stays_under_a_megabyte_with_the_longest_keys():
    clock = Clock()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tracker = HotKeys(clock.seconds)
        for i in range(6000):  # every sample a new 250-byte key (memcached's longest): the worst
            tracker.add(b"%0250d" % i)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(tracker) == 2048
    assert 2048 * 250 < used < 1 << 20, f"the tracker holds {used} bytes"
