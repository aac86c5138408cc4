"""The memcached listener: a MemcacheConnection (router/memcache/connection.py) per
client, within the limits of topology.yaml (a cap on connections, their timeouts, and the
input budget every connection's unfinished commands share).
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from router.config.topology import LimitsConfig
from router.memcache import text as mc
from router.memcache.connection import MemcacheConnection
from router.memcache.detail import PrefixStats
from router.memcache.watch import Watchers
from shared.connections import ConnectionBounds, Refusal
from shared.throttle import LogThrottle

log = Logger()

TOO_MANY_CONNECTIONS = mc.server_error("too many connections")


class MemcacheFactory(Factory):
    """Builds a protocol per client, within ``limits``: past ``max_connections`` (lowered
    to what the file descriptor limit allows, when given) a client is told why and closed."""

    noisy = False

    def __init__(self, router, reactor, limits: LimitsConfig = LimitsConfig(),
                 fd_limit: int | None = None):
        self.router = router
        self.reactor = reactor
        self.total_connections = 0
        self.started = reactor.seconds()
        self.fd_limit = fd_limit
        self.held = 0  # bytes of unfinished commands over every connection
        self.starved: set[MemcacheConnection] = set()
        self.prefixes = PrefixStats()  # stats detail on|off|dump
        self.watchers = Watchers()  # watch (router/memcache/watch.py)
        # What a client may repeat at will (cache_memlimit, HTTP request lines): one line
        # per interval (shared/throttle.py).
        self.notice = LogThrottle(lambda text: log.info("{text}", text=text), reactor.seconds)
        self.bounds = ConnectionBounds(reactor, 0, what="memcached clients",
                                   log=lambda text: log.warn("{text}", text=text))
        self.apply_limits(limits)

    @property
    def reads_each_key(self) -> bool:
        """Whether gets must be told of key by key (``stats detail on``, or a watcher of
        fetches): they then leave the data plane's one-call path."""
        return self.prefixes.enabled or self.watchers.fetching

    @property
    def connections(self) -> int:
        """Client connections open now (its bounds count them for the cap)."""
        return len(self.bounds)

    def apply_limits(self, limits: LimitsConfig) -> None:
        """Take ``limits`` (at start and on reload); open connections keep going."""
        self.limits = limits
        cap = limits.max_connections
        if self.fd_limit is not None and self.fd_limit < cap:
            cap = self.fd_limit
            log.warn("limits.max_connections {wanted} lowered to {cap}: the process may open "
                     "only so many files (raise `ulimit -n`)", wanted=limits.max_connections,
                     cap=cap)
        self.bounds.reconfigure(cap, limits.idle_timeout, limits.command_timeout)

    def hold(self, protocol: MemcacheConnection, held: int) -> None:
        """``protocol``'s parser now holds ``held`` bytes of an unfinished command.

        Past the input budget a connection in the middle of a value waits (unless it alone
        holds them all: one value must always be able to finish), and the waiting resume
        once the total is back under three quarters of the budget."""
        self.held += held - protocol.held
        protocol.held = held
        budget = self.limits.input_buffer
        if held and self.held > budget and held < self.held:
            self.starved.add(protocol)
            protocol.starve(True)
        elif self.starved and self.held <= budget * 3 // 4:
            starved, self.starved = self.starved, set()
            for waiting in starved:
                waiting.starve(False)
        if not held and protocol in self.starved:
            self.starved.discard(protocol)
            protocol.starve(False)

    def buildProtocol(self, addr):
        if not self.bounds.admit():
            return Refusal(TOO_MANY_CONNECTIONS)
        return MemcacheConnection(self)

    def stopFactory(self):
        self.bounds.stop()
