#!/usr/bin/env python3
"""What a lease adds to a miss: miss -> load -> fill, with and without leases, side by side.

A Router runs in this process (its real node client, over loopback) in front of one real
`ringcache node`; the group's python source answers at once (an `async def`), so what is
timed is the router and node work of a read-through, not the origin. Each mode reads
``--keys`` distinct cold keys, one at a time (serial: the miss's latency) and then
``--batch`` at a time (the cost per load when many are in flight). With leases the look
inside the flight is a LEASE_GET and the fill a LEASE_FILL under its token; without, the
node client is told the node lacks leases (as for an older node) and the miss is a GET
and a SET. Both modes make the same three round trips per miss; the rounds alternate.

    .venv/bin/python bench/leases.py --keys 2000 --batch 100 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.reactor import install  # noqa: E402

install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402

from router.cluster.router import Router  # noqa: E402
from router.config.topology import load_topology  # noqa: E402
from tests.helpers import RINGCACHE, free_port, port_open, start_process, stop_process  # noqa: E402

SOURCE = "async def load(key):\n    return 'v' * 100\n"


async def _sleep(seconds: float) -> None:
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


async def one_mode(router, leases: bool, keys: list[bytes], batch: int) -> tuple[float, float]:
    """(µs per miss one at a time, µs per miss ``batch`` at a time) of fresh cold keys."""
    client = next(iter(router.clients.values()))
    client.leases = leases
    half = len(keys) // 2
    started = time.perf_counter()
    for key in keys[:half]:
        item = await router.get("miss", key)
        assert item is not None and not item.hit
    serial = (time.perf_counter() - started) / half * 1e6
    rest = keys[half:]
    started = time.perf_counter()
    for i in range(0, len(rest), batch):
        await gatherResults([router.get("miss", k) for k in rest[i:i + batch]])
    batched = (time.perf_counter() - started) / len(rest) * 1e6
    return serial, batched


async def run(args, router) -> dict:
    while next(iter(router.clients.values())).state != "up":
        await _sleep(0.05)
    figures = {True: [], False: []}
    for round_ in range(args.rounds + 1):  # the first round warms up
        for leases in (True, False):
            keys = [b"r%d-%s-%d" % (round_, b"l" if leases else b"n", i) for i in range(args.keys)]
            result = await one_mode(router, leases, keys, args.batch)
            if round_:
                figures[leases].append(result)
    # Every miss of the lease rounds was loaded under a lease, none of the others.
    assert router.stats.lease_loads["miss"] == (args.rounds + 1) * args.keys
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=2000, help="cold keys per mode and round")
    parser.add_argument("--batch", type=int, default=100, help="misses in flight at once")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ringcache-bench-leases-"))
    (work / "miss_source.py").write_text(SOURCE)
    port = free_port()
    (work / "topology.yaml").write_text(
        f"router:\n  default_group: miss\nnodes:\n  - {{name: node-0, address: 127.0.0.1:{port}}}\n"
        "groups:\n  miss:\n    max_bytes: 256MiB\n"
        "    source: {python: miss_source:load, concurrency: 1000, queue: 10000}\n")
    node = start_process([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}"],
                         lambda: port_open(port), timeout=30)
    router = Router(load_topology(work / "topology.yaml"), reactor)
    router.start()
    out = {}

    def done(result):
        out["figures"] = result
        reactor.stop()

    def failed(failure):
        out["error"] = failure
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run(args, router)).addCallbacks(
        done, failed))
    try:
        reactor.run()
    finally:
        router.stop()
        stop_process(node)
    if "error" in out:
        out["error"].raiseException()
    figures = out["figures"]
    print(f"miss -> load -> fill through 1 router (in process) + 1 node, a source that answers at "
          f"once; {args.keys} cold keys per mode and round, {args.rounds} rounds, alternating")
    print(f"  {'':22}{'one at a time':>16}{f'{args.batch} in flight':>18}   (µs per miss, median of rounds)")
    medians = {}
    for leases, label in ((False, "without leases"), (True, "with leases")):
        serial = statistics.median(s for s, _ in figures[leases])
        batched = statistics.median(b for _, b in figures[leases])
        medians[leases] = (serial, batched)
        rounds = ", ".join(f"{s:.0f}/{b:.0f}" for s, b in figures[leases])
        print(f"  {label:22}{serial:>16.0f}{batched:>18.0f}   rounds: {rounds}")
    (s0, b0), (s1, b1) = medians[False], medians[True]
    print(f"  {'added by the lease':22}{s1 - s0:>+16.0f}{b1 - b0:>+18.0f}")


if __name__ == "__main__":
    main()
