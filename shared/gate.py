"""The gate on a router <-> node connection: nothing reaches the frame protocol until the
peer has authenticated, within a deadline.

Authenticated means: the TLS handshake finished with the peer's certificate verified (when
TLS is on), the shared-secret handshake (shared/handshake.py) succeeded (when a secret is
set), and, on the router's side, the node said it accepted us. Only then is the frame
protocol built and connected; the gate then splices itself out of the transport, so
frames pay nothing for it. A peer that fails, or is too slow, is cut off without a byte
of it ever parsed as a frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from shared.handshake import NODE, NONCE_SIZE, ROUTER, HandshakeError, SecretHandshake
from shared.net import cancel_call, format_address

HANDSHAKE_TIMEOUT = 5.0
# The node's last word before frames: the router knows its certificate (or proof) was
# accepted, instead of learning otherwise from its first request failing.
ACCEPTED = b"RCAUTHOK"


class AuthenticationFailed(Exception):
    """The other side did not authenticate (or did not accept us); the text says how."""


@implementer(IHandshakeListener)
class _Gate(Protocol):
    def __init__(self, factory: _GateFactory, addr):
        self.factory = factory
        self.addr = addr
        self._tls_pending = factory.tls
        self._handshake = None
        self._accepted = b"" if factory.role == ROUTER else None  # the marker as it arrives
        self._deadline = None
        self._open = False
        self._failed: str | None = None
        self._heard = False  # whether the peer sent anything: a silent probe is no attack

    def connectionMade(self) -> None:
        f = self.factory
        f.pending += 1
        self._deadline = f.reactor.callLater(f.timeout, self._refuse,
                                             f"no authentication within {f.timeout:g}s")
        if f.secret is not None:
            self._handshake = SecretHandshake(f.secret, f.role, f.random_bytes(NONCE_SIZE))
            hello = self._handshake.start()  # the router's; a node speaks second
            if hello:
                self.transport.write(hello)

    def handshakeCompleted(self) -> None:
        self._tls_pending = False
        self._heard = True
        self._advance(b"")

    def dataReceived(self, data: bytes) -> None:
        self._heard = True
        self._advance(data)

    def _advance(self, data: bytes) -> None:
        if self._open or self._failed:
            return
        if self._tls_pending:
            return  # TLS delivers no data before its handshake; nothing to do yet
        handshake = self._handshake
        if handshake is not None and not handshake.done:
            if not data:
                return
            try:
                answer = handshake.receive_data(data)
            except HandshakeError as exc:
                self._refuse(str(exc))
                return
            if answer:
                self.transport.write(answer)
            if not handshake.done:
                return
            data = handshake.leftover
        if self._accepted is not None:
            need = len(ACCEPTED) - len(self._accepted)
            self._accepted += data[:need]
            data = data[need:]
            if self._accepted != ACCEPTED[:len(self._accepted)]:
                self._refuse("it did not accept this router: check its TLS and secret settings")
                return
            if len(self._accepted) < len(ACCEPTED):
                return
        self._open_gate(data)

    def _open_gate(self, leftover: bytes) -> None:
        f = self.factory
        self._open = True
        f.pending -= 1
        cancel_call(self._deadline)
        if f.role == NODE:
            self.transport.write(ACCEPTED)
        inner = f.wrapped.buildProtocol(self.addr)
        transport = self.transport
        # Splice: from now on the transport delivers to the frame protocol directly.
        if isinstance(transport, ProtocolWrapper):  # TLS
            transport.wrappedProtocol = inner
        else:
            transport.protocol = inner
        inner.makeConnection(transport)
        if leftover:
            inner.dataReceived(leftover)
        f.opened(inner)

    def _refuse(self, why: str) -> None:
        if self._open or self._failed:
            return
        self._failed = why
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if self._open:  # spliced out: the frame protocol was told instead
            return
        f = self.factory
        f.pending -= 1
        cancel_call(self._deadline)
        why = self._failed
        if why is None:
            if not reason.check(ConnectionDone, ConnectionLost):
                why = _describe(reason)
            elif self._heard and f.role == NODE:
                why = "closed the connection before authenticating"
            else:
                # A port probe that connected and left is not worth a line; a node that
                # refuses a router just hangs up, and the router's message says so.
                why = ""
        f.failed(self.addr, why)


def _describe(reason) -> str:
    """Why a connection failed before authenticating, OpenSSL's error lists as their reasons."""
    if reason.check(SSL.Error):
        errors = reason.value.args[0] if reason.value.args else None
        if isinstance(errors, list):
            return "TLS handshake failed: " + "; ".join(str(e[-1]) for e in errors if e)
    if reason.check(VerificationError):  # the certificate names another host
        return f"TLS handshake failed: the certificate does not name this host ({reason.value})"
    return f"failed before authenticating: {reason.getErrorMessage()}"


class _GateFactory(Factory):
    noisy = False  # the gate reports refusals itself, rate-limited where it matters

    def __init__(self, wrapped, reactor, role: str, secret: bytes | None, tls: bool,
                 timeout: float, opened: Callable, failed: Callable,
                 random_bytes: Callable[[int], bytes] = os.urandom):
        self.wrapped = wrapped
        self.reactor = reactor
        self.role = role
        self.secret = secret
        self.tls = tls
        self.timeout = timeout
        self.opened = opened
        self.failed = failed
        self.random_bytes = random_bytes
        self.pending = 0  # connections still authenticating: they count against a cap

    def buildProtocol(self, addr) -> _Gate:
        return _Gate(self, addr)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()


def server_factory(wrapped, reactor, *, secret: bytes | None = None, tls=None,
                   timeout: float = HANDSHAKE_TIMEOUT,
                   refused: Callable[[str, str], None] = lambda peer, why: None,
                   random_bytes: Callable[[int], bytes] = os.urandom):
    """The node's side: ``wrapped`` (the frame protocol's factory) behind a gate that asks
    for ``secret`` and, with ``tls`` (server options requiring a client certificate), TLS.
    ``refused(peer, why)`` hears of each peer cut off, except those that left silently.
    Returns (the factory to listen with, the gate factory whose ``pending`` counts
    connections still authenticating)."""

    def failed(addr, why: str) -> None:
        if why:
            refused(format_address(addr.host, addr.port), why)

    gate = _GateFactory(wrapped, reactor, NODE, secret, tls is not None, timeout,
                        opened=lambda inner: None, failed=failed, random_bytes=random_bytes)
    return (TLSMemoryBIOFactory(tls, False, gate) if tls is not None else gate), gate


class GatedEndpoint:
    """The router's side: connects like ``endpoint``, but fires only once the node has
    authenticated and accepted us (with the connected frame protocol), or fails with
    AuthenticationFailed saying why."""

    def __init__(self, endpoint, reactor, *, secret: bytes | None = None, tls=None,
                 timeout: float = HANDSHAKE_TIMEOUT,
                 random_bytes: Callable[[int], bytes] = os.urandom):
        self._endpoint = wrapClientTLS(tls, endpoint) if tls is not None else endpoint
        self._reactor = reactor
        self._secret = secret
        self._tls = tls is not None
        self._timeout = timeout
        self._random_bytes = random_bytes

    def connect(self, factory) -> Deferred:
        ready = Deferred()

        def opened(inner) -> None:
            ready.callback(inner)

        def failed(addr, why: str) -> None:
            # A node that refuses us just closes (it tells a stranger nothing).
            ready.errback(AuthenticationFailed("authentication with the node failed: " + (
                why or "it closed the connection (does it have the same secret, or trust "
                       "the same CA?)")))

        gate = _GateFactory(factory, self._reactor, ROUTER, self._secret, self._tls,
                            self._timeout, opened, failed, self._random_bytes)
        connecting = self._endpoint.connect(gate)
        connecting.addErrback(lambda failure: ready.called or ready.errback(failure))
        return ready
