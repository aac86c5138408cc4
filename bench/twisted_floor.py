"""The floor under any Twisted router: a proxy that only copies bytes between a client and memcached.

Usage: python bench/twisted_floor.py LISTEN_PORT MEMCACHED_PORT

No parsing, no routing, no framing: each client connection gets its own memcached
connection and every read is written straight to the other side (at once, as
shared.framing.write_now does). Whatever this costs per request, a ringcache router
on the same reactor pays at least as much; vs_twemproxy.py --floor measures it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import ClientFactory, Factory, Protocol  # noqa: E402

from shared.backlog import DEFAULT_BACKLOG  # noqa: E402
from shared.net import write_now  # noqa: E402


class Backend(Protocol):
    def __init__(self, front: Front):
        self.front = front

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.front.backend = self
        if self.front.queued:
            write_now(self.transport, b"".join(self.front.queued))
            self.front.queued.clear()

    def dataReceived(self, data: bytes):
        write_now(self.front.transport, data)

    def connectionLost(self, reason):
        self.front.transport.loseConnection()


class Front(Protocol):
    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.backend = None
        self.queued = []

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        factory = ClientFactory.forProtocol(lambda: Backend(self))
        reactor.connectTCP("127.0.0.1", self.backend_port, factory)

    def dataReceived(self, data: bytes):
        if self.backend is None:
            self.queued.append(data)
        else:
            write_now(self.backend.transport, data)

    def connectionLost(self, reason):
        if self.backend is not None:
            self.backend.transport.loseConnection()


def main() -> None:
    listen_port, backend_port = int(sys.argv[1]), int(sys.argv[2])
    reactor.listenTCP(listen_port, Factory.forProtocol(lambda: Front(backend_port)),
                      backlog=DEFAULT_BACKLOG, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
