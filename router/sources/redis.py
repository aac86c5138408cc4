"""The `redis: redis://host:port/db` source: GET of the key, through an optional key template.

txredisapi speaks the protocol on the reactor (no threads) and keeps ``POOL_SIZE``
connections, reconnecting with backoff. The pool's own request queueing waits for a
connection however long Redis is down, so this source picks a live connection itself
and, when there is none and the last attempt failed, fails at once with that reason:
an origin that is down is an immediate error to the client, never a hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from router.cluster.errors import SourceError
from router.sources.urls import masked

try:
    import txredisapi
except ImportError:
    raise ImportError("the redis source needs txredisapi: pip install 'ringcache[redis]'") from None

POOL_SIZE = 2  # requests are pipelined, so one connection carries the load; two survive one's loss
RECONNECT_MAX_DELAY = 2.0  # seconds; how long after Redis comes back loads may still fail


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where and how to connect, from a redis://, rediss:// or unix:// URL."""

    scheme: str
    host: str = "localhost"
    port: int = 6379
    path: str = ""  # the socket of a unix:// URL
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS) or
        ``unix://[[user]:password@]/path/to/socket[?db=N]``; raises ValueError saying what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        credentials = {"username": unquote(parts.username) if parts.username else None,
                       "password": unquote(parts.password) if parts.password else None}
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if parts.scheme == "unix":
            if not parts.path or set(query) - {"db"}:
                raise ValueError("expected unix:///path/to/redis.sock with at most ?db=N")
            return cls("unix", path=parts.path, db=_db(query.get("db", "0")), **credentials)
        if query or parts.fragment:
            raise ValueError("a redis:// URL takes the database as its path, like /0, and no query")
        return cls(parts.scheme, parts.hostname or "localhost", port,
                   db=_db(parts.path.lstrip("/") or "0"), **credentials)

    def endpoint(self, reactor, timeout: float):
        if self.scheme == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if self.scheme == "rediss":
            from twisted.internet.ssl import optionsForClientTLS  # needs pyOpenSSL: twisted[tls]

            endpoint = wrapClientTLS(optionsForClientTLS(self.host), endpoint)
        return endpoint


def _db(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"the database must be a number, got {text!r}")
    return int(text)


@implementer(IStreamClientEndpoint)
class _Watched:
    """An endpoint that tells the source about every connection attempt and its end."""

    def __init__(self, endpoint, source: RedisSource):
        self.endpoint = endpoint
        self.source = source

    def connect(self, factory) -> Deferred:
        d = self.endpoint.connect(factory)
        d.addCallbacks(self.source._connected, self.source._connect_failed)
        return d


class RedisSource:
    def __init__(self, url: str, reactor, timeout: float, key_template: str = "{key}"):
        self.name = masked(url)
        self.reactor = reactor
        self.timeout = timeout
        self.key_template = key_template.encode()
        try:
            address = RedisAddress.parse(url)
        except ValueError as exc:
            raise ValueError(f"source {self.name}: {exc}") from None
        self._live: list = []  # connections that finished AUTH/SELECT, in round-robin order
        self._waiting: list[Deferred] = []  # loads that arrived before the first attempt ended
        self._down: str | None = None  # why there is no connection; None while connecting
        self._loss = ""  # why the last connection closed (txredisapi says only "Lost connection")
        self._factory = txredisapi.RedisFactory(
            None, address.db or None, POOL_SIZE, isLazy=True, charset=None,
            password=address.password, username=address.username,
            replyTimeout=timeout, convertNumbers=False)
        self._factory.maxDelay = RECONNECT_MAX_DELAY
        self._factory.initialDelay = RECONNECT_MAX_DELAY / 10
        # txredisapi reports a refused AUTH or SELECT only here, then stops reconnecting.
        self._factory.deferred.addErrback(lambda f: self._set_down(f.getErrorMessage()))
        self._factory.startConnecting(_Watched(address.endpoint(reactor, timeout), self))

    # -- connection events ---------------------------------------------------------------

    def _connected(self, protocol):
        # ``protocol`` is the reconnecting service's proxy; whenConnected gives the protocol itself.
        protocol.whenConnected().addCallback(self._ready)
        return protocol

    def _connect_failed(self, failure):
        self._set_down(failure.getErrorMessage())
        return failure  # the pool's reconnecting service backs off and tries again

    def _ready(self, protocol) -> None:
        lost = protocol.connectionLost

        def connection_lost(reason):
            self._lost(protocol, reason.getErrorMessage())
            return lost(reason)  # fails the replies in flight with a bare "Lost connection"

        protocol.connectionLost = connection_lost
        self._live.append(protocol)
        self._down = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:  # a load that timed out while waiting
                d.callback(protocol)

    def _lost(self, protocol, reason: str) -> None:
        self._loss = reason
        if protocol in self._live:
            self._live.remove(protocol)
        if not self._live:
            self._set_down(f"lost the connection: {reason}")

    def _set_down(self, reason: str) -> None:
        if self._live:
            return
        self._down = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.errback(SourceError(self.name, f"cannot connect: {reason}"))

    def _connection(self) -> Deferred:
        """A live connection: at once, after the first attempt, or a SourceError if Redis is down."""
        if self._live:
            self._live.append(self._live.pop(0))
            return succeed(self._live[-1])
        if self._down is not None:
            return fail(SourceError(self.name, f"cannot connect: {self._down}"))
        d = Deferred()
        self._waiting.append(d)
        return d

    # -- the Source interface ------------------------------------------------------------

    def load(self, key: str) -> Deferred:
        redis_key = self.key_template.replace(b"{key}", key.encode("utf-8", "surrogateescape"))
        d = self._connection()
        d.addCallback(lambda connection: connection.get(redis_key))
        d.addTimeout(self.timeout, self.reactor)  # GET answers bytes, or None for a missing key
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        if failure.check(SourceError):
            return failure
        if failure.check(DeferredTimeout, txredisapi.TimeoutError):
            raise SourceError(self.name, f"no answer within {self.timeout:g}s")
        if failure.check(txredisapi.ConnectionError):
            raise SourceError(self.name, f"lost the connection: {self._loss}")
        raise SourceError(self.name, failure.getErrorMessage())

    def check(self) -> Deferred:
        d = self._connection()
        d.addCallback(lambda connection: connection.ping())
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed)
        return d

    def close(self) -> Deferred:
        self._live.clear()
        self._set_down("the source is closed")
        return self._factory.disconnect()
