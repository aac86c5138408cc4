#!/usr/bin/env python3
"""Which heavy-hitter tracker the router samples into: the window of exact counts
(router/cluster/hotkeys.py, Pelikan's way) against a count-min sketch with a top-k
(NetCache's, CoT's), side by side on the same sampled Zipf stream.

Both see the same samples (one get in 8 of a Zipf(S) stream over N keys). Printed per
tracker: the microseconds one sample costs, the bytes it holds at the end (tracemalloc),
and how well it names the stream's hottest keys of the recent past (the last 16,000 gets,
what the window covers): recall of the true top 10 and top 100 in its top 10 and top 100.
The sketch is 4 rows of 2,048 counters, halved every WINDOW samples so that it follows a
shifting workload, with a top-k of 256 keys kept in a dict (a key enters when its
estimate passes the smallest there).

    .venv/bin/python bench/hot_tracker.py [--keys 20000] [--gets 200000] [--zipf 1.2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mmh3  # noqa: E402

from router.cluster.hotkeys import WINDOW, HotKeys, Sampler  # noqa: E402


class CountMinTopK:
    """A count-min sketch (``depth`` rows of ``width`` counters), aged by halving every
    ``window`` samples, and the ``k`` keys with the largest estimates."""

    def __init__(self, width: int = 2048, depth: int = 4, k: int = 256, window: int = WINDOW):
        self.width, self.depth, self.k, self.window = width, depth, k, window
        self.rows = [[0] * width for _ in range(depth)]
        self.top: dict[bytes, int] = {}
        self.seen = 0

    def add(self, key: bytes) -> None:
        estimate = None
        for seed, row in enumerate(self.rows):
            i = mmh3.hash(key, seed, signed=False) % self.width
            row[i] += 1
            estimate = row[i] if estimate is None else min(estimate, row[i])
        top = self.top
        if key in top or len(top) < self.k:
            top[key] = estimate
        else:
            smallest = min(top, key=top.get)
            if estimate > top[smallest]:
                del top[smallest]
                top[bytes(key)] = estimate
        self.seen += 1
        if self.seen % self.window == 0:  # age: halve every counter
            self.rows = [[c >> 1 for c in row] for row in self.rows]
            self.top = {k: v >> 1 for k, v in top.items() if v >> 1}

    def hottest(self, n: int) -> list[bytes]:
        return sorted(self.top, key=lambda k: (-self.top[k], k))[:n]


def zipf_stream(n_keys: int, s: float, n: int, seed: int) -> list[bytes]:
    weights = [1 / (rank + 1) ** s for rank in range(n_keys)]
    return [b"key-%d" % r for r in random.Random(seed).choices(range(n_keys), weights, k=n)]


def run(make, samples: list[bytes]) -> tuple[object, float, int]:
    """The tracker after ``samples``; microseconds per sample (timed without tracemalloc,
    which slows every allocation); bytes it holds."""
    timed = make()
    started = time.perf_counter()
    for key in samples:
        timed.add(key)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    tracker = make()
    for key in samples:
        tracker.add(key)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return tracker, seconds / len(samples) * 1e6, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--gets", type=int, default=200_000)
    parser.add_argument("--zipf", type=float, default=1.2)
    args = parser.parse_args()
    stream = zipf_stream(args.keys, args.zipf, args.gets, seed=1)
    sampler = Sampler(rng=random.Random(2))
    samples = [bytes(bytearray(k)) for k in stream if sampler.due()]
    truth = [k for k, _ in Counter(stream[-16_000:]).most_common(100)]
    print(f"{args.gets:,} gets of Zipf({args.zipf:g}) over {args.keys:,} keys, "
          f"{len(samples):,} sampled (1 in {sampler.every}); truth: the last 16,000 gets")
    print(f"  {'tracker':<34} {'us/sample':>9} {'bytes':>10} {'top-10 recall':>14} "
          f"{'top-100 recall':>15}")
    sides = {
        f"window of {WINDOW} samples (ours)": (
            lambda: HotKeys(lambda: 0.0), lambda t, n: [k for k, _, _ in t.top(n)]),
        "count-min 4x2048 + top-256": (CountMinTopK, lambda t, n: t.hottest(n)),
    }
    for name, (make, hottest) in sides.items():
        tracker, us, held = run(make, samples)
        r10 = len(set(hottest(tracker, 10)) & set(truth[:10])) / 10
        r100 = len(set(hottest(tracker, 100)) & set(truth)) / 100
        print(f"  {name:<34} {us:>9.2f} {held:>10,} {r10:>14.0%} {r100:>15.0%}", flush=True)


if __name__ == "__main__":
    main()
