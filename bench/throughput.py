"""memcached GET hits through a ringcache router and its nodes alone: serial, pipelined, multi-get.

Run: .venv/bin/python bench/throughput.py [--seconds 5] [--nodes 1]
(bench/vs_twemproxy.py runs the same load against twemproxy + memcached as well.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RingcacheCluster, cpu_seconds, loadgen, preload  # noqa: E402
from bench.vs_twemproxy import scenarios  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--keys", type=int, default=10000)
    args = parser.parse_args()
    with RingcacheCluster(args.nodes) as cluster:
        preload(cluster.port, args.keys)
        print(f"ringcache router + {args.nodes} node(s), {args.keys} keys of 100 bytes, "
              f"{args.seconds:g}s per scenario (C load generator, 4 connections)")
        print(f"{'scenario':<20} {'ops/s':>10} {'p50 us':>8} {'p99 us':>8} {'CPU us/key':>11}")
        for name, options, _ in scenarios(argparse.Namespace(conns=4, depth=32)):
            loadgen(cluster.port, seconds=1, keys=args.keys, **options)  # warm-up
            cpu0 = cpu_seconds(cluster.pids)
            r = loadgen(cluster.port, seconds=args.seconds, keys=args.keys, **options)
            per_key = (cpu_seconds(cluster.pids) - cpu0) / r["ops"] * 1e6
            # Latency is per round trip: one get, or a pipelined batch of 32.
            print(f"{name:<20} {r['ops_per_s']:>10,.0f} {r['p50_us']:>8.0f} "
                  f"{r['p99_us']:>8.0f} {per_key:>11.1f}")


if __name__ == "__main__":
    main()
