"""Reactor plumbing both roles share: the listening endpoint, writing without a turn's wait,
and cancelling a call that may already have run."""

from __future__ import annotations

from twisted.internet.endpoints import quoteStringArgument, serverFromString


def tcp_server(reactor, host: str, port: int):
    # IPv6 literals arrive bracketed from "[::1]:7001"; the endpoint string wants them bare
    # and with their colons quoted.
    return serverFromString(
        reactor, f"tcp:{port}:interface={quoteStringArgument(host.strip('[]'))}")


def write_now(transport, data: bytes | bytearray) -> None:
    """Write ``data`` to a Twisted transport, sending it at once when nothing is queued.

    ``transport.write`` only queues: the bytes leave on the next reactor turn, after an
    epoll_ctl to watch for writability, one more poll and another epoll_ctl to stop.
    Router and node write whole answers once per turn, so a connection that keeps up
    takes them now; whatever the socket does not take is queued behind, in order.
    Transports without a socket (tests' StringTransport) just get ``write``.
    """
    if (getattr(transport, "socket", None) is not None and transport.connected
            and not transport.disconnecting and not transport.dataBuffer
            and not transport._tempDataLen):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else the connection is lost; write() lets Twisted see it
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
    # Twisted's write() takes bytes only; a bytearray or the unsent rest is copied once.
    transport.write(data if type(data) is bytes else bytes(data))


def cancel_call(call) -> None:
    """Cancel a reactor DelayedCall unless it is None, already ran or already cancelled."""
    if call is not None and call.active():
        call.cancel()
