"""`ringcache up`: run this host's storage nodes and one router as supervised child processes."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)

from router.cli.children import is_on_this_host, node_certificate
from router.config.topology import TopologyError, load_topology
from router.process.supervise import DIE_WITH_PARENT, LOG_PREFIX
from shared.cli import log_line

DEFAULT_TOPOLOGY = "topology.yaml"


class _UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # argparse would print the usage block and exit; the contract is one line.
        raise _UsageError(message)


def main(argv: list[str]) -> int:
    parser = _Parser(prog="ringcache up", description="Run this host's nodes and one router.")
    parser.add_argument("-c", "--config", default=DEFAULT_TOPOLOGY, metavar="FILE",
                        help=f"topology file (default {DEFAULT_TOPOLOGY})")
    try:
        args = parser.parse_args(argv)
        topology = load_topology(args.config)
        if topology.security.node_tls:
            missing = [f for f in node_certificate(topology) if not os.path.isfile(f)]
            if missing:
                raise _UsageError(f"security: mutual TLS needs this host's nodes' certificate "
                                  f"too: no {missing[0]} (ringcache certs writes node.pem and "
                                  f"node.key beside router.pem)")
    except (_UsageError, TopologyError) as exc:
        print(f"{LOG_PREFIX}{exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help printed its text
        return exc.code or 0
    hostname = socket.gethostname()
    launcher = (sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()))

    # Imported only now: installing the reactor is the business of a process that serves.
    from twisted.internet import reactor

    from router.cli.follow import Standalone

    # Only warnings and errors: a bug of ours must show, the HTTP polling's chatter need not.
    observer = FilteringLogObserver(FileLogObserver(sys.stderr, lambda e: log_line(e) or None),
                                    [LogLevelFilterPredicate(LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    standalone = Standalone(reactor, topology, launcher,
                            lambda host: is_on_this_host(host, hostname=hostname))
    return standalone.run()
