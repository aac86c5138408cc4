"""`ringcache node --listen HOST:PORT [--max-memory SIZE] [auth and trust options]`: serve one
storage node until signalled."""

from __future__ import annotations

import argparse
import sys

from shared.backlog import DEFAULT_BACKLOG, backlog_problem
from shared.cli import ArgumentParser, start_logging
from shared.units import parse_duration, parse_size

DEFAULT_MAX_MEMORY = "1GiB"
# Routers open one connection per node each (per worker): a thousand is many routers, and
# stays under the common 1024 open-files limit with room for the node's own.
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_HANDSHAKE_TIMEOUT = "5s"
DEFAULT_FRAME_TIMEOUT = "30s"
REFUSALS_LOGGED_EVERY = 10.0  # seconds: one line per interval however many peers are refused


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")  # [::1]:7001
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:7001, got {text!r}")
    return host, int(port)


def _positive(parse, unit: str = ""):
    """An argparse type: ``parse`` (a size, a duration) refusing what is not above 0."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0{unit}, got {text!r}")
        return value

    return convert


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _backlog(text: str) -> int:
    problem = backlog_problem(int(text) if text.isdigit() else text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return int(text)


def _policy(text: str) -> str:
    if not text.startswith("python:"):  # the rest is checked as the class is loaded
        raise argparse.ArgumentTypeError(f"expected python:module:Class, got {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ringcache node", description="Run one ringcache storage node.")
    parser.add_argument("--listen", required=True, type=_listen_address, metavar="HOST:PORT",
                        help="address to serve routers on")
    parser.add_argument("--max-memory", type=_positive(parse_size, " bytes"),
                        default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                        help=f"cap on all groups' bytes (default {DEFAULT_MAX_MEMORY})")
    auth = parser.add_argument_group("authentication of routers (either, or both)")
    auth.add_argument("--tls-ca", metavar="FILE", help="mutual TLS: CA that signed the routers' certificates")
    auth.add_argument("--tls-cert", metavar="FILE", help="mutual TLS: this node's certificate")
    auth.add_argument("--tls-key", metavar="FILE", help="mutual TLS: this node's private key")
    auth.add_argument("--secret-file", metavar="FILE",
                      help="shared secret the routers must prove they know (or RINGCACHE_SECRET)")
    auth.add_argument("--handshake-timeout", type=_positive(parse_duration), metavar="DURATION",
                      default=DEFAULT_HANDSHAKE_TIMEOUT,
                      help=f"a peer must authenticate within this (default {DEFAULT_HANDSHAKE_TIMEOUT})")
    parser.add_argument("--allow-policy", action="append", type=_policy, default=[],
                        metavar="python:module:Class",
                        help="a plugin core routers may name (repeatable); no other is ever imported")
    parser.add_argument("--allow-policy-file", metavar="FILE",
                        help="more allowed plugin cores, one python:module:Class a line")
    parser.add_argument("--frame-timeout", type=_positive(parse_duration), metavar="DURATION",
                        default=DEFAULT_FRAME_TIMEOUT,
                        help=f"a frame begun must arrive whole within this (default "
                             f"{DEFAULT_FRAME_TIMEOUT})")
    parser.add_argument("--max-connections", type=_positive_int, default=DEFAULT_MAX_CONNECTIONS,
                        metavar="N", help=f"open connections at most (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--backlog", type=_backlog, default=DEFAULT_BACKLOG, metavar="N",
                        help=f"new connections the kernel queues before the node accepts them "
                             f"(default {DEFAULT_BACKLOG}, as memcached's -b)")
    return parser


class _Refused(ValueError):
    """Bad input found after parsing: one line, exit status 2."""


def _allowed_policies(args) -> list[str]:
    allowed = list(args.allow_policy)
    if args.allow_policy_file:
        try:
            with open(args.allow_policy_file, encoding="utf-8") as f:
                lines = f.read(1 << 20).splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Refused(f"--allow-policy-file: cannot read {args.allow_policy_file}: {exc}") from None
        allowed += [line for line in (raw.split("#", 1)[0].strip() for raw in lines) if line]
    from storage_node.cores import PolicyError, load_core

    for policy in allowed:  # imported now, so a typo stops the node here, not a CONFIGURE later
        try:
            load_core(policy, allowed)
        except PolicyError as exc:
            raise _Refused(f"allowed policies: {exc}") from None
    return allowed


def _credentials(args):
    """(shared secret or None, TLS server options or None) from the command line."""
    from shared.handshake import read_secret

    tls_args = (args.tls_ca, args.tls_cert, args.tls_key)
    if any(tls_args) and not all(tls_args):
        raise _Refused("mutual TLS needs --tls-ca, --tls-cert and --tls-key together")
    try:
        secret = read_secret(args.secret_file)
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    tls = None
    if all(tls_args):
        from shared.tls import TLSConfigError, server_options

        try:
            tls = server_options(args.tls_cert, args.tls_key, ca=args.tls_ca)
        except TLSConfigError as exc:
            raise _Refused(str(exc)) from None
    return secret, tls


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        secret, tls = _credentials(args)
        allowed = _allowed_policies(args)
    except SystemExit as exc:  # bad input (its one line is printed) or --help
        return exc.code or 0
    except _Refused as exc:
        print(f"ringcache node: {exc}", file=sys.stderr)
        return 2

    # Imported only now: installing the reactor is the business of a process that serves.
    from shared.reactor import install

    install()  # the data plane's reactor, before anything imports one
    from twisted.internet import reactor
    from twisted.logger import Logger

    from shared.backlog import capped_warning
    from shared.net import format_address, is_loopback, tcp_server
    from storage_node.node import Node

    log = Logger(namespace="ringcache.node")

    def warn(text: str) -> None:
        log.warn("{text}", text=text)

    node = Node(args.max_memory, log=warn, allowed_policies=allowed)
    factory = _factory(node, reactor, args, secret, tls, warn)
    host, port = args.listen
    endpoint = tcp_server(reactor, host, port, backlog=args.backlog)
    exit_code = 0
    auth = " and ".join(name for name, on in (("mutual TLS", tls), ("a shared secret", secret)) if on)
    if not auth and not is_loopback(host):
        warn(f"WARNING: {format_address(host, port)} is reachable from other hosts and this node "
             "asks no one to authenticate: anyone who reaches it can read, write and wipe every "
             "group. Start it with --secret-file or --tls-ca/--tls-cert/--tls-key.")

    def listening(listening_port) -> None:
        # Logging starts only once we serve (events so far are buffered and replayed),
        # so a failure to listen stays the one line below.
        start_logging()
        capped = capped_warning(args.backlog)
        if capped:
            warn(capped)
        address = listening_port.getHost()
        print(f"ringcache node listening on {format_address(address.host, address.port)}"
              + (f" (routers authenticate with {auth})" if auth else ""), flush=True)
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
        lambda: endpoint.listen(factory).addCallbacks(listening, failed)
    )
    reactor.run()
    return exit_code


def _factory(node, reactor, args, secret, tls, warn):
    """What the node port serves, outside in: the connection cap, then (with a secret or
    TLS) the authentication gate, then the frame protocol."""
    from shared.throttle import LogThrottle
    from storage_node.protocol import ConnectionCap, NodeFactory

    factory = NodeFactory(node, reactor=reactor, frame_timeout=args.frame_timeout, log_line=warn)
    gate = None
    if secret is not None or tls is not None:
        from shared.gate import server_factory

        refusals = LogThrottle(warn, reactor.seconds, REFUSALS_LOGGED_EVERY)
        factory, gate = server_factory(
            factory, reactor, secret=secret, tls=tls, timeout=args.handshake_timeout,
            refused=lambda peer, why: refusals(f"refused {peer}: {why}"))
    return ConnectionCap(
        factory, args.max_connections,
        count=lambda: node.connections + (gate.pending if gate is not None else 0),
        refused=LogThrottle(warn, reactor.seconds, REFUSALS_LOGGED_EVERY), answer=gate is None)
