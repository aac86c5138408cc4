"""The traces bench/eviction.py replays: the real ones in bench/traces, and seeded synthetic ones.

A trace is a list of key ids (dense: 0 .. distinct-1, in order of first request) and, for a
sized trace, each key's size in bytes (key and value together). The real traces have no
sizes (their README); every synthetic trace is made from a fixed seed, so every run
replays the same requests.
"""

from __future__ import annotations

import itertools
import lzma
import random
import struct
from dataclasses import dataclass
from pathlib import Path

REAL_DIR = Path(__file__).resolve().parent / "traces"  # with their licence and origin
REAL = {  # name -> (file, what it is)
    "orm-night": ("orm-night.trace.xz", "e-commerce database objects (cache2k)"),
    "web07": ("web07.trace.xz", "web site page cache (cache2k)"),
    "web12": ("web12.trace.xz", "web site page cache (cache2k)"),
}


@dataclass
class Trace:
    name: str
    keys: list[int]
    sizes: list[int] | None = None  # per key id; None: every object has the same size
    about: str = ""
    keyspace: int = 0  # keys the generator draws from (synthetic); 0: the distinct keys

    @property
    def universe(self) -> int:
        """The working set cache sizes are fractions of: the keys a trace can request."""
        return self.keyspace or self.distinct

    @property
    def distinct(self) -> int:
        return len(self.sizes) if self.sizes is not None else max(self.keys) + 1

    @property
    def working_set_bytes(self) -> int:
        return sum(self.sizes) if self.sizes is not None else self.distinct


def dense(ids) -> list[int]:
    """Renumber ids 0, 1, ... in order of first appearance."""
    number: dict[int, int] = {}
    return [number.setdefault(i, len(number)) for i in ids]


def real(name: str, directory: Path = REAL_DIR, limit: int | None = None) -> Trace:
    file, about = REAL[name]
    data = lzma.open(directory / file).read()
    count = len(data) // 4 if limit is None else min(limit, len(data) // 4)
    ids = struct.unpack_from(">%di" % count, data)
    if count < len(data) // 4:
        about += f", first {count:,} of {len(data) // 4:,} requests"
    return Trace(name, dense(ids), about=about)


def zipf_ranks(rng: random.Random, keys: int, skew: float, requests: int) -> list[int]:
    """Ranks 0 .. keys-1 drawn with P(rank r) proportional to 1 / (r + 1) ** skew."""
    weights = itertools.accumulate(1 / (r + 1) ** skew for r in range(keys))
    return rng.choices(range(keys), cum_weights=list(weights), k=requests)


def zipf(skew: float, keys: int, requests: int, seed: int = 1) -> Trace:
    rng = random.Random(f"zipf-{skew}-{seed}")
    ranks = zipf_ranks(rng, keys, skew, requests)
    # Popularity must not follow the key id (nor, after dense(), the first request).
    order = list(range(keys))
    rng.shuffle(order)
    return Trace(f"zipf-{skew}", dense(order[r] for r in ranks),
                 about=f"Zipf {skew} over {keys:,} keys", keyspace=keys)


def zipf_scans(keys: int, requests: int, seed: int = 1) -> Trace:
    """Zipf 0.9 with a sequential scan after every stretch: a quarter of all requests are
    scans of keys/10 consecutive ids from a separate space of 2 * keys ids (so scans reuse
    keys now and then, as a report query over a table would)."""
    rng = random.Random(f"scans-{seed}")
    scan_length, stretch = keys // 10, 3 * keys // 10
    ids: list[int] = []
    hot = zipf_ranks(rng, keys, 0.9, requests)
    taken = 0
    while len(ids) < requests:
        ids += hot[taken:taken + stretch]
        taken += stretch
        start = rng.randrange(2 * keys - scan_length)
        ids += range(keys + start, keys + start + scan_length)
    return Trace("zipf-scans", dense(ids[:requests]),
                 about=f"Zipf 0.9 over {keys:,} keys, 25% sequential scans", keyspace=3 * keys)


def shifting(keys: int, requests: int, phases: int = 10, seed: int = 1) -> Trace:
    """Zipf 1.0 whose hot set moves: each phase maps the ranks onto keys shifted by keys/phases,
    so the previous phase's hottest keys turn lukewarm and cold keys turn hot."""
    rng = random.Random(f"shifting-{seed}")
    ranks = zipf_ranks(rng, keys, 1.0, requests)
    order = list(range(keys))
    rng.shuffle(order)
    per_phase, shift = requests // phases, keys // phases
    return Trace("shifting", dense(order[(r + (i // per_phase) * shift) % keys]
                                   for i, r in enumerate(ranks)),
                 about=f"Zipf 1.0 over {keys:,} keys, hot set moves {phases} times", keyspace=keys)


def sized(keys: int, requests: int, seed: int = 1) -> Trace:
    """Zipf 0.9 with a size per key: 70% small (100 B-1 KiB), 25% medium (1-16 KiB), 5%
    large (16-128 KiB), log-uniform within each band, independent of popularity."""
    rng = random.Random(f"sized-{seed}")
    trace = zipf(0.9, keys, requests, seed)
    bands = [(0.70, 100, 1024), (0.25, 1024, 16384), (0.05, 16384, 131072)]
    sizes = []
    for _ in range(trace.distinct):
        pick, low, high = rng.random(), 0, 0
        for share, low, high in bands:
            if pick < share:
                break
            pick -= share
        sizes.append(int(low * (high / low) ** rng.random()))
    return Trace("sized", trace.keys, sizes,
                 about=f"Zipf 0.9 over {keys:,} keys, 100 B-128 KiB objects")


def synthetic(requests: int, keys: int = 100_000) -> list[Trace]:
    return [
        zipf(0.6, keys, requests),
        zipf(0.8, keys, requests),
        zipf(0.99, keys, requests),
        zipf(1.2, keys, requests),
        zipf_scans(keys, requests),
        shifting(keys, requests),
        sized(keys // 2, requests),
    ]
