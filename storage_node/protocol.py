"""The Twisted wrapper around Node: bytes in, one response frame out per request frame."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from shared import ringcache_pb2 as pb
from shared.framing import MAX_FRAME, FrameDecoder, FrameError, encode_frame
from shared.connections import ConnectionBounds, Refusal
from shared.net import format_address, whole_answers, write_now
from storage_node.node import Node

log = Logger()


@implementer(IPushProducer)
class NodeProtocol(Protocol):
    """One router connection: frames of requests in, one frame of responses each out.

    Answers are bounded per connection: the protocol is its transport's producer, so once
    the answers queued for a peer that does not read pass the transport's buffer size,
    no further frame is handled (not even ones already read) and the socket is not read
    until that peer has taken what is queued. One peer can cost the node one answer frame,
    never all the answers it asks for, and the others are served meanwhile.
    """

    def __init__(self, node: Node, max_frame: int = MAX_FRAME, bounds=None):
        self.node = node
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._paused = False
        # The port's sweep (shared/connections.py) closes a peer that leaves a frame half
        # sent: without it, connections each holding most of a 64 MiB frame add up.
        self._bounds = bounds
        self.last_active = 0.0
        self.partial_since: float | None = None

    def connectionMade(self) -> None:
        whole_answers(self.transport)
        self.transport.registerProducer(self, True)
        self.node.connections += 1
        if self._bounds is not None:
            self._bounds.opened(self)

    def connectionLost(self, reason) -> None:
        self.node.connections -= 1
        self.node.peer_gone(self)
        if self._bounds is not None:
            self._bounds.closed(self)

    def dataReceived(self, data: bytes) -> None:
        self._decoder.receive_data(data)
        self._serve()
        if self._bounds is not None:
            if not self._decoder.buffered:
                self.partial_since = None
            elif self.partial_since is None:
                self.partial_since = self._bounds.reactor.seconds()

    def deliver(self, frame) -> None:
        """A frame of answers to this router's requests that waited on a lease."""
        transport = self.transport
        if transport is not None and getattr(transport, "connected", True) and (
                not transport.disconnecting):
            write_now(transport, frame)

    # For the sweep: routers keep their connections open while idle, so only a frame left
    # half sent counts.

    def busy(self) -> bool:
        return True

    def timed_out(self, why: str) -> None:
        peer = self.transport.getPeer()
        self._bounds.log(f"closing the connection from {format_address(peer.host, peer.port)}: "
                       f"a frame {why}")
        self.transport.abortConnection()

    # IPushProducer: the transport pauses us when its write buffer is full, resumes when drained.

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()  # stop reading this peer's socket

    def resumeProducing(self) -> None:
        self._paused = False
        self._serve()  # the frames read before the pause come first
        if not self._paused:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._paused = True

    def _serve(self) -> None:
        decoder = self._decoder
        try:
            node = self.node
            while not self._paused and (payload := decoder.next_frame()) is not None:
                write_now(self.transport,
                          node.handle_payload(payload, self.max_frame, self, pieces=True))
                node.flush_answers()
        except FrameError as exc:  # WireError too: a payload that is not a Frame
            # Nothing after a framing error can be trusted: drop this connection now,
            # without flushing, and keep serving the others.
            peer = self.transport.getPeer()
            log.warn("closing connection from {peer}: {problem}",
                     peer=f"{peer.host}:{peer.port}", problem=str(exc))
            self.transport.abortConnection()


class NodeFactory(Factory):
    """Builds one NodeProtocol per router connection, all sharing one Node."""

    noisy = False  # the node logs what matters; no line per factory start and stop

    def __init__(self, node: Node, max_frame: int = MAX_FRAME, reactor=None,
                 frame_timeout: float = 0.0, log_line: Callable[[str], None] | None = None):
        self.node = node
        self.max_frame = max_frame
        self.bounds = None
        if frame_timeout and reactor is not None:
            self.bounds = ConnectionBounds(reactor, 1 << 30, command_timeout=frame_timeout,
                                       what="router connections", log=log_line)

    def buildProtocol(self, addr) -> NodeProtocol:
        return NodeProtocol(self.node, self.max_frame, self.bounds)

    def stopFactory(self) -> None:
        if self.bounds is not None:
            self.bounds.stop()


class ConnectionCap(Factory):
    """At most ``limit`` connections at once on the node port; past it a new connection is
    closed at once (on an open node, after one error frame saying why), and the refusals
    are logged through ``refused``, which the caller rate-limits.

    ``count`` says how many connections are open: Node.connections plus those still
    authenticating at the gate, so an unauthenticated flood cannot run the node out of
    file descriptors either.
    """

    noisy = False

    def __init__(self, factory, limit: int, count: Callable[[], int],
                 refused: Callable[[str], None], answer: bool = True):
        self.factory = factory
        self.limit = limit
        self.count = count
        self.refused = refused
        self.answer = answer  # False when peers must authenticate: strangers get no byte
        self.refusals = 0

    def buildProtocol(self, addr):
        if self.count() < self.limit:
            return self.factory.buildProtocol(addr)
        self.refusals += 1
        self.refused(f"refused a connection from {format_address(addr.host, addr.port)}: {self.limit} connections are "
                     f"open, the most allowed (--max-connections)")
        return Refusal(too_many_connections(self.limit) if self.answer else b"")

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()


def too_many_connections(limit: int) -> bytes:
    """The one frame a connection past the cap gets: an error, with id 0 (no request's)."""
    error = pb.Response(id=0, status=pb.ERROR, error=f"too many connections (limit {limit})")
    return encode_frame(pb.Frame(responses=[error]).SerializeToString())
