"""The `ringcache` console script: one front door that hands each role its arguments.

The roles are imported lazily so that `ringcache node` never imports the router.
"""

from __future__ import annotations

import argparse
import sys

USAGE = """usage: ringcache COMMAND [ARGS]

roles:
  up [-c topology.yaml]                  nodes on this host + one router (standalone)
  router [-c topology.yaml | -c etcd://HOST:PORT/KEY] [--memcache ADDR] [--http ADDR]
                                         one router; the topology from a file or etcd
  node --listen HOST:PORT [--max-memory SIZE]   one storage node
       [--secret-file F] [--tls-ca F --tls-cert F --tls-key F]   routers must authenticate
       [--allow-policy python:module:Class] [--max-connections N] [--backlog N]

tools:
  certs DIR [--node HOST ...] [--router-host HOST ...]   a throwaway CA and certificates
  topology push FILE URL [--yes] | topology get URL [--json]   the routers' topology in etcd

clients of the router's HTTP port (--router URL):
  get GROUP KEY | set GROUP KEY VALUE [--ttl S] | delete GROUP KEY
  stats | ring | where GROUP KEY | reload | plan NEW_TOPOLOGY
"""

ROLE_MODULES = {
    "node": "storage_node.main",
    "router": "router.process.main",
    "up": "router.cli.up",
    "certs": "shared.certs",
    "topology": "router.cli.topology",
}
CLIENT_COMMANDS = {"get", "set", "delete", "stats", "ring", "where", "reload", "plan"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad input as one line on stderr and exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def start_logging(stream=None) -> None:
    """Send twisted.logger events to stderr as text lines."""
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(stream or sys.stderr)],
                                     redirectStandardIO=False)


def usage_error(message: str) -> int:
    """One clear line on stderr and exit status 2, as every bad-input path must."""
    print(f"ringcache: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return usage_error("missing command (see ringcache --help)")
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command in ROLE_MODULES:
        module_name = ROLE_MODULES[command]
    elif command in CLIENT_COMMANDS:
        module_name = "router.cli.client"
        rest = argv
    else:
        return usage_error(f"unknown command {command!r} (see ringcache --help)")
    import importlib

    module = importlib.import_module(module_name)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
