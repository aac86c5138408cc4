"""The authentication gate, driven through StringTransport on a fake clock: nothing reaches
the frame protocol before the peer has authenticated, and refusals are reported."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from shared import ringcache_pb2 as pb
from shared.framing import encode_batch
from shared.gate import ACCEPTED, AuthenticationFailed, GatedEndpoint, server_factory
from shared.handshake import MAGIC, NODE, ROUTER, SecretHandshake
from tests.helpers import outcomes

SECRET = b"correct horse battery staple"
PEER = IPv4Address("TCP", "10.1.2.3", 40000)
FRAME = encode_batch(requests=[pb.Request(id=1, op=pb.SET, group="scores", key=b"Tom", value=b"0")])


class Recorder(Protocol):
    """The frame protocol's stand-in: records that it was connected and what it read."""

    def __init__(self, built: list):
        built.append(self)
        self.received = b""
        self.connected_to = None

    def connectionMade(self):
        self.connected_to = self.transport

    def dataReceived(self, data):
        self.received += data


class Node:
    """A node's gate on a StringTransport."""

    def __init__(self, secret=SECRET, tls=None, timeout=5.0):
        self.reactor = MemoryReactorClock()
        self.built, self.refused = [], []
        _, self.gate = server_factory(
            Factory.forProtocol(lambda: Recorder(self.built)), self.reactor, secret=secret,
            tls=tls, timeout=timeout, refused=lambda peer, why: self.refused.append((peer, why)),
            random_bytes=lambda n: b"n" * n)
        # The gate itself, as the TLS layer (when there is one) would hold it.
        self.protocol = self.gate.buildProtocol(PEER)
        self.transport = connected(self.protocol, StringTransport(peerAddress=PEER))

    def receive(self, data: bytes) -> bytes:
        """Feed ``data``; what the node wrote in answer."""
        self.transport.clear()
        self.transport.protocol.dataReceived(data)
        return self.transport.value()

    def lose(self, reason=ConnectionAborted()):
        self.protocol.connectionLost(Failure(reason))


def connected(protocol, transport):
    """``transport`` delivering to ``protocol``, as a TCP connection does."""
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


def router_side(secret=SECRET) -> SecretHandshake:
    return SecretHandshake(secret, ROUTER, b"r" * 32)


def test_a_router_that_proves_itself_reaches_the_frame_protocol():
    node, router = Node(), router_side()
    assert node.transport.value() == b""  # the node speaks second
    node_hello = node.receive(router.start())
    assert node_hello == MAGIC + b"n" * 32
    assert (node.built, node.gate.pending) == ([], 1)
    answer = node.receive(router.receive_data(node_hello) + FRAME)
    router.receive_data(answer)
    assert router.done and router.leftover == ACCEPTED
    [inner] = node.built
    # Spliced: the transport now delivers straight to the frame protocol.
    assert node.transport.protocol is inner and inner.connected_to is node.transport
    assert inner.received == FRAME
    assert (node.gate.pending, node.refused) == (0, [])
    assert not node.transport.disconnecting


@pytest.mark.parametrize("stranger", [FRAME, b"GET / HTTP/1.1\r\n\r\n"])
def test_a_stranger_gets_no_byte_and_never_reaches_the_frame_protocol(stranger):
    node = Node()
    assert node.receive(stranger) == b""
    assert node.transport.disconnected  # aborted, not flushed
    node.lose()
    assert node.built == []
    assert node.refused == [("10.1.2.3:40000", "it did not start the ringcache handshake "
                                                "(no shared secret configured on its side?)")]
    assert node.gate.pending == 0


def test_a_router_with_the_wrong_secret_gets_only_a_nonce():
    node, router = Node(), router_side(b"not the secret, but long enough")
    node_hello = node.receive(router.start())
    assert node.receive(router.receive_data(node_hello) + FRAME) == b""
    assert node.transport.disconnected
    node.lose()
    assert (node.built, node.refused) == ([], [("10.1.2.3:40000", "wrong shared secret")])


def test_a_peer_that_does_not_authenticate_in_time_is_cut_off():
    node = Node(timeout=2.0)
    node.receive(MAGIC[:3])  # a slow start...
    node.reactor.advance(1.9)
    assert not node.transport.disconnecting
    node.reactor.advance(0.1)
    assert node.transport.disconnected
    node.lose()
    assert (node.built, node.refused) == ([], [("10.1.2.3:40000", "no authentication within 2s")])


def test_a_peer_that_connects_and_leaves_silently_is_not_reported():
    node = Node()
    node.lose(ConnectionDone())
    assert (node.built, node.refused, node.gate.pending) == ([], [], 0)
    assert node.reactor.getDelayedCalls() == []  # the deadline went with it


def test_with_tls_the_node_opens_once_the_verified_handshake_completes():
    node = Node(secret=None, tls=CertificateOptions())  # TLS itself is not under test here
    assert node.built == []
    node.protocol.handshakeCompleted()
    [inner] = node.built
    assert node.transport.value() == ACCEPTED  # the router waits for this word
    assert inner.connected_to is node.transport


class FakeEndpoint:
    def __init__(self):
        self.transport = StringTransport()

    def connect(self, factory):
        self.protocol = factory.buildProtocol(None)
        connected(self.protocol, self.transport)
        return succeed(self.protocol)


def gated(secret=SECRET, tls=False):
    reactor, endpoint, built = MemoryReactorClock(), FakeEndpoint(), []
    ready = outcomes(GatedEndpoint(endpoint, reactor, secret=secret, random_bytes=lambda n: b"r" * n)
                     .connect(Factory.forProtocol(lambda: Recorder(built))))
    return reactor, endpoint, built, ready


def test_the_router_connects_once_the_node_proved_itself_and_accepted_it():
    reactor, endpoint, built, ready = gated()
    node = SecretHandshake(SECRET, NODE, b"n" * 32)
    node_hello = node.receive_data(endpoint.transport.value())
    endpoint.transport.clear()
    endpoint.protocol.dataReceived(node_hello)
    node_proof = node.receive_data(endpoint.transport.value())
    endpoint.protocol.dataReceived(node_proof + ACCEPTED[:3])
    assert (built, ready) == ([], [])  # not before the whole word
    endpoint.transport.protocol.dataReceived(ACCEPTED[3:] + b"early frame")
    [inner] = built
    assert ready == [inner] and inner.received == b"early frame"
    assert endpoint.transport.protocol is inner


def test_the_router_refuses_a_node_that_does_not_know_the_secret():
    reactor, endpoint, built, ready = gated()
    impostor = SecretHandshake(b"not the secret, but long enough", NODE, b"n" * 32)
    endpoint.protocol.dataReceived(impostor.receive_data(endpoint.transport.value()))
    endpoint.protocol.dataReceived(b"x" * 32)  # a proof it could not make
    assert endpoint.transport.disconnected
    endpoint.protocol.connectionLost(Failure(ConnectionAborted()))
    [failure] = ready
    assert failure.check(AuthenticationFailed)
    assert failure.getErrorMessage() == "authentication with the node failed: wrong shared secret"
    assert built == []


def test_the_router_gives_up_on_a_node_that_closes_without_a_word():
    reactor, endpoint, built, ready = gated()
    endpoint.protocol.connectionLost(Failure(ConnectionDone()))
    [failure] = ready
    assert failure.getErrorMessage() == ("authentication with the node failed: it closed the "
                                         "connection (does it have the same secret, or trust "
                                         "the same CA?)")
