"""Ours alone (ringcache router + 1 node), one load: ops/s and the CPU each process spent per
key (user + sys from /proc), to see which side a change moved. No twemproxy run beside it,
so alternate trees run by run (bench/README.md, "100 KB values without copies").

    .venv/bin/python bench/cpu_split.py --value-size 102400 [--depth 1] [--multi 1] [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RingcacheCluster, cpu_seconds, loadgen, preload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--value-size", type=int, default=102400)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--multi", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    load = dict(keys=args.keys, value_size=args.value_size, depth=args.depth, multi=args.multi)
    with RingcacheCluster(1) as cluster:
        preload(cluster.port, args.keys, args.value_size)
        loadgen(cluster.port, seconds=1, **load)  # warm-up
        node, router = cluster.procs[0].pid, cluster.procs[1].pid
        before = cpu_seconds([router]), cpu_seconds([node])
        result = loadgen(cluster.port, seconds=args.seconds, **load)
        after = cpu_seconds([router]), cpu_seconds([node])
    keys = result["ops"]
    if result["errors"] or not keys:
        raise SystemExit(f"the load failed: {result}")
    router_us, node_us = ((a - b) / keys * 1e6 for a, b in zip(after, before))
    print(f"{keys / args.seconds:,.0f} keys/s, CPU per key: router {router_us:.1f} us, "
          f"node {node_us:.1f} us")


if __name__ == "__main__":
    main()
