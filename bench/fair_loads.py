#!/usr/bin/env python3
"""How long one client's miss waits while another client's burst of misses loads.

A router and one node serve group ``slow``, whose python source sleeps ``--load-time``
per key. Client A sends one `get` of ``--burst`` distinct missing keys; once its loads
are running, client B asks for one missing key of the same group and the time B waits
for its value is printed (``--rounds`` times, each on a fresh router). With loads queued
first come first served B waits behind A's whole queue; served per connection in turn,
about one load.

    .venv/bin/python bench/fair_loads.py --burst 2000 --concurrency 16 --queue 4096
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RingcacheCluster, free_port, wait_port  # noqa: E402

SOURCE = "import time\n\ndef slow(key):\n    time.sleep({seconds})\n    return 'v-' + key\n"


class SlowSourceCluster(RingcacheCluster):
    """A router and one node serving group ``slow`` from a python source that sleeps."""

    name = "fair-loads"

    def __init__(self, load_time: float, concurrency: int, queue: int):
        self.load_time, self.concurrency, self.queue = load_time, concurrency, queue
        super().__init__(nodes=1)

    def _topology(self):
        self.node_ports = [free_port()]
        memcache_port, self.http_port = free_port(), free_port()
        (self.dir / "fair_source.py").write_text(SOURCE.format(seconds=self.load_time))
        (self.dir / "topology.yaml").write_text(
            f"router:\n  memcache: 127.0.0.1:{memcache_port}\n"
            f"  http: 127.0.0.1:{self.http_port}\n  default_group: slow\n  timeout: 5s\n"
            f"nodes:\n  - {{name: node-0, address: 127.0.0.1:{self.node_ports[0]}}}\n"
            "groups:\n  slow:\n    source: {python: fair_source:slow, timeout: 600s, "
            f"concurrency: {self.concurrency}, queue: {self.queue}}}\n")
        return memcache_port, self.dir / "topology.yaml"


def running_loads(http_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/stats", timeout=5) as r:
        return json.load(r)["router"]["source_loads"]["slow"]["running"]


def one_round(cluster: SlowSourceCluster, burst: int, tag: str) -> tuple[float, str]:
    """(seconds client B waited, the first line of its answer)."""
    a = socket.create_connection(("127.0.0.1", cluster.port), timeout=30)
    b = socket.create_connection(("127.0.0.1", cluster.port), timeout=300)
    try:
        a.sendall(b"get " + b" ".join(b"burst-%s-%d" % (tag.encode(), i) for i in range(burst))
                  + b"\r\n")
        deadline = time.monotonic() + 10
        while running_loads(cluster.http_port) < cluster.concurrency:
            if time.monotonic() > deadline:
                raise RuntimeError("the burst's loads never all started")
            time.sleep(0.01)
        key = b"lone-" + tag.encode()
        start = time.perf_counter()
        b.sendall(b"get " + key + b"\r\n")
        answer = b""
        while not (answer.endswith(b"END\r\n") or answer.startswith(b"SERVER_ERROR")
                   and answer.endswith(b"\r\n")):
            chunk = b.recv(4096)
            if not chunk:
                break
            answer += chunk
        waited = time.perf_counter() - start
        return waited, answer.split(b"\r\n", 1)[0].decode(errors="replace")
    finally:
        a.close()  # the router drops A's answer; its loads still run out
        b.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=2000, help="client A's distinct misses")
    parser.add_argument("--load-time", type=float, default=0.3, help="seconds per load")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"client A: get of {args.burst} distinct misses; each load {args.load_time}s; "
          f"concurrency {args.concurrency}, queue {args.queue}")
    for i in range(args.rounds):
        # A fresh router each round: A's abandoned loads would take long to run out.
        with SlowSourceCluster(args.load_time, args.concurrency, args.queue) as cluster:
            wait_port(cluster.http_port)
            waited, line = one_round(cluster, args.burst, str(i))
        print(f"round {i}: client B's single miss answered in {waited:.3f} s: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
