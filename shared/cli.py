"""The `ringcache` console script: one front door that hands each role its arguments.

The roles are imported lazily so that `ringcache node` never imports the router.
"""

from __future__ import annotations

import argparse
import re
import sys

USAGE = """usage: ringcache COMMAND [ARGS]

roles:
  up [-c topology.yaml] [--data-dir DIR]   nodes on this host + one router (standalone)
  router [-c topology.yaml | -c etcd://HOST:PORT/KEY] [--memcache ADDR] [--http ADDR]
                                         one router; the topology from a file or etcd
  node --listen HOST:PORT [--max-memory SIZE]   one storage node
       [--secret-file F] [--tls-ca F --tls-cert F --tls-key F]   routers must authenticate
       [--allow-policy python:module:Class] [--max-connections N] [--backlog N]
       [--data-dir DIR [--snapshot-every D] [--max-snapshot-age D] [--name N]]   keep the cache

tools:
  certs DIR [--node HOST ...] [--router-host HOST ...]   a throwaway CA and certificates
  topology push FILE URL [--yes] | topology get URL [--json]   the routers' topology in etcd

clients of the router's HTTP port (router, TLS and token from -c topology.yaml,
or --router URL; --json for scripts; --timeout DURATION, default 5s):
  get GROUP KEY | set GROUP KEY VALUE [--ttl S] | delete GROUP KEY
  stats | ring | where GROUP KEY | reload | plan NEW_TOPOLOGY | hot [GROUP] [--top N]
  backup FILE [--group G] | restore FILE [--group G] | keys GROUP [--prefix P] [--limit N]

ringcache --version
"""

ROLE_MODULES = {
    "node": "storage_node.main",
    "router": "router.process.main",
    "up": "router.cli.up",
    "certs": "shared.certs",
    "topology": "router.cli.topology",
}
CLIENT_COMMANDS = {"get", "set", "delete", "stats", "ring", "where", "reload", "plan", "hot"}
TRANSFER_COMMANDS = {"backup", "restore", "keys"}  # every entry, streamed: router.cli.backup


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad input as one line on stderr and exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


# Twisted's own chatter, which names classes and objects rather than saying anything an
# operator acts on: ports opening and closing, factories, the reactor's start and stop.
_NOISE = re.compile(r".* starting on \S+$|^\(\w+ Port \d+ Closed\)$|^(Starting|Stopping) "
                    r"factory |^Main loop terminated\.$|^Received SIG\w+, shutting down\.$")


def log_line(event) -> str | None:
    """One log event as the line an operator reads (time, WARNING:/ERROR: when it is one,
    the message, and a traceback for our bugs), or None for Twisted's chatter."""
    from twisted.logger import LogLevel, formatEvent, formatTime

    text = formatEvent(event)
    if _NOISE.match(text):
        return None
    level = event.get("log_level")
    word = {LogLevel.warn: "WARNING: ", LogLevel.error: "ERROR: ",
            LogLevel.critical: "ERROR: "}.get(level, "")
    if word and text.startswith(word.split(":")[0]):
        word = ""
    line = f"{formatTime(event.get('log_time'), '%Y-%m-%d %H:%M:%S')} {word}{text}\n"
    failure = event.get("log_failure")
    if failure is not None:
        line += failure.getTraceback()
    return line


def start_logging(stream=None) -> None:
    """Send twisted.logger events to stderr as lines an operator reads (log_line)."""
    from twisted.logger import FileLogObserver, globalLogBeginner

    observer = FileLogObserver(stream or sys.stderr, lambda event: log_line(event) or None)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def usage_error(message: str) -> int:
    """One clear line on stderr and exit status 2, as every bad-input path must."""
    print(f"ringcache: {message}", file=sys.stderr)
    return 2


def version() -> str:
    """The installed distribution's version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ringcache")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return usage_error("missing command (see ringcache --help)")
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] in ("-V", "--version", "version"):
        print(f"ringcache {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in ROLE_MODULES:
        module_name = ROLE_MODULES[command]
    elif command in CLIENT_COMMANDS or command in TRANSFER_COMMANDS:
        module_name = "router.cli.client" if command in CLIENT_COMMANDS else "router.cli.backup"
        rest = argv
    else:
        return usage_error(f"unknown command {command!r} (see ringcache --help)")
    import importlib

    module = importlib.import_module(module_name)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
