"""A prototype of one hop: a router process serving memcached clients with its nodes in-process, no node socket.

Usage: python bench/one_hop.py TOPOLOGY_FILE

The real Router and MemcacheFactory listen on the topology's memcache address; each
NodeClient's connection is an in-memory pair of transports to a NodeProtocol over a
Node of its own in this process (see _Link for when bytes move), so the frame path
and ordering are the ones a TCP connection gives, minus the kernel and the second
process's wake-ups. The router is not start()ed: that would dial the nodes over TCP
and check group sources; the benchmark topology has none. No HTTP port, no reload.
vs_twemproxy.py --one-hop measures it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.reactor import end_of_turn, install  # noqa: E402

install()  # the reactor the router runs on (shared/reactor.py)
from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from router.cluster.router import Router  # noqa: E402
from router.memcache.server import MemcacheFactory  # noqa: E402
from router.cluster.nodeclient import _NodeProtocol  # noqa: E402
from router.config.topology import load_topology  # noqa: E402
from storage_node.node import Node  # noqa: E402
from storage_node.protocol import NodeProtocol  # noqa: E402

MAX_MEMORY = 1 << 30  # as the harness's `ringcache node --max-memory 1GiB`


class _End:
    """One end of an in-memory connection: what it writes waits for its link to carry it."""

    def __init__(self, link: _Link, protocol):
        self.link = link
        self.protocol = protocol
        self.peer: _End | None = None
        self.connected = True
        self.queued: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.connected:
            self.queued.append(data)
            self.link.wake()

    def writeSequence(self, data) -> None:
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        self.link.close()

    abortConnection = loseConnection

    # The node registers as its transport's producer; in memory nothing ever fills up.
    def registerProducer(self, producer, streaming) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 0)

    getHost = getPeer


class _Link:
    """Two protocols joined in memory; bytes move on a later reactor turn, both ways until quiet.

    Never inside a write: the writer may be deep in a callback chain that must not see
    the peer's answer before it unwinds, as on a socket. Unlike a socket, an answer
    written while its request is delivered goes back in the same turn, as
    bench/hotpath.py's Wired carries frames.
    """

    def __init__(self, reactor, client, server):
        self.reactor = reactor
        self._carry_call = None
        self.client, self.server = _End(self, client), _End(self, server)
        self.client.peer, self.server.peer = self.server, self.client
        server.makeConnection(self.server)
        # The client sees a made connection: it goes UP and queues CONFIGURE, as on TCP.
        client.makeConnection(self.client)

    def wake(self) -> None:
        if self._carry_call is None:
            self._carry_call = end_of_turn(self.reactor, self._carry)

    def _carry(self) -> None:
        self._carry_call = None
        moved = True
        while moved:
            moved = False
            for end in (self.client, self.server):
                if end.queued and end.connected:
                    data = b"".join(end.queued)
                    end.queued.clear()
                    end.peer.protocol.dataReceived(data)
                    moved = True

    def close(self) -> None:
        for end in (self.client, self.server):
            if end.connected:
                end.connected = False
                end.queued.clear()
                self.reactor.callLater(0, end.protocol.connectionLost, Failure(ConnectionDone()))


def main() -> None:
    topology = load_topology(sys.argv[1])
    router = Router(topology, reactor)
    for client in router.clients.values():
        _Link(reactor, _NodeProtocol(client), NodeProtocol(Node(MAX_MEMORY)))
    cfg = topology.router.memcache
    port = reactor.listenTCP(cfg.port, MemcacheFactory(router, reactor),
                             backlog=topology.limits.backlog, interface=cfg.host)

    def stop():
        # Stop accepting first, then close the node connections, as router/process/main.py does.
        d = port.stopListening()
        d.addCallback(lambda _: router.stop())
        return d

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    print(f"one hop: memcached on {cfg}, {len(router.clients)} in-process nodes", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
