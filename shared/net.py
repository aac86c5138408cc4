"""Reactor plumbing both roles share: the listening endpoint, writing without a turn's wait,
and cancelling a call that may already have run."""

from __future__ import annotations

import ipaddress

from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.tcp import Connection

from shared.backlog import DEFAULT_BACKLOG


def tcp_server(reactor, host: str, port: int, tls=None, backlog: int = DEFAULT_BACKLOG):
    """A TCP server endpoint on host:port with a listen backlog of ``backlog`` (see
    shared/backlog.py); with ``tls`` (an object with ``cert``, ``key`` and optional ``ca``
    paths, as topology.TLSFiles), its connections speak TLS and, when ``ca`` is set, must
    show a client certificate that CA signed."""
    # IPv6 literals arrive bracketed from "[::1]:7001"; the endpoint string wants them bare
    # and with their colons quoted.
    endpoint = serverFromString(
        reactor, f"tcp:{port}:interface={quoteStringArgument(host.strip('[]'))}"
                 f":backlog={int(backlog)}")
    if tls is None:
        return endpoint
    from shared.tls import TLSServerEndpoint, server_options  # pyOpenSSL only when used

    return TLSServerEndpoint(endpoint, server_options(tls.cert, tls.key, tls.ca))


def format_address(host: str, port) -> str:
    """``host:port`` as people write it: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` can only be this machine: localhost or a loopback address. A wildcard
    (0.0.0.0, ::) or any other name may be reachable from elsewhere."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# What one send may pass to the kernel. Twisted's 128 KiB made a large answer (a frame of
# 100 KB values) go out in many sends, and copy its unsent rest on every partial send.
SEND_LIMIT = 4 << 20


# Values at least this large are sent from where they lie rather than copied into their
# answer: the node's GET_MANY entries from the core, the router's values from the node's
# answer, as pieces of one sendmsg (write_now). Below it, copying is cheaper than a piece.
UNCOPIED = 32 * 1024


def whole_answers(transport) -> None:
    """Set a TCP transport up for whole answers written once per turn: no Nagle (which
    would hold an answer until the peer's delayed ACK, up to 40 ms), large sends."""
    if isinstance(transport, Connection):
        transport.setTcpNoDelay(True)
        transport.SEND_LIMIT = SEND_LIMIT


def write_now(transport, data: bytes | bytearray | list) -> None:
    """Write ``data`` to a Twisted transport, sending it at once when nothing is queued.

    ``transport.write`` only queues: the bytes leave on the next reactor turn, after an
    epoll_ctl to watch for writability, one more poll and another epoll_ctl to stop.
    Router and node write whole answers once per turn, so a connection that keeps up
    takes them now; whatever the socket does not take is queued behind, in order.
    ``data`` may be a list of pieces (bytes-like: an answer whose large values are views
    of what a node sent): they go out in one sendmsg, never joined, when the socket takes
    them all. Any other transport (TLS, whose wrapper would hand out the raw socket
    beneath it; tests' StringTransport) just gets ``write``.
    """
    if (isinstance(transport, Connection) and transport.connected
            and not transport.disconnecting and not transport.dataBuffer
            and not transport._tempDataLen):
        if type(data) is list:
            data = _send_pieces(transport, data)
            if data is None:
                return
        else:
            sent = transport.writeSomeData(data)
            if isinstance(sent, int):  # else the connection is lost; write() lets Twisted see it
                if sent == len(data):
                    return
                data = memoryview(data)[sent:]
    elif type(data) is list:
        data = b"".join(data)
    # Twisted's write() takes bytes only; a bytearray or the unsent rest is copied once.
    transport.write(data if type(data) is bytes else bytes(data))


def _send_pieces(transport, pieces: list):
    """Send ``pieces`` in one sendmsg: None when the socket took them all, else what is
    left of them, joined (a failed send leaves them all, for write() to meet the error)."""
    try:
        sent = transport.socket.sendmsg(pieces)
    except OSError:  # EAGAIN: all of it waits; anything worse, Twisted's write finds out
        sent = 0
    total = 0
    for i, piece in enumerate(pieces):
        total += len(piece)
        if total > sent:
            rest = memoryview(piece)[len(piece) - (total - sent):]
            return b"".join([rest, *pieces[i + 1:]])
    return None


def cancel_call(call) -> None:
    """Cancel a reactor DelayedCall unless it is None, already ran or already cancelled."""
    if call is not None and call.active():
        call.cancel()
