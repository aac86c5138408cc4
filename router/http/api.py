"""The router's HTTP front end: the REST API on values, plus health, metrics and admin."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from google.protobuf.json_format import MessageToDict
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from router.http.admin_token import AdminToken, TokenUnavailable, bearer
from router.http import transfer as http_transfer
from router.cluster.errors import (NodeError, NodeTimeout, NodeUnavailable, SourceBusy, SourceError,
                           TooLarge, UnknownGroup)
from router.http import hot, metrics, status_page
from router.http.bounds import BodyLimit, BoundedSite, HTTPError, error_body
from router.http.rate_limit import TokenBucket
from router.config.topology import MAX_YAML_BYTES, TopologyError, parse_topology_text
from shared.units import parse_duration

log = Logger()

JSON = b"application/json"
OCTETS = b"application/octet-stream"
TEXT = b"text/plain; charset=utf-8"

# How each router error reads over HTTP; anything else is our bug and answers 500.
_ERROR_STATUS = (
    (UnknownGroup, 404),
    (TooLarge, 413),
    (SourceError, 502),
    (SourceBusy, 503),  # the group's loads are at their bound: try again shortly
    (NodeError, 502),
    (NodeTimeout, 504),  # a write may still be applied: its outcome is unknown
    (NodeUnavailable, 503),
)


@dataclass(frozen=True)
class Reply:
    code: int
    body: bytes = b""
    content_type: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    hit: bool = True  # a value's answer: whether its node had it (else a miss to count)


def json_reply(code: int, document) -> Reply:
    return Reply(code, json.dumps(document).encode() + b"\n", JSON)


def build_site(router, environ=os.environ) -> Site:
    admission = Admission(router, environ)
    admission.check_token(router.topology)
    # Bodies are values and topology documents, never forms: keep them as sent even
    # when a client (curl -d) labels them application/x-www-form-urlencoded.
    site = BoundedSite(RouterResource(router), admit=admission,
                       limits=lambda: router.topology.limits, reactor=router.reactor,
                       parsePOSTFormSubmission=False)
    site.noisy = False
    # No access log: a line per request would cost more than serving a cache hit;
    # requests are counted in /metrics instead.
    site.log = lambda request: None
    return site


# Bodies past these are refused on the request's head (413); a value's is item_size_max.
MAX_OTHER_BODY = 64 << 10  # bytes; routes that ignore their body
RATED = (b"/v1/reload", b"/v1/plan")  # POSTs counted against limits.reloads_per_minute
# Every entry out or in (router/http/transfer.py): for admins; a restore's body is a file.
TRANSFERS = (b"/v1/backup", b"/v1/restore")
MAX_RESTORE_BODY = 1 << 40
OPEN, READ, ADMIN = "open", "read", "admin"


def protection(method: bytes, path: bytes) -> str:
    """Who may call ``method`` on ``path`` once an admin token is configured: anyone
    (OPEN), token holders (ADMIN), or token holders when security.protect_reads (READ)."""
    if path == b"/healthz":
        return OPEN
    if path in RATED or path in TRANSFERS:
        return ADMIN
    if _is_value(path) and method not in (b"GET", b"HEAD"):
        return ADMIN
    return READ  # values, stats, ring, where, metrics; unknown paths too (they are 404s)


def _is_value(path: bytes) -> bool:
    """Whether ``path`` is /v1/{group}/{key} (or an attempt at it), as RouterResource routes."""
    return (path.startswith(b"/v1/") and not path.startswith(b"/v1/where/")
            and path not in (b"/v1/stats", b"/v1/ring", b"/v1/hot", b"/v1/keys", *RATED,
                             *TRANSFERS))


class Admission:
    """What the API decides on a request's head, before its body is read
    (router/http/bounds.py): the admin token, the reload rate, the body's limit."""

    def __init__(self, router, environ):
        self.router = router
        self.token = AdminToken(environ)
        self.reloads = TokenBucket(router.reactor.seconds)

    def __call__(self, method: bytes, uri: bytes, headers, length: int | None) -> BodyLimit:
        path = uri.partition(b"?")[0]
        topology = self.router.topology
        need = protection(method, path)
        if need == ADMIN or (need == READ and topology.security.protect_reads):
            self._authorize(topology.security, headers.getRawHeaders(b"Authorization", [None])[-1],
                            path == b"/")
        # Rated after the token, so requests without it cannot spend the admins' quota.
        if method == b"POST" and path in RATED:
            self._rate(topology.limits.reloads_per_minute)
        limit = self._body_limit(method, path)
        if length is not None:
            limit.check(length)
        return limit

    def _authorize(self, security, authorization: bytes | None, page: bool = False) -> None:
        try:
            token = self.token.required(security)
        except TokenUnavailable as exc:
            raise HTTPError(503, f"admin token unavailable: {exc}") from None
        if token is None or self.token.matches(token, authorization):
            return
        if page:  # a browser: it asks for the token (as the password) and sends it after
            raise HTTPError(401, "the status page needs the admin token (as the password)",
                            ((b"WWW-Authenticate", b'Basic realm="ringcache", charset="UTF-8"'),))
        if bearer(authorization) is None:
            raise HTTPError(401, "this needs the admin token: send Authorization: Bearer TOKEN",
                            ((b"WWW-Authenticate", b'Bearer realm="ringcache"'),))
        raise HTTPError(401, "wrong admin token", (
            (b"WWW-Authenticate", b'Bearer realm="ringcache", error="invalid_token"'),))

    def _rate(self, per_minute: int) -> None:
        wait = self.reloads.take(per_minute)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise HTTPError(429, f"more than {per_minute} reloads and plans a minute "
                                 f"(limits.reloads_per_minute); retry in {seconds}s",
                            ((b"Retry-After", b"%d" % seconds),))

    def _body_limit(self, method: bytes, path: bytes) -> BodyLimit:
        if method == b"PUT" and _is_value(path):
            return BodyLimit(self.router.item_size_max, "value", "item limit")
        if path == b"/v1/plan":
            return BodyLimit(MAX_YAML_BYTES, "topology document")
        if path == b"/v1/restore":  # (Twisted keeps a body this large in a temporary file)
            return BodyLimit(MAX_RESTORE_BODY, "backup file")
        return BodyLimit(MAX_OTHER_BODY)

    def check_token(self, topology) -> None:
        """Say so at start when the configured token cannot be read. (An API open beyond
        this host without one is among the process's exposure warnings:
        router/process/security.py.)"""
        try:
            self.token.required(topology.security)
        except TokenUnavailable as exc:
            log.error("HTTP admin API: {problem}; reloads, plans and writes are refused until "
                      "it is fixed", problem=exc)


class RouterResource(Resource):
    """One leaf resource that routes on the raw path, so keys keep their '/' and %xx."""

    isLeaf = True

    def __init__(self, router):
        super().__init__()
        self.router = router
        # path -> {method: handler(request)}; HEAD is served by GET's handler
        self._fixed = {
            b"/": {b"GET": self._status_page},
            b"/healthz": {b"GET": self._healthz},
            b"/metrics": {b"GET": self._metrics},
            b"/v1/stats": {b"GET": self._stats},
            b"/v1/ring": {b"GET": self._ring},
            b"/v1/hot": {b"GET": self._hot},
            b"/v1/reload": {b"POST": self._reload},
            b"/v1/plan": {b"POST": self._plan},
            b"/v1/backup": {b"GET": lambda request: self._transfer(http_transfer.backup, request)},
            b"/v1/restore": {b"POST": lambda request: self._transfer(http_transfer.restore, request)},
            b"/v1/keys": {b"GET": lambda request: Deferred.fromCoroutine(
                http_transfer.keys(self.router, request))},
        }
        # {method: handler(request, group, key)} under /v1/where/ and /v1/
        self._where = {b"GET": self._owner}
        self._values = {
            b"GET": self._counted("get", self._get),
            b"PUT": self._counted("set", self._set),
            b"DELETE": self._counted("delete", self._delete),
        }

    def render(self, request):
        gone = []
        request.notifyFinish().addErrback(gone.append)
        d = maybeDeferred(self._dispatch, request)
        d.addErrback(self._error_reply, request)
        d.addCallback(self._send, request, gone)
        d.addErrback(lambda failure: log.failure("HTTP response not written", failure))
        return NOT_DONE_YET

    # -- routing -------------------------------------------------------------------------

    def _dispatch(self, request):
        handlers, params = self._route(request.path)
        # Twisted itself drops the body of a response to HEAD.
        method = b"GET" if request.method == b"HEAD" else request.method
        if method not in handlers:
            allowed = sorted(handlers) + ([b"HEAD"] if b"GET" in handlers else [])
            raise HTTPError(405, f"method {_text(request.method)} not allowed on "
                                 f"{_text(request.path)}", ((b"Allow", b", ".join(allowed)),))
        return handlers[method](request, *params)

    def _route(self, path: bytes) -> tuple[dict, tuple]:
        if path in self._fixed:
            return self._fixed[path], ()
        if path.startswith(b"/v1/where/"):
            return self._where, _group_and_key(path[len(b"/v1/where/"):], path)
        if path.startswith(b"/v1/"):
            return self._values, _group_and_key(path[len(b"/v1/"):], path)
        raise HTTPError(404, f"no such endpoint: {_text(path)}")

    # -- values --------------------------------------------------------------------------

    def _counted(self, op: str, handler):
        def counted(request, group: str, key: bytes):
            started = self.router.reactor.seconds()
            return maybeDeferred(handler, request, group, key).addBoth(self._count, op, started)
        return counted

    def _get(self, request, group: str, key: bytes):
        # Loads of a miss are queued per client connection (router/cluster/loads.py).
        return self.router.get(group, key, conn=request.channel).addCallback(_item_reply)

    @staticmethod
    def _outcome(result, op: str) -> str:
        if isinstance(result, Failure):
            return "error"
        if op == "get":
            return "hit" if result.code == 200 and result.hit else "miss"
        return "ok"

    def _set(self, request, group: str, key: bytes):
        ttl = _ttl(request)
        value = request.content.read()
        return self.router.set(group, key, value, ttl).addCallback(lambda _: Reply(204))

    def _delete(self, request, group: str, key: bytes):
        return self.router.delete(group, key).addCallback(lambda _: Reply(204))

    def _count(self, result, op: str, started: float):
        stats = self.router.stats
        stats.count("http", op, self._outcome(result, op))
        stats.observe("http", op, self.router.reactor.seconds() - started)
        return result

    # -- health, metrics, admin ----------------------------------------------------------

    def _status_page(self, request):
        return Reply(200, status_page.page(), status_page.HTML,
                     ((b"Cache-Control", b"no-cache"),))

    def _healthz(self, request):
        return Reply(200, b"ok\n", TEXT)

    def _metrics(self, request):
        return metrics.scrape(self.router).addCallback(
            lambda text: Reply(200, text, CONTENT_TYPE_LATEST.encode()))

    def _stats(self, request):
        router = self.router
        document = {"router": metrics.router_document(router), "config": router.config_status()}

        def with_nodes(nodes):
            document["nodes"] = {name: _node_stats(reply) for name, reply in nodes.items()}
            if router.workers is None:
                return json_reply(200, document)
            from router.process.workers import add_up  # summed over the router's workers

            return router.workers.stats().addCallback(
                lambda workers: json_reply(200, add_up(document, workers, router.workers)))

        return router.node_stats().addCallback(with_nodes)

    def _hot(self, request):
        """Per group, the hottest keys: this process's view, and its workers' added in."""
        top = _top(request)
        own = hot.hot_document(self.router, top)
        if self.router.workers is None:
            return json_reply(200, own)
        return self.router.workers.stats().addCallback(lambda workers: json_reply(
            200, hot.merged([own, *(doc["hot"] for doc in workers if "hot" in doc)], top)))

    def _ring(self, request):
        info = self.router.ring_info()
        if self.router.workers is not None:
            info["workers"] = self.router.workers.workers()
        return json_reply(200, info)

    def _owner(self, request, group: str, key: bytes):
        return json_reply(200, self.router.where(group, key))

    def _reload(self, request):
        def refused(failure):
            # The Router kept the old ring and recorded why; a python source that does not
            # import is as much a refusal as a malformed file.
            failure.trap(ValueError, ImportError)  # TopologyError is a ValueError
            return json_reply(400, {"applied": False, "error": failure.getErrorMessage()})

        d = maybeDeferred(self.router.reload)
        return d.addCallbacks(lambda result: json_reply(200, result), refused)

    def _transfer(self, handler, request):
        d = Deferred.fromCoroutine(handler(self.router, request, self.router.clock()))
        return d.addCallback(lambda body: body if body is http_transfer.STREAMED
                             else Reply(200, body, JSON))

    def _plan(self, request):
        name = request.args.get(b"name", [b"<posted topology>"])[-1].decode("utf-8", "replace")
        topology = _posted_topology(request.content.read(), name)
        return maybeDeferred(self.router.plan, topology).addCallback(
            lambda result: json_reply(200, result))

    # -- answering -----------------------------------------------------------------------

    @staticmethod
    def _error_reply(failure, request) -> Reply:
        if failure.check(HTTPError):
            exc = failure.value
            return Reply(exc.code, error_body(str(exc)), JSON, exc.headers)
        for kind, code in _ERROR_STATUS:
            if failure.check(kind):
                message = failure.getErrorMessage()
                if kind is NodeTimeout and request.method in (b"PUT", b"DELETE"):
                    message += "; the outcome is unknown, the write may yet be applied"
                return Reply(code, error_body(message), JSON)
        log.failure("HTTP {method} {path} failed", failure,
                    method=_text(request.method), path=_text(request.path))
        return Reply(500, error_body("internal error"), JSON)

    @staticmethod
    def _send(reply: Reply, request, gone: list) -> None:
        if gone or reply is http_transfer.STREAMED or request.startedWriting:
            return  # the client left, or the response is written (or begun: a stream cut)
        request.setResponseCode(reply.code)
        for name, value in reply.headers:
            request.setHeader(name, value)
        if reply.content_type is not None:
            request.setHeader(b"Content-Type", reply.content_type)
        if reply.code != 204:
            request.setHeader(b"Content-Length", b"%d" % len(reply.body))
            request.write(reply.body)
        request.finish()


def _group_and_key(rest: bytes, path: bytes) -> tuple[str, bytes]:
    """Group and key from the raw ``{group}/{key}``; the key is everything after the first '/'."""
    group, sep, key = rest.partition(b"/")
    if not group or not key:
        raise HTTPError(404, f"no such endpoint: {_text(path)} (expected /v1/GROUP/KEY)")
    return unquote_to_bytes(group).decode("utf-8", "replace"), unquote_to_bytes(key)


def _ttl(request) -> float | None:
    values = request.args.get(b"ttl")
    if not values:
        return None
    try:
        return parse_duration(values[-1].decode("utf-8", "replace"))
    except ValueError as exc:
        raise HTTPError(400, f"ttl: {exc}") from None


def _posted_topology(document: bytes, name: str):
    """The Topology in a posted YAML document; ``name`` stands for its file in errors."""
    try:
        return parse_topology_text(document.decode("utf-8"), name)
    except UnicodeDecodeError:
        raise HTTPError(400, f"{name}: not UTF-8 text") from None
    except TopologyError as exc:
        raise HTTPError(400, str(exc)) from None


# RFC 9211's Cache-Status of a value's answer: from a node, loaded from the group's source,
# or past its ttl from the group's grace (RFC 5861): at once while a refresh runs behind
# it, or because its load failed.
CACHE_HIT, CACHE_MISS = b"ringcache; hit", b"ringcache; fwd=miss"
CACHE_NEAR = b"ringcache; hit; detail=near-cache"  # answered by this router, no node asked
CACHE_STALE = {"revalidate": b"ringcache; hit; detail=stale-while-revalidate",
               "if_error": b"ringcache; fwd=stale; detail=stale-if-error"}


def _top(request) -> int:
    """?top=N of /v1/hot: keys per group (default hot.TOP)."""
    raw = request.args.get(b"top", [b"%d" % hot.TOP])[0]
    if not raw.isdigit() or not 1 <= int(raw) <= hot.MAX_TOP:
        raise HTTPError(400, f"top must be a whole number from 1 to {hot.MAX_TOP}, "
                             f"got {_text(raw)!r}")
    return int(raw)


def _item_reply(item) -> Reply:
    if item is None:
        return Reply(404, error_body("not found"), JSON, hit=False)
    status = (CACHE_NEAR if item.near else CACHE_STALE.get(item.stale)
              or (CACHE_HIT if item.hit else CACHE_MISS))
    return Reply(200, item.value, OCTETS, ((b"cache-status", status),), hit=item.hit)


def _node_stats(reply) -> dict:
    if isinstance(reply, str):
        return {"error": reply}
    return MessageToDict(reply, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True,
                         unquote_int64_if_possible=True)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
