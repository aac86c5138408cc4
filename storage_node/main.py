"""`ringcache node --listen HOST:PORT [--max-memory SIZE]`: serve one storage node until signalled."""

from __future__ import annotations

import argparse
import sys

from shared.cli import ArgumentParser, start_logging
from shared.units import parse_size

DEFAULT_MAX_MEMORY = "1GiB"


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")  # [::1]:7001
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:7001, got {text!r}")
    return host, int(port)


def _max_memory(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 bytes, got {text!r}")
    return size


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ringcache node", description="Run one ringcache storage node.")
    parser.add_argument("--listen", required=True, type=_listen_address, metavar="HOST:PORT",
                        help="address to serve routers on")
    parser.add_argument("--max-memory", type=_max_memory, default=DEFAULT_MAX_MEMORY,
                        metavar="SIZE", help=f"cap on all groups' bytes (default {DEFAULT_MAX_MEMORY})")
    return parser


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # bad input (its one line is printed) or --help
        return exc.code or 0

    # Imported only now: installing the reactor is the business of a process that serves.
    from twisted.internet import reactor
    from twisted.logger import Logger

    from storage_node.node import Node
    from shared.net import tcp_server
    from storage_node.protocol import NodeFactory

    log = Logger(namespace="ringcache.node")
    node = Node(args.max_memory, log=lambda text: log.warn("{text}", text=text))
    host, port = args.listen
    endpoint = tcp_server(reactor, host, port)
    exit_code = 0

    def listening(listening_port) -> None:
        # Logging starts only once we serve (events so far are buffered and replayed),
        # so a failure to listen stays the one line below.
        start_logging()
        address = listening_port.getHost()
        print(f"ringcache node listening on {_show(address.host, address.port)}", flush=True)
        # Stop accepting first; the reactor then closes the open connections as it stops.
        reactor.addSystemEventTrigger("before", "shutdown", listening_port.stopListening)

    def failed(failure) -> None:
        nonlocal exit_code
        exit_code = 1
        print(f"ringcache node: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    # Listen once the reactor runs, so a failure can stop it. The reactor's own
    # SIGTERM/SIGINT handlers stop it gracefully; main then returns 0.
    reactor.callWhenRunning(
        lambda: endpoint.listen(NodeFactory(node)).addCallbacks(listening, failed)
    )
    reactor.run()
    return exit_code
