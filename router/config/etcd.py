"""A small etcd v3 client over etcd's JSON gateway (HTTP/1.1): range, watch, compare-and-swap.

etcd serves its gRPC API as JSON over plain HTTP as well (``POST /v3/kv/range`` and so on,
etcd 3.4 or newer); keys and values travel base64-encoded, 64-bit numbers as strings, and
fields at their default value are left out. A watch is one long POST whose response is a
stream of JSON messages, one a line. That is all a router needs from etcd, so it speaks
this with treq rather than carry a gRPC stack.

Authentication: with a user, the client asks ``/v3/auth/authenticate`` for a token, sends
it as the ``Authorization`` header, and asks again when etcd says the token is no longer
valid (it expired, or etcd restarted and forgot it). TLS: ``etcd+https://`` with a CA and
optionally a client certificate (Credentials).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

SCHEMES = {"etcd": "http", "etcd+https": "https"}
DEFAULT_PORT = 2379
TIMEOUT = 5.0  # seconds for one request (and for a watch to be answered)
MAX_MESSAGE = 4 << 20  # bytes of one watch message; a topology is at most 1 MiB, base64'd

# Where the credentials come from when no flag names them (the flags win).
ENV_CA = "RINGCACHE_ETCD_CA"
ENV_CERT = "RINGCACHE_ETCD_CERT"
ENV_KEY = "RINGCACHE_ETCD_KEY"
ENV_USER = "RINGCACHE_ETCD_USER"
ENV_PASSWORD = "RINGCACHE_ETCD_PASSWORD"
ENV_PASSWORD_FILE = "RINGCACHE_ETCD_PASSWORD_FILE"

UNAUTHENTICATED = 16  # gRPC status: the token is missing, expired or unknown
UNAVAILABLE = 14


class EtcdError(Exception):
    """etcd answered, with an error (``code`` is its gRPC status code)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No answer from any endpoint: refused, reset, timed out, or not etcd."""


class Compacted(EtcdError):
    """The watch's start revision was compacted away: read the key afresh."""

    def __init__(self, revision: int):
        super().__init__(f"revision compacted (etcd keeps revisions from {revision} on)")
        self.revision = revision


def is_etcd_url(text: str) -> bool:
    return text.split("://", 1)[0] in SCHEMES if "://" in text else False


@dataclass(frozen=True, slots=True)
class EtcdURL:
    """``etcd://HOST:PORT[,HOST:PORT...]/KEY`` or ``etcd+https://...``: the key is the URL's
    path, leading slash included (``etcd://h:2379/ringcache/topology`` is the key
    ``/ringcache/topology``, as etcdctl writes it)."""

    scheme: str  # http | https
    endpoints: tuple[tuple[str, int], ...]
    key: str
    text: str

    @classmethod
    def parse(cls, text: str) -> EtcdURL:
        parts = urlsplit(text)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"expected etcd://HOST:PORT/KEY or etcd+https://..., got {text!r}")
        if "@" in parts.netloc:
            raise ValueError(f"{text}: no user in the URL; give it with --etcd-user or "
                             f"${ENV_USER} (and the password in ${ENV_PASSWORD_FILE})")
        if parts.query or parts.fragment:
            raise ValueError(f"{text}: no ?query or #fragment in an etcd URL")
        endpoints = []
        for item in parts.netloc.split(","):
            host, sep, port = item.rpartition(":")
            if not sep:
                host, port = item, str(DEFAULT_PORT)
            host = host.strip("[]")
            if not host or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"{text}: expected HOST:PORT, got {item!r}")
            endpoints.append((host, int(port)))
        key = unquote(parts.path)
        if len(key) < 2:
            raise ValueError(f"{text}: no key: expected etcd://HOST:PORT/KEY")
        return cls(SCHEMES[parts.scheme], tuple(endpoints), key, text)

    def base(self, index: int) -> str:
        host, port = self.endpoints[index % len(self.endpoints)]
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to prove who we are to etcd: TLS files (etcd+https://) and a user's password."""

    ca: str | None = None  # PEM CA etcd's certificate must chain to (None: the system's)
    cert: str | None = None  # client certificate, for etcd's --client-cert-auth
    key: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def gather(cls, ca=None, cert=None, key=None, user=None, password_file=None,
               environ: Mapping[str, str] = os.environ) -> Credentials:
        """The flags' values, else the environment's; raises ValueError saying what is wrong."""
        ca = ca or environ.get(ENV_CA) or None
        cert = cert or environ.get(ENV_CERT) or None
        key = key or environ.get(ENV_KEY) or None
        user = user or environ.get(ENV_USER) or None
        password_file = password_file or environ.get(ENV_PASSWORD_FILE) or None
        if (cert is None) != (key is None):
            raise ValueError("an etcd client certificate needs both --etcd-cert and --etcd-key")
        password = None
        if password_file is not None:
            try:
                with open(password_file, encoding="utf-8") as f:
                    password = f.read(64 << 10).strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the etcd password file {password_file}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        elif environ.get(ENV_PASSWORD):
            password = environ[ENV_PASSWORD]
        if user is not None and not password:
            raise ValueError(f"etcd user {user!r} has no password: put it in a file named by "
                             f"--etcd-password-file or ${ENV_PASSWORD_FILE}, or in ${ENV_PASSWORD}")
        if password and user is None:
            raise ValueError(f"an etcd password without a user: set --etcd-user or ${ENV_USER}")
        return cls(ca, cert, key, user, password)

    @property
    def uses_tls(self) -> bool:
        return self.ca is not None or self.cert is not None


@dataclass(frozen=True, slots=True)
class KeyValue:
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0

    @classmethod
    def from_json(cls, kv: dict) -> KeyValue:
        return cls(base64.b64decode(kv.get("value", "")), int(kv.get("mod_revision", 0)),
                   int(kv.get("create_revision", 0)), int(kv.get("version", 0)))


@dataclass(frozen=True, slots=True)
class Event:
    """One change of the watched key: its new value, or None when it was deleted."""

    kv: KeyValue | None
    revision: int


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


@implementer(IPolicyForHTTPS)
class _TLSPolicy:
    """TLS to etcd with our CA and client certificate (shared/tls.py checks the files)."""

    def __init__(self, credentials: Credentials):
        self.credentials = credentials
        self._made: dict[str, object] = {}

    def creatorForNetloc(self, hostname: bytes, port: int):
        from shared.tls import client_options

        name = hostname.decode("ascii")
        if name not in self._made:
            c = self.credentials
            self._made[name] = client_options(name, c.ca, c.cert, c.key)
        return self._made[name]


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class EtcdClient:
    """One etcd cluster (its endpoints tried in turn) and one set of credentials."""

    def __init__(self, url: EtcdURL, reactor, credentials: Credentials = Credentials(),
                 timeout: float = TIMEOUT, http=None):
        import treq.client

        if credentials.uses_tls and url.scheme != "https":
            raise ValueError(f"{url.text}: TLS files for etcd need an etcd+https:// URL")
        self.url = url
        self.reactor = reactor
        self.credentials = credentials
        self.timeout = timeout
        self.endpoint = 0  # the one that last answered: asked first
        self.token: str | None = None
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 2
        self._pool._factory = _QuietFactory  # no log line for every connection
        if http is None:
            kwargs = {"contextFactory": _TLSPolicy(credentials)} if url.scheme == "https" else {}
            http = treq.client.HTTPClient(Agent(reactor, connectTimeout=timeout, pool=self._pool,
                                                **kwargs))
        self._http = http

    @property
    def where(self) -> str:
        return self.url.base(self.endpoint)

    def close(self) -> Deferred:
        return self._pool.closeCachedConnections()

    # -- the key-value calls -------------------------------------------------------------

    async def get(self, key: str, keys_only: bool = False) -> tuple[KeyValue | None, int]:
        """The key's value (None when absent) and the store's revision it was read at."""
        body = {"key": _b64(key), **({"keys_only": True} if keys_only else {})}
        answer = await self.call("/v3/kv/range", body)
        kvs = answer.get("kvs") or []
        return (KeyValue.from_json(kvs[0]) if kvs else None), _revision(answer)

    async def put_if(self, key: str, value: bytes, mod_revision: int) -> tuple[bool, int]:
        """Write ``value`` only if the key's mod_revision is still ``mod_revision`` (0: the
        key must not exist). (True, the new revision), or (False, the key's mod_revision now)."""
        answer = await self.call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            "failure": [{"request_range": {"key": _b64(key), "keys_only": True}}],
        })
        if answer.get("succeeded"):
            return True, _revision(answer)
        responses = answer.get("responses") or [{}]
        kvs = (responses[0].get("response_range") or {}).get("kvs") or []
        return False, int(kvs[0].get("mod_revision", 0)) if kvs else 0

    async def put(self, key: str, value: bytes) -> int:
        return _revision(await self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}))

    async def call(self, path: str, body: dict) -> dict:
        """POST ``body`` to ``path`` on the first endpoint that answers, authenticated."""
        for attempt in (1, 2):
            if self.credentials.user is not None and self.token is None:
                await self._authenticate()
            try:
                return await self._post(path, body)
            except EtcdError as exc:
                # An expired or forgotten token: ask for a new one, once.
                if exc.code != UNAUTHENTICATED or self.credentials.user is None or attempt == 2:
                    raise
                self.token = None
        raise AssertionError("unreachable")

    async def _authenticate(self) -> None:
        answer = await self._post("/v3/auth/authenticate", {
            "name": self.credentials.user, "password": self.credentials.password}, token=False)
        self.token = answer.get("token")

    async def _post(self, path: str, body: dict, token: bool = True) -> dict:
        last = None
        for step in range(len(self.url.endpoints)):
            index = self.endpoint + step
            try:
                response = await self._request(index, path, body, token)
                data = await _with_timeout(response.content(), self.timeout, self.reactor)
            except CancelledError:
                raise
            except EtcdUnavailable as exc:
                last = exc
                continue
            except Exception as exc:
                last = EtcdUnavailable(f"cannot reach etcd at {self.url.base(index)}: "
                                       f"{_describe(exc)}")
                continue
            self.endpoint = index % len(self.url.endpoints)
            return _answer(response.code, data, self.url.base(index))
        raise last

    async def _request(self, index: int, path: str, body: dict, token: bool, unbuffered=False):
        headers = {"Content-Type": ["application/json"]}
        if token and self.token:
            headers["Authorization"] = [self.token]
        d = self._http.post(self.url.base(index) + path, data=json.dumps(body).encode(),
                            headers=headers, unbuffered=unbuffered)
        try:
            return await _with_timeout(d, self.timeout, self.reactor)
        except CancelledError:
            raise
        except Exception as exc:
            raise EtcdUnavailable(f"cannot reach etcd at {self.url.base(index)}: "
                                  f"{_describe(exc)}") from None

    # -- the watch ----------------------------------------------------------------------

    async def watch(self, key: str, start_revision: int,
                    on_events: Callable[[list[Event]], None],
                    on_created: Callable[[], None] = lambda: None) -> None:
        """Deliver every change of ``key`` from ``start_revision`` on to ``on_events``, in
        order, until the stream ends (returns) or fails (raises: Compacted, EtcdError,
        EtcdUnavailable). Cancel the awaiting Deferred to stop watching."""
        if self.credentials.user is not None and self.token is None:
            await self._authenticate()
        body = {"create_request": {"key": _b64(key), "start_revision": str(start_revision)}}
        try:
            response = await self._request(self.endpoint, "/v3/watch", body, True,
                                           unbuffered=True)
        except EtcdUnavailable:
            self.endpoint = (self.endpoint + 1) % len(self.url.endpoints)  # try the next one
            raise
        if response.code != 200:
            data = await _with_timeout(response.content(), self.timeout, self.reactor)
            _answer(response.code, data, self.where)  # raises the error it holds
            raise EtcdError(f"{self.where}: the watch was answered {response.code}")

        def message(doc: dict) -> None:
            if "error" in doc:
                error = doc["error"]
                raise EtcdError(f"{self.where}: {error.get('message', error)}",
                                error.get("grpc_code", error.get("code")))
            result = doc.get("result") or {}
            if result.get("created"):
                on_created()
            if result.get("canceled"):
                if int(result.get("compact_revision", 0)):
                    raise Compacted(int(result["compact_revision"]))
                reason = result.get("cancel_reason", "the watch was canceled")
                code = UNAUTHENTICATED if "Unauthenticated" in reason else None
                if code == UNAUTHENTICATED:
                    self.token = None  # the next attempt authenticates again
                raise EtcdError(f"{self.where}: {reason}", code)
            events = [Event(None if e.get("type") == "DELETE" else KeyValue.from_json(e["kv"]),
                            int(e["kv"].get("mod_revision", 0)))
                      for e in result.get("events") or ()]
            if events:
                on_events(events)

        stream = _Messages(message)
        response.deliverBody(stream)
        await stream.finished


class _Messages(Protocol):
    """A watch response's body: one JSON message a line, each handed to ``on_message``.
    ``finished`` fires when the body ends; cancelling it closes the connection."""

    def __init__(self, on_message: Callable[[dict], None]):
        self.on_message = on_message
        self.finished = Deferred(lambda d: self._close())
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        try:
            if len(self._buffer) > MAX_MESSAGE:
                raise EtcdError(f"a watch message over {MAX_MESSAGE} bytes")
            for line in lines:
                if line.strip() and not self.finished.called:
                    self.on_message(json.loads(line))
        except Exception as exc:
            if not self.finished.called:
                self.finished.errback(exc)
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(EtcdUnavailable(f"the watch stream broke: {_describe(reason.value)}"))


def _answer(code: int, data: bytes, where: str) -> dict:
    try:
        doc = json.loads(data)
    except ValueError:
        said = data[:200].decode("utf-8", "replace").strip().splitlines()[:1]
        raise EtcdError(f"{where}: not an etcd JSON answer (HTTP {code}"
                        + (f": {said[0]})" if said else ")")) from None
    if code == 200 and isinstance(doc, dict) and "error" not in doc:
        return doc
    if not isinstance(doc, dict):
        raise EtcdUnavailable(f"{where}: not an etcd JSON answer (HTTP {code})")
    message = doc.get("message") or doc.get("error") or f"HTTP {code}"
    grpc = doc.get("code")
    kind = EtcdUnavailable if grpc == UNAVAILABLE or code == 404 else EtcdError
    if code == 404:
        message = f"no etcd v3 JSON gateway here (HTTP 404; etcd 3.4 or newer serves /v3/)"
    raise kind(f"{where}: {message}", grpc)


def _revision(answer: dict) -> int:
    return int((answer.get("header") or {}).get("revision", 0))


def _with_timeout(d: Deferred, seconds: float, reactor) -> Deferred:
    return d.addTimeout(seconds, reactor)


_PLAIN = {"ConnectionRefusedError": "connection refused", "TimeoutError": "timed out",
          "TCPTimedOutError": "timed out", "ConnectionLost": "connection lost",
          "ConnectionDone": "connection closed", "DNSLookupError": "no such host",
          "NoRouteError": "no route to host"}


def _describe(exc: BaseException) -> str:
    """A network failure in a few words: twisted.web wraps the reason in a list."""
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return _describe(reasons[0].value)
    return _PLAIN.get(type(exc).__name__) or str(exc) or type(exc).__name__


# -- the command-line flags every etcd user takes (ringcache router, ringcache topology) --


def add_arguments(parser) -> None:
    """The flags naming etcd credentials; each falls back to its environment variable."""
    group = parser.add_argument_group("etcd (for etcd:// and etcd+https:// URLs)")
    group.add_argument("--etcd-ca", metavar="FILE", help=f"CA of etcd's certificate (${ENV_CA})")
    group.add_argument("--etcd-cert", metavar="FILE",
                       help=f"client certificate for etcd (${ENV_CERT})")
    group.add_argument("--etcd-key", metavar="FILE", help=f"its private key (${ENV_KEY})")
    group.add_argument("--etcd-user", metavar="NAME", help=f"etcd user (${ENV_USER})")
    group.add_argument("--etcd-password-file", metavar="FILE",
                       help=f"file holding the user's password (${ENV_PASSWORD_FILE}; "
                            f"or the password itself in ${ENV_PASSWORD})")


def credentials_from(args, environ: Mapping[str, str] = os.environ) -> Credentials:
    return Credentials.gather(args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_user,
                              args.etcd_password_file, environ)
