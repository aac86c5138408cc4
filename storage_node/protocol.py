"""The Twisted wrapper around Node: bytes in, one response frame out per request frame."""

from __future__ import annotations

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from shared.framing import MAX_FRAME, FrameDecoder, FrameError
from shared.net import write_now
from shared.wire import WireError
from storage_node.node import Node

log = Logger()


class NodeProtocol(Protocol):
    """One router connection: frames of requests in, one frame of responses each out."""

    def __init__(self, node: Node, max_frame: int = MAX_FRAME):
        self.node = node
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # One whole answer frame per request frame: Nagle would hold it until the
            # router's delayed ACK (up to 40 ms) whenever an earlier answer is unacknowledged.
            self.transport.setTcpNoDelay(True)
        self.node.connections += 1

    def connectionLost(self, reason) -> None:
        self.node.connections -= 1

    def dataReceived(self, data: bytes) -> None:
        self._decoder.receive_data(data)
        try:
            for payload in self._decoder.frames():
                write_now(self.transport, self.node.handle_payload(payload, self.max_frame))
        except (FrameError, WireError) as exc:
            # Nothing after a framing error can be trusted: drop this connection now,
            # without flushing, and keep serving the others.
            peer = self.transport.getPeer()
            log.warn("closing connection from {peer}: {problem}",
                     peer=f"{peer.host}:{peer.port}", problem=str(exc))
            self.transport.abortConnection()


class NodeFactory(Factory):
    """Builds one NodeProtocol per router connection, all sharing one Node."""

    noisy = False  # the node logs what matters; no line per factory start and stop

    def __init__(self, node: Node, max_frame: int = MAX_FRAME):
        self.node = node
        self.max_frame = max_frame

    def buildProtocol(self, addr) -> NodeProtocol:
        return NodeProtocol(self.node, self.max_frame)
