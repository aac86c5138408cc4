"""The router's security settings at work: how it authenticates to nodes (from the current
topology's `security` block, read at each connect) and the warnings for what it exposes."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from twisted.internet.defer import fail

from router.cluster.nodeclient import NodeClient
from router.config.topology import SecurityConfig, Topology
from router.http import admin_token
from shared.gate import GatedEndpoint
from shared.handshake import SECRET_ENV, read_secret
from shared.net import is_loopback
from shared.tls import client_options, server_options


def secure(router, reactor, log: Callable[[str], None]) -> None:
    """Make every node connection of ``router`` authenticate as its topology says, check
    the client listeners' TLS files, and log what is open. Raises ValueError with one line
    naming a file that cannot be used, so the router stops before it serves."""
    credentials = NodeCredentials(lambda: router.topology.security, reactor)
    credentials.check()
    cfg = router.topology.router
    for tls in (cfg.memcache_tls, cfg.http_tls):
        if tls is not None:
            server_options(tls.cert, tls.key, tls.ca)
    NodeClient.credentials = credentials
    for line in exposure_warnings(router.topology, credentials.authenticated()):
        log(line)


class NodeCredentials:
    """Wraps each connection to a node in the authentication the topology asks for.

    ``security`` answers the current SecurityConfig, so a reload's change applies to the
    next connection made; a file replaced in place (a rotated certificate or secret) is
    read again too. A credential that cannot be loaded fails that connection, saying why.
    """

    def __init__(self, security: Callable[[], SecurityConfig], reactor,
                 environ: Mapping[str, str] = os.environ):
        self._security = security
        self._reactor = reactor
        self._environ = environ
        self._cache: dict = {}

    def wrap(self, endpoint, host: str):
        """``endpoint`` (to a node at ``host``) as the router must connect through it."""
        try:
            secret, tls = self._load(host)
        except ValueError as exc:
            return _Failing(exc)
        if secret is None and tls is None:
            return endpoint
        return GatedEndpoint(endpoint, self._reactor, secret=secret, tls=tls)

    def check(self) -> None:
        """Load everything once; raises ValueError naming the file that cannot be used."""
        self._load("localhost")

    def authenticated(self) -> bool:
        security = self._security()
        return security.node_tls is not None or self._load_secret(security) is not None

    def _load(self, host: str):
        security = self._security()
        tls = security.node_tls
        key = (security, self._environ.get(SECRET_ENV), host, _mtimes(security))
        if key not in self._cache:
            secret = self._load_secret(security)
            options = client_options(host, tls.ca, tls.cert, tls.key) if tls else None
            self._cache = {key: (secret, options)}  # only the latest: settings change rarely
        return self._cache[key]

    def _load_secret(self, security: SecurityConfig) -> bytes | None:
        try:
            return read_secret(security.secret_file, self._environ)
        except ValueError as exc:
            raise ValueError(f"security.secret_file: {exc}") from None


def _mtimes(security: SecurityConfig) -> tuple:
    tls = security.node_tls
    paths = [security.secret_file, *((tls.cert, tls.key, tls.ca) if tls else ())]
    return tuple(_mtime(p) for p in paths if p)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


class _Failing:
    """An endpoint whose every connect fails with ``error``: the node client reports it."""

    def __init__(self, error: Exception):
        self._error = error

    def connect(self, factory):
        return fail(self._error)


def exposure_warnings(topology: Topology, nodes_authenticated: bool,
                      environ: Mapping[str, str] = os.environ) -> list[str]:
    """A loud line for each way this router is open beyond this host without authentication."""
    cfg, security = topology.router, topology.security
    warnings = []
    tls = cfg.memcache_tls
    if not is_loopback(cfg.memcache.host) and (tls is None or tls.ca is None):
        warnings.append(
            f"WARNING: the memcached port {cfg.memcache} is reachable from other hosts and "
            "serves any client (as memcached does): firewall it, or require client "
            "certificates with router.memcache_tls.ca")
    token = admin_token.configured(security.token_file, environ)
    if not is_loopback(cfg.http.host) and not token and (cfg.http_tls is None or cfg.http_tls.ca is None):
        warnings.append(
            f"WARNING: the HTTP API {cfg.http} is reachable from other hosts with no admin "
            "token: anyone who reaches it can reload the topology and write keys; set "
            f"security.token_file (or {admin_token.ENV})")
    exposed = [str(n.name) for n in topology.nodes if not is_loopback(n.address.host)]
    if exposed and not nodes_authenticated:
        warnings.append(
            f"WARNING: nodes {', '.join(exposed)} are reached over the network with no "
            "authentication: anyone who reaches their ports can read, write and wipe the cache; "
            f"set security.secret_file (or {SECRET_ENV}) or security.ca/cert/key")
    return warnings
