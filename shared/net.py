"""The TCP server endpoint both roles listen on, from a host (IPv4, IPv6 or name) and a port."""

from __future__ import annotations

from twisted.internet.endpoints import quoteStringArgument, serverFromString


def tcp_server(reactor, host: str, port: int):
    # IPv6 literals arrive bracketed from "[::1]:7001"; the endpoint string wants them bare
    # and with their colons quoted.
    return serverFromString(
        reactor, f"tcp:{port}:interface={quoteStringArgument(host.strip('[]'))}")
