"""Python CPU per memcached GET hit on the router + node hot path, in one process, no sockets.

Usage: python bench/hotpath.py [--requests 200000] [--profile]

The real MemcacheConnection, Router, NodeClient, NodeProtocol and Node are wired
through StringTransports and a Clock, so what is timed is exactly our Python work per
request (parsing, routing, framing, protobuf, Deferreds, answer assembly) without the
kernel and reactor costs the socket benchmarks add. Run before and after a hot-path change.
"""

from __future__ import annotations

import argparse
import cProfile
import heapq
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.testing import StringTransport  # noqa: E402

from router.cluster import nodeclient  # noqa: E402
from router.cluster.router import Router  # noqa: E402
from router.memcache.server import MemcacheFactory  # noqa: E402
from router.config.topology import load_topology  # noqa: E402
from storage_node.node import Node  # noqa: E402
from storage_node.protocol import NodeProtocol  # noqa: E402

KEYS = 10000
VALUE = b"v" * 100
TURN = 100e-6  # simulated seconds per reactor turn
SCENARIOS = [
    # name, gets per client write (pipelining depth), keys per get, clients
    ("serial get", 1, 1, 4),
    ("pipelined get x32", 32, 1, 4),
    ("multi-get 10 keys", 1, 10, 4),
]


class TurnReactor:
    """The reactor calls the hot path makes (callLater, seconds) on a heap, as the real one keeps them."""

    def __init__(self):
        self.now = 0.0
        self._calls = []
        self._seq = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay, f, *args, **kwargs):
        self._seq += 1
        call = _Call(f, args, kwargs)
        heapq.heappush(self._calls, (self.now + delay, self._seq, call))
        return call

    def advance(self, seconds: float) -> None:
        self.now += seconds
        calls = self._calls
        while calls and calls[0][0] <= self.now:
            call = heapq.heappop(calls)[2]
            if call.pending:
                call.pending = False
                call.f(*call.args, **call.kwargs)


class _Call:
    __slots__ = ("f", "args", "kwargs", "pending")

    def __init__(self, f, args, kwargs):
        self.f, self.args, self.kwargs, self.pending = f, args, kwargs, True

    def active(self) -> bool:
        return self.pending

    def cancel(self) -> None:
        self.pending = False


class Wired:
    """One router and ``nodes`` nodes joined by in-memory transports; ``turn`` moves the bytes."""

    def __init__(self, nodes: int):
        self.dir = Path(tempfile.mkdtemp(prefix="hotpath-"))
        node_lines = "\n".join(f"  - {{name: node-{i}, address: 127.0.0.1:{7001 + i}}}"
                               for i in range(nodes))
        (self.dir / "topology.yaml").write_text(
            "router: {memcache: 127.0.0.1:11211, http: 127.0.0.1:8080, default_group: bench}\n"
            f"nodes:\n{node_lines}\ngroups:\n  bench: {{max_bytes: 512MiB}}\n")
        self.clock = TurnReactor()
        self.router = Router(load_topology(self.dir / "topology.yaml"), self.clock, clock=lambda: 0.0)
        self.links = []  # (node-side protocol, its transport, router-side protocol, its transport)
        for client in self.router.clients.values():
            node_proto = NodeProtocol(Node(1 << 30))
            node_transport = StringTransport()
            node_proto.makeConnection(node_transport)
            client_proto = nodeclient._NodeProtocol(client)
            client_transport = StringTransport()
            client_proto.makeConnection(client_transport)
            self.links.append((node_proto, node_transport, client_proto, client_transport))
        self.factory = MemcacheFactory(self.router, self.clock)
        self.clients = []

    def connect(self) -> tuple:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.clients.append((proto, transport))
        return proto, transport

    def turn(self) -> None:
        """Run the reactor's end-of-turn calls and carry frames both ways until quiet."""
        self.clock.advance(TURN)  # time moves, so the node clients' batch timeouts fire
        while True:
            self.clock.advance(0)
            moved = False
            for node_proto, node_transport, client_proto, client_transport in self.links:
                data = client_transport.value()
                if data:
                    client_transport.clear()
                    node_proto.dataReceived(data)
                    moved = True
                data = node_transport.value()
                if data:
                    node_transport.clear()
                    client_proto.dataReceived(data)
                    moved = True
            if not moved:
                self.clock.advance(0)
                return


def run(wired: Wired, depth: int, multi: int, clients: int, requests: int) -> float:
    """Python CPU seconds per key fetched: each client sends ``depth`` gets of ``multi`` keys per turn."""
    conns = [wired.connect() for _ in range(clients)]
    batches = []
    key = 0
    for _ in range(64):
        batch = []
        for _ in range(depth):
            keys = [b"bench:key-%d" % ((key + j) % KEYS) for j in range(multi)]
            key += multi
            batch.append(b"get " + b" ".join(keys) + b"\r\n")
        batches.append(b"".join(batch))
    expected = depth * multi
    turns = max(1, requests // (expected * clients))
    started = time.process_time()
    for t in range(turns):
        data = batches[t % len(batches)]
        for proto, _ in conns:
            proto.dataReceived(data)
        wired.turn()
        for _, transport in conns:
            out = transport.value()
            transport.clear()
            if out.count(b"VALUE ") != expected:
                raise RuntimeError(f"expected {expected} hits, got {out[:200]!r}")
    return (time.process_time() - started) / (turns * expected * clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="keys fetched per scenario")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile each scenario")
    parser.add_argument("--only", help="run only the scenario whose name starts with this")
    args = parser.parse_args()
    wired = Wired(args.nodes)
    setter, transport = wired.connect()
    for i in range(KEYS):
        setter.dataReceived(b"set bench:key-%d 0 0 %d\r\n%b\r\n" % (i, len(VALUE), VALUE))
        if i % 100 == 99:
            wired.turn()
    wired.turn()
    if transport.value().count(b"STORED\r\n") != KEYS:
        raise RuntimeError("preload failed")
    print(f"router + {args.nodes} node(s) in one process, Python CPU per key fetched (100-byte hits)")
    for name, depth, multi, clients in SCENARIOS:
        if args.only and not name.startswith(args.only):
            continue
        run(wired, depth, multi, clients, args.requests // 10)  # warm-up
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
        per_key = min(run(wired, depth, multi, clients, args.requests) for _ in range(3))
        if args.profile:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        print(f"  {name:<18} {per_key * 1e6:6.2f} us/key   ({1 / per_key:,.0f} keys/s on one core)",
              flush=True)


if __name__ == "__main__":
    main()
