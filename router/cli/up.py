"""`ringcache up`: run this host's storage nodes and one router as supervised child processes."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from router.config.topology import (
    Address,
    NodeSpec,
    Topology,
    TopologyError,
    load_topology,
)
from router.process.supervise import DIE_WITH_PARENT, LOG_PREFIX, Child, ChildSpec
from shared.units import format_size

DEFAULT_TOPOLOGY = "topology.yaml"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve_addresses(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to; none when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].partition("%")[0]) for info in infos]


def can_bind(address: IPAddress) -> bool:
    """Whether ``address`` belongs to a local interface: the kernel lets us bind only to those."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((str(address), 0))
    except OSError:
        return False
    return True


def is_on_this_host(
    host: str,
    *,
    hostname: str,
    resolve: Callable[[str], list[IPAddress]] = resolve_addresses,
    bindable: Callable[[IPAddress], bool] = can_bind,
) -> bool:
    """Whether ``host`` names this machine: loopback, its hostname, or an address of a local interface."""
    if host.lower() in ("localhost", hostname.lower()):
        return True
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = resolve(host)
    return any(a.is_loopback or bindable(a) for a in addresses)


def node_max_memory(topology: Topology) -> int:
    """A node's --max-memory: every group's max_bytes, since each group has that budget on each node."""
    return sum(group.max_bytes for group in topology.groups.values())


def plan_children(
    topology: Topology, launcher: Sequence[str], on_this_host: Callable[[str], bool]
) -> tuple[list[ChildSpec], list[NodeSpec]]:
    """The children to start (this host's nodes, then the router) and the nodes left to other hosts.

    ``launcher`` is the command that runs ``ringcache`` with the arguments appended.
    """
    memory = format_size(node_max_memory(topology))
    local = [node for node in topology.nodes if on_this_host(node.address.host)]
    remote = [node for node in topology.nodes if node not in local]
    trust = node_trust_args(topology)
    children = [
        ChildSpec(node.name, (*launcher, "node", "--listen", str(node.address), "--max-memory", memory,
                              "--backlog", str(topology.limits.backlog), *trust))
        for node in local
    ]
    children.append(ChildSpec("router", (*launcher, "router", "-c", os.path.abspath(topology.path))))
    return children, remote


def node_trust_args(topology: Topology) -> tuple[str, ...]:
    """What this host's nodes need to accept its router and to build its groups: the
    topology's shared secret, the node certificate `ringcache certs` writes beside the
    router's (node.pem, node.key), and each python: policy the groups name (a node imports
    only those its command line allows)."""
    security, args = topology.security, []
    if security.secret_file:
        args += ["--secret-file", security.secret_file]
    if security.node_tls:
        cert, key = node_certificate(topology)
        args += ["--tls-ca", security.node_tls.ca, "--tls-cert", cert, "--tls-key", key]
    for policy in sorted({g.policy for g in topology.groups.values() if g.policy.startswith("python:")}):
        args += ["--allow-policy", policy]
    return tuple(args)


def node_certificate(topology: Topology) -> tuple[str, str]:
    directory = os.path.dirname(topology.security.node_tls.cert)
    return os.path.join(directory, "node.pem"), os.path.join(directory, "node.key")


def _reachable(address: Address) -> str:
    """``address`` as a client dials it: a wildcard listen address means loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    return str(Address(host, address.port))


@implementer(IPolicyForHTTPS)
class _OwnRouter:
    """HTTPS to the router `up` itself started on this host, only to learn that it is up and
    its digest: its certificate, which may name another host, is not checked."""

    def creatorForNetloc(self, hostname, port):
        return CertificateOptions()


async def wait_for_router(reactor, http: Address, interval: float = 0.2,
                          https: bool = False) -> str | None:
    """Poll the router's /healthz until it answers 200; then its ring digest, None if /v1/ring has none."""
    agent = Agent(reactor, _OwnRouter()) if https else Agent(reactor)
    base = f"{'https' if https else 'http'}://{_reachable(http)}"
    while (await _get(reactor, agent, f"{base}/healthz"))[0] != 200:
        await deferLater(reactor, interval)
    code, body = await _get(reactor, agent, f"{base}/v1/ring")
    try:
        digest = json.loads(body)["digest"] if code == 200 else None
    except (ValueError, KeyError, TypeError):
        return None
    return str(digest) if digest is not None else None


async def _get(reactor, agent: Agent, url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of GET ``url``; status 0 when there is no answer."""
    request = agent.request(b"GET", url.encode())
    request.addCallback(lambda response: readBody(response).addCallback(lambda body: (response.code, body)))
    try:
        return await request.addTimeout(timeout, reactor)
    except Exception:  # refused, reset or timed out: the router is not up (yet)
        return 0, b""


def banner(topology: Topology, started_nodes: int, digest: str | None) -> str:
    """What `up` prints once the router answers: where and how to connect."""
    nodes = len(topology.nodes)
    head = f"ringcache is up: {nodes} node{'s' if nodes != 1 else ''}"
    if started_nodes != nodes:
        head += f" ({started_nodes} on this host)"
    if digest:
        head += f", router digest {digest}"
    memcache, http = _reachable(topology.router.memcache), _reachable(topology.router.http)
    scheme = "https" if topology.router.http_tls else "http"
    group = topology.router.default_group
    host, _, port = memcache.rpartition(":")
    return (
        f"{head}\n"
        f"  memcached:  {memcache}   (e.g. printf 'get {group}:42\\r\\n' | nc {host.strip('[]')} {port})\n"
        f"  HTTP:       {scheme}://{http}/v1/{group}/42\n"
        f"  stats:      {scheme}://{http}/v1/stats\n"
        f"  stop:       Ctrl-C\n"
    )


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
    children, remote = plan_children(topology, launcher, lambda host: is_on_this_host(host, hostname=hostname))

    # Imported only now: installing the reactor is the business of a process that serves.
    from twisted.internet import reactor

    return _serve(reactor, topology, children, remote)


def _serve(reactor, topology: Topology, specs: list[ChildSpec], remote: list[NodeSpec]) -> int:
    def write(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # Only warnings and errors: a bug of ours must show, the HTTP polling's chatter need not.
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    for node in remote:
        write(f"{LOG_PREFIX}{node.name} at {node.address} is not on this host; not starting it")
    # Unbuffered, so a child's lines reach us as it writes them rather than at exit.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = [Child(spec, reactor, write, env) for spec in specs]
    router = children[-1]
    stopping = False

    def stop() -> None:
        # Once only: a second Ctrl-C while children stop must not stop a stopped reactor.
        nonlocal stopping
        if not stopping:
            stopping = True
            reactor.stop()

    def reload() -> None:
        if router.signal("HUP"):
            write(f"{LOG_PREFIX}forwarded SIGHUP to the router (pid {router.pid}): reloading the topology")

    def show_banner(digest: str | None) -> None:
        print(banner(topology, len(specs) - 1, digest), end="", flush=True)

    def started() -> None:
        # Replace the reactor's SIGINT/SIGTERM handlers (installed at startup) with ones that
        # act once. Children stay in our process group, so a terminal's Ctrl-C reaches them
        # too; a child that exits before we stop it is restarted only after a delay, which
        # the shutdown below cancels.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: reactor.callFromThread(stop))
        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reload))
        for child in children:
            child.start()
        Deferred.fromCoroutine(wait_for_router(
            reactor, topology.router.http, https=topology.router.http_tls is not None)).addCallback(show_banner)

    # The reactor waits for this Deferred before it stops, so every child is gone when run() returns.
    reactor.addSystemEventTrigger("before", "shutdown", lambda: DeferredList([c.stop() for c in children]))
    reactor.callWhenRunning(started)
    reactor.run()
    return 0
