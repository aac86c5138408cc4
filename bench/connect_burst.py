#!/usr/bin/env python3
"""How long a burst of new connections takes to open: memcached against every ringcache
listener (the router's memcached and HTTP ports, a node's port).

A client reconnect storm opens connections back to back, faster than a server's accept
loop drains them; the kernel queues them in the listen backlog, and past it drops the SYN,
which the client resends after a second. This opens ``--conns`` connections one after
another to each port, keeps them open until the last, and prints the total time and the
slowest single connect, side by side.

    .venv/bin/python bench/connect_burst.py --conns 2000
"""

from __future__ import annotations

import argparse
import re
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Memcached, RingcacheCluster, wait_port  # noqa: E402


def burst(port: int, conns: int) -> tuple[float, float]:
    """(seconds for all, seconds of the slowest) opening ``conns`` connections to ``port``."""
    opened = []
    worst = 0.0
    start = time.perf_counter()
    try:
        for _ in range(conns):
            t = time.perf_counter()
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            worst = max(worst, time.perf_counter() - t)
        return time.perf_counter() - start, worst
    finally:
        for sock in opened:
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=2000, help="connections per burst")
    parser.add_argument("--rounds", type=int, default=3,
                        help="bursts per port (best and worst shown)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it too
    if args.conns + 64 > hard:
        parser.error(f"--conns {args.conns} needs more open files than the limit ({hard})")
    with Memcached() as memcached, RingcacheCluster(nodes=1) as ours:
        topology = (ours.dir / "topology.yaml").read_text()
        http_port = int(re.search(r"http: 127\.0\.0\.1:(\d+)", topology).group(1))
        wait_port(http_port)
        ports = [("memcached", memcached.port), ("router memcached port", ours.port),
                 ("router HTTP port", http_port), ("node port", ours.node_ports[0])]
        print(f"{args.conns} connections opened back to back, {args.rounds} rounds "
              f"(somaxconn {Path('/proc/sys/net/core/somaxconn').read_text().strip()})")
        print(f"{'port':24} {'total s (best..worst)':>24} {'slowest connect ms':>20}")
        for name, port in ports:
            figures = []
            for _ in range(args.rounds):
                figures.append(burst(port, args.conns))
                time.sleep(0.5)  # let the server close the last burst's connections
            totals = sorted(total for total, _ in figures)
            slowest = max(worst for _, worst in figures)
            print(f"{name:24} {totals[0]:>11.3f}..{totals[-1]:<11.3f} {slowest * 1000:>20.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
