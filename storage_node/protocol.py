"""The Twisted wrapper around Node: bytes in, one response frame out per request frame."""

from __future__ import annotations

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from shared import ringcache_pb2 as pb
from shared.framing import MAX_FRAME, FrameDecoder, FrameError, decode_payload, encode_frame
from shared.net import write_now
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
                responses = self.node.handle_frame(decode_payload(payload))
                write_now(self.transport, encode_responses(responses, self.max_frame))
        except FrameError as exc:
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


def encode_responses(responses: list[pb.Response], max_frame: int = MAX_FRAME) -> bytes:
    """One frame answering every response, even when their values would overflow it.

    A batch of GETs can ask for more bytes than one frame may carry.  The answers that
    do not fit become ERRORs saying to ask again in smaller batches, so every id is
    still answered and the connection stays open.
    """
    payload = pb.Frame(responses=responses).SerializeToString()
    if len(payload) > max_frame:
        payload = _fit(responses, max_frame).SerializeToString()
    return encode_frame(payload, max_frame)


_TOO_BIG = "the answers of this batch exceed one frame; ask for fewer keys at once"
# Bytes one response adds to a Frame at most: its tag, a length varint and the body.
_ENVELOPE = 1 + 5
_ERROR_SIZE = _ENVELOPE + pb.Response(id=2**64 - 1, status=pb.ERROR, error=_TOO_BIG).ByteSize()


def _fit(responses: list[pb.Response], max_frame: int) -> pb.Frame:
    # Every response is first charged as the error it may become, so the errors are
    # sure to fit; a response kept whole costs only what it adds beyond that.
    room = max_frame - _ERROR_SIZE * len(responses)
    frame = pb.Frame()
    for response in responses:
        extra = _ENVELOPE + response.ByteSize() - _ERROR_SIZE
        if extra <= room:
            room -= extra
            frame.responses.append(response)
        else:
            frame.responses.add(id=response.id, status=pb.ERROR, error=_TOO_BIG)
    return frame
