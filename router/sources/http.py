"""The `http: "http://origin/path/{key}"` source: GET the URL with the key in it.

200 is the value, 404 is "not found", any other answer is an error naming the status.
Connections are kept in a persistent pool, so a busy origin costs one TCP handshake per
connection rather than per load.
"""

from __future__ import annotations

from base64 import b64encode
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeout
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PartialDownloadError,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
    readBody,
)
from twisted.web.http_headers import Headers

from router.cluster.errors import SourceError
from router.sources.urls import masked

MAX_IDLE_CONNECTIONS = 10  # kept open to the origin; more may be opened under load, then closed


def url_for(template: str, key: str) -> bytes:
    """The template with every ``{key}`` replaced by the key's bytes, percent-encoded whole
    (``/``, spaces and ``?`` included), so a key always fills exactly its place."""
    quoted = quote(key.encode("utf-8", "surrogateescape"), safe="")
    return template.replace("{key}", quoted).encode("ascii")


def _without_credentials(template: str) -> tuple[str, Headers]:
    """The template without ``user:password@``, and the request headers, which carry
    them as HTTP basic authentication (the agent does not read them from the URL)."""
    headers = Headers({b"User-Agent": [b"ringcache"]})
    parts = urlsplit(template)
    if parts.username is None:
        return template, headers
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    headers.addRawHeader(b"Authorization", b"Basic " + b64encode(credentials.encode()))
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), headers


class HTTPSource:
    def __init__(self, template: str, reactor, timeout: float):
        self.name = masked(template)
        if not template.isascii():
            raise ValueError(f"source {self.name}: the URL must be ASCII (percent-encode the rest)")
        self.template, self.headers = _without_credentials(template)
        self.reactor = reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = MAX_IDLE_CONNECTIONS
        self.agent = Agent(reactor, connectTimeout=timeout, pool=self.pool)

    def load(self, key: str) -> Deferred:
        d = self.agent.request(b"GET", url_for(self.template, key), self.headers)
        d.addCallback(self._answered)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed)
        return d

    def _answered(self, response) -> Deferred:
        # The body is read even when it is thrown away, so the connection can be reused.
        d = readBody(response)
        if response.code == 200:
            return d.addErrback(_body_ended_by_close)
        if response.code == 404:
            return d.addBoth(lambda _: None)
        error = SourceError(self.name, f"HTTP {response.code} {response.phrase.decode('latin-1')}")
        return d.addBoth(lambda _: Failure(error))

    def _failed(self, failure):
        if failure.check(SourceError):
            return failure
        if failure.check(ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed):
            failure = failure.value.reasons[0]  # the connection's own error, not a list of them
        # The timeout cancels the request; the agent may report that wrapped as above.
        if failure.check(DeferredTimeout, CancelledError):
            raise SourceError(self.name, f"no answer within {self.timeout:g}s")
        raise SourceError(self.name, failure.getErrorMessage())

    def check(self) -> Deferred:
        """Any answer to a HEAD of the URL up to ``{key}`` means the origin is up."""
        url = self.template.partition("{key}")[0].encode("ascii")
        d = self.agent.request(b"HEAD", url, self.headers)
        d.addCallback(readBody)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed)
        return d

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections()


def _body_ended_by_close(failure) -> bytes:
    # A body sent without a length ends when the origin closes the connection; readBody
    # calls that a possible loss, but it is how HTTP/1.0 servers end every body.
    failure.trap(PartialDownloadError)
    return failure.value.response
