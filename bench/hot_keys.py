#!/usr/bin/env python3
"""Hot keys: under a skewed workload, how much more than its share the busiest node serves,
without and with the router's near cache, side by side.

Starts 8 real `ringcache node`s and a router (RingcacheCluster of bench/harness.py),
loads 20,000 keys of 100 bytes, and runs 30,000 gets drawn Zipf(1.2) (seeded; the same
stream for both sides) one at a time over one connection. Each node's reads come from the
nodes' own stats (GroupStats hits + misses, before and after), and the figure is the
busiest node's reads over the mean node's (1.0 is a perfectly balanced cluster; issue 20:
2.37x without, goal <= 1.3x with). With the near cache on it also prints what the near
cache holds against its max_bytes (from /v1/hot) and the memory one group's tracker takes
for the same stream (tracemalloc, in this process). The rounds alternate off / on.

    .venv/bin/python bench/hot_keys.py [--rounds 2] [--nodes 8] [--keys 20000]
                                       [--gets 30000] [--zipf 1.2] [--near-cache YAML]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import tracemalloc
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import KEY_PREFIX, RingcacheCluster, preload  # noqa: E402
from router.cluster.hotkeys import HotKeys, Sampler  # noqa: E402

NEAR_CACHE = "{max_bytes: 16MiB, ttl: 2s}"
GOAL = 1.3


def zipf_keys(n_keys: int, s: float, n: int, seed: int) -> list[bytes]:
    weights = [1 / (rank + 1) ** s for rank in range(n_keys)]
    ranks = random.Random(seed).choices(range(n_keys), weights, k=n)
    return [b"%s%d" % (KEY_PREFIX.encode(), r) for r in ranks]


def node_reads(http_port: int) -> dict[str, int]:
    """Reads each node served of the bench group so far (its hits + misses)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/stats", timeout=10) as r:
        nodes = json.load(r)["nodes"]
    out = {}
    for name, stats in nodes.items():
        group = next(g for g in stats["groups"] if g["name"] == "bench")
        out[name] = int(group.get("hits", 0)) + int(group.get("misses", 0))
    return out


def hot_view(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/hot", timeout=10) as r:
        return json.load(r)["groups"]["bench"]


def run_gets(port: int, keys: list[bytes]) -> None:
    """Each get sent and answered before the next (a serial client), every one a hit."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        buf = b""
        for key in keys:
            s.sendall(b"get %s\r\n" % key)
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the router closed the connection")
                buf += chunk
            if not buf.startswith(b"VALUE "):
                raise RuntimeError(f"{key!r} was not a hit: {buf[:80]!r}")
            buf = b""


def one_side(args, keys: list[bytes], near: str | None) -> dict:
    with RingcacheCluster(args.nodes, near_cache=near) as cluster:
        preload(cluster.port, args.keys, 100)
        before = node_reads(cluster.http_port)
        run_gets(cluster.port, keys)
        after = node_reads(cluster.http_port)
        reads = {name: after[name] - before[name] for name in after}
        mean = sum(reads.values()) / len(reads)
        out = {"reads": reads, "busiest_over_mean": max(reads.values()) / mean,
               "node_reads": sum(reads.values())}
        if near is not None:
            out["near_cache"] = hot_view(cluster.http_port)["near_cache"]
        return out


def tracker_memory(keys: list[bytes]) -> int:
    """Bytes one group's tracker holds after the stream, sampled as the router samples."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tracker, sampler = HotKeys(lambda: 0.0), Sampler(rng=random.Random(1))
        for key in keys:
            if sampler.due():
                tracker.add(bytes(bytearray(key)))  # a new object per get, as the data plane gives
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(tracker) > 0
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--gets", type=int, default=30_000)
    parser.add_argument("--zipf", type=float, default=1.2)
    parser.add_argument("--near-cache", default=NEAR_CACHE, metavar="YAML",
                        help=f"the near_cache block of the 'on' side (default {NEAR_CACHE})")
    args = parser.parse_args()
    print(f"{args.nodes} nodes, {args.keys:,} keys of 100 bytes, {args.gets:,} serial gets "
          f"drawn Zipf({args.zipf:g}); near cache on: near_cache: {args.near_cache}")
    print(f"  {'round':<6} {'busiest/mean off':>17} {'on':>6} {'node reads off':>15} {'on':>7}"
          f"   near cache bytes / max_bytes, keys, hits")
    offs, ons = [], []
    for i in range(args.rounds):
        keys = zipf_keys(args.keys, args.zipf, args.gets, seed=i)
        off = one_side(args, keys, None)
        on = one_side(args, keys, args.near_cache)
        offs.append(off["busiest_over_mean"])
        ons.append(on["busiest_over_mean"])
        near = on["near_cache"]
        print(f"  {i + 1:<6} {off['busiest_over_mean']:>16.2f}x {on['busiest_over_mean']:>5.2f}x"
              f" {off['node_reads']:>15,} {on['node_reads']:>7,}"
              f"   {near['bytes']:,} / {near['max_bytes']:,}"
              f" ({near['bytes'] / near['max_bytes']:.1%}), {near['keys']:,} keys,"
              f" {near['hits']:,} hits", flush=True)
    off, on = statistics.median(offs), statistics.median(ons)
    print(f"  median busiest node / mean node: {off:.2f}x off, {on:.2f}x on "
          f"(goal <= {GOAL:g}x: {'met' if on <= GOAL else 'MISSED'}); ratio on/off {on / off:.2f}")
    memory = tracker_memory(zipf_keys(args.keys, args.zipf, args.gets, seed=0))
    print(f"  tracker of one group after the stream: {memory:,} bytes "
          f"(goal <= 1 MB: {'met' if memory <= 1_000_000 else 'MISSED'})")


if __name__ == "__main__":
    main()
