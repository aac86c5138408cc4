"""twisted.web with bounds: what one HTTP client may cost the router before it is refused.

- The request line is at most MAX_URL bytes (414), the header lines MAX_HEADERS more (431).
- A started request, head and body, must arrive within ``limits.command_timeout`` (408):
  a slow-loris head or a body shorter than its Content-Length is answered and closed.
- The site's ``admit`` decides on a request's head, before a byte of body is read: it may
  refuse it (401, 429, 413 for a Content-Length over the route's limit) and names the
  body's limit, against which a body of unannounced length (chunked) is counted as it
  arrives and refused (413) once past it: never buffered beyond the limit.
- At most ``limits.max_connections`` connections; the next ones get a 503, and the
  refusals are logged once per LOG_INTERVAL, not once per connection.
- Connections idle between requests close after ``limits.idle_timeout`` (IDLE_TIMEOUT
  when that is 0: an HTTP client reconnects as a matter of course).

A refused request is answered with a JSON ``{"error": ...}`` and ``Connection: close``;
the rest of what the client sends is read and dropped for LINGER seconds, so that a client
still sending gets to read the answer instead of a connection reset, and then closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import Request, Site

from shared.throttle import LogThrottle

log = Logger()

MAX_URL = 16 << 10  # bytes of request line: method, URL and version
MAX_HEADERS = 16 << 10  # bytes of header lines after it
IDLE_TIMEOUT = 60.0  # seconds; for HTTP when limits.idle_timeout is 0
LINGER = 1.0  # seconds a refused connection is drained before it is closed
LOG_INTERVAL = 10.0  # seconds between two log lines about refused connections
_PHRASES = {**RESPONSES, 429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}


class HTTPError(Exception):
    """A request we refuse with ``code`` and a JSON ``{"error": message}``."""

    def __init__(self, code: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.code = code
        self.headers = headers


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


@dataclass(frozen=True)
class BodyLimit:
    """The most body bytes a route takes; ``what`` and ``name`` word the 413."""

    size: int
    what: str = "request body"
    name: str = "limit"

    def check(self, length: int, at_least: bool = False) -> None:
        if length > self.size:
            more = "at least " if at_least else ""
            raise HTTPError(413, f"{self.what} of {more}{length} bytes is over the "
                                 f"{self.name} of {self.size}")


def _response(error: HTTPError, with_body: bool = True) -> bytes:
    body = error_body(str(error))
    lines = [b"HTTP/1.1 %d %s" % (error.code, _PHRASES.get(error.code, b"Error")),
             b"Content-Type: application/json", b"Content-Length: %d" % len(body),
             b"Connection: close", *(name + b": " + value for name, value in error.headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body if with_body else b"")


def _answer_and_close(transport, response: bytes, call_later):
    """Write ``response``, then close after LINGER (the caller drops what arrives meanwhile)."""
    transport.write(response)
    return call_later(LINGER, transport.loseConnection)


class BoundedRequest(Request):
    """A request that counts its body as it arrives, against the limit its head was given."""

    body_limit: BodyLimit | None = None  # set by the channel once the head is admitted
    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or channel.refused:
            return
        self._received += len(data)
        try:
            self.body_limit.check(self._received, at_least=True)
        except HTTPError as error:
            channel.refuse(error)
            return
        super().handleContentChunk(data)


class BoundedChannel(HTTPChannel):
    MAX_LENGTH = MAX_URL  # LineReceiver's bound on any one line
    totalHeadersSize = MAX_URL + MAX_HEADERS

    refused = False
    _deadline = None  # the current request must be complete by then (an IDelayedCall)
    _closing = None  # the delayed close of a refused connection

    def connectionMade(self):
        super().connectionMade()
        self.site.connections += 1

    def connectionLost(self, reason):
        self.site.connections -= 1
        for call in (self._deadline, self._closing):
            if call is not None and call.active():
                call.cancel()
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self.refused:
            return  # answered already: the rest of the request is dropped unread
        if self._deadline is None and not self._handlingRequest:
            # The first byte of a request starts its clock (data that arrives while a
            # request is being answered is parsed, and timed, after that answer).
            timeout = self.site.limits().command_timeout
            self._deadline = self.callLater(timeout, self._too_slow, timeout)
        super().dataReceived(data)

    def _too_slow(self, timeout: float) -> None:
        self._deadline = None
        self.refuse(HTTPError(408, f"the request was not complete within {timeout:g}s"))

    def lineLengthExceeded(self, line):
        # In line mode with no request yet, the line too long is the request line.
        if not self.requests:
            self.refuse(HTTPError(414, f"the request line is over the limit of {MAX_URL} bytes"))
        else:
            self.refuse(HTTPError(431, f"a header line is over the limit of {MAX_URL} bytes"))

    def allHeadersReceived(self):
        request = self.requests[-1]
        try:
            request.body_limit = self.site.admit(self._command, self._path,
                                                 request.requestHeaders, self.length)
        except HTTPError as error:
            # Before HTTPChannel reads on: no 100 Continue, no body file, no body.
            self.refuse(error, with_body=self._command != b"HEAD")
            return
        super().allHeadersReceived()

    def allContentReceived(self):
        if self.refused:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().allContentReceived()

    def refuse(self, error: HTTPError, with_body: bool = True) -> None:
        """Answer ``error`` in place of the request being received, and close."""
        if self.refused or self.transport.disconnecting:
            return
        self.refused = True
        self.setTimeout(None)
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._closing = _answer_and_close(self.transport, _response(error, with_body),
                                          self.callLater)


class _Unwelcome(Protocol):
    """A connection past the cap: answered 503 without reading a request, then closed."""

    def __init__(self, response: bytes, call_later):
        self.response = response
        self.call_later = call_later
        self._closing = None

    def connectionMade(self):
        self._closing = _answer_and_close(self.transport, self.response, self.call_later)

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        if self._closing is not None and self._closing.active():
            self._closing.cancel()


class BoundedSite(Site):
    """A Site whose channels are bounded by ``limits()`` (a LimitsConfig, asked at each
    use so a reload applies) and whose requests pass ``admit(method, uri, headers,
    length) -> BodyLimit`` (raising HTTPError) on their head."""

    protocol = BoundedChannel
    requestFactory = BoundedRequest

    def __init__(self, resource, *, admit, limits, reactor, **kwargs):
        super().__init__(resource, reactor=reactor, **kwargs)
        self.admit = admit
        self.limits = limits
        self.connections = 0
        self.refused_connections = 0  # all time, for tests and curiosity
        # A flood of connections must not become a flood of log lines.
        self._refusals = LogThrottle(lambda text: log.warn("{text}", text=text),
                                     reactor.seconds, LOG_INTERVAL)

    def buildProtocol(self, addr):
        limits = self.limits()
        if self.connections >= limits.max_connections:
            self._refused_one(limits.max_connections)
            error = HTTPError(503, f"too many connections (limit {limits.max_connections})")
            return _Unwelcome(_response(error), self.reactor.callLater)
        channel = super().buildProtocol(addr)
        channel.timeOut = limits.idle_timeout or IDLE_TIMEOUT
        return channel

    def _refused_one(self, limit: int) -> None:
        self.refused_connections += 1
        self._refusals(f"HTTP: refused a connection over the limit of {limit} "
                       "(limits.max_connections)")
