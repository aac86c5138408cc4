"""What `ringcache up` starts on this host and what it says it started: the nodes of the
topology that live here, their command lines, the router's, and the banner.

Both halves of `ringcache up` use it: the command line (router/cli/up.py) and the
supervisor that follows the router's ring (router/cli/follow.py).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence

from router.cli.tables import shorten
from router.config.topology import Address, NodeSpec, Topology
from router.process.supervise import ChildSpec
from shared.units import format_size

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


NODE_READY = "ringcache node listening on"  # what a node prints once it listens
ROUTER_READY = "ringcache router: memcached on"  # and a router (router/process/main.py)


def plan_children(
    topology: Topology, launcher: Sequence[str], on_this_host: Callable[[str], bool]
) -> tuple[list[ChildSpec], list[NodeSpec]]:
    """The children to start (this host's nodes, then the router) and the nodes left to other hosts.

    ``launcher`` is the command that runs ``ringcache`` with the arguments appended.
    """
    local = [node for node in topology.nodes if on_this_host(node.address.host)]
    remote = [node for node in topology.nodes if node not in local]
    children = [node_spec(topology, node.name, str(node.address), launcher) for node in local]
    children.append(router_spec(topology, launcher))
    return children, remote


def node_spec(topology: Topology, name: str, address: str, launcher: Sequence[str]) -> ChildSpec:
    """How `up` runs node ``name`` at ``address``, with what the topology asks of nodes."""
    memory = format_size(node_max_memory(topology))
    return ChildSpec(name, (*launcher, "node", "--listen", address, "--max-memory", memory,
                            "--backlog", str(topology.limits.backlog),
                            *node_trust_args(topology)), ready=NODE_READY)


def router_spec(topology: Topology, launcher: Sequence[str]) -> ChildSpec:
    return ChildSpec("router", (*launcher, "router", "-c", os.path.abspath(topology.path)),
                     ready=ROUTER_READY)


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


def reachable(address: Address) -> str:
    """``address`` as a client dials it: a wildcard listen address means loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    return str(Address(host, address.port))


def banner(topology: Topology, started_nodes: int, digest: str | None,
           down: dict[str, str] | None = None) -> str:
    """What `up` prints once the router answers and has tried every node: where and how
    to connect, and which nodes are down (``down``: name -> why)."""
    nodes = len(topology.nodes)
    head = f"ringcache is up: {nodes} node{'s' if nodes != 1 else ''}"
    if started_nodes != nodes:
        head += f" ({started_nodes} on this host)"
    if down:
        head += f", {len(down)} down"
    if digest:
        head += f", router digest {digest}"
    memcache, http = reachable(topology.router.memcache), reachable(topology.router.http)
    scheme = "https" if topology.router.http_tls else "http"
    group = topology.router.default_group
    host, _, port = memcache.rpartition(":")
    lines = [head]
    lines += [f"  down:       {name}: {shorten(why, 60)}" for name, why in (down or {}).items()]
    lines += [
        f"  memcached:  {memcache}   (e.g. printf 'get {group}:42\\r\\n' | nc -q1 {host.strip('[]')} {port})",
        f"  HTTP:       {scheme}://{http}/v1/{group}/42",
        f"  status:     {scheme}://{http}/",
        f"  stop:       Ctrl-C",
    ]
    return "\n".join(lines) + "\n"
