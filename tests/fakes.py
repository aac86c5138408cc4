"""The fakes unit tests share: stand-ins for node clients, sources, routers, reactors and
clocks, each recording what it was asked so a test can answer it by hand.

Router takes its node client and source factories as arguments (``node_client``,
``build_source``); ``make_router`` passes these fakes, so no test patches a module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import NamedTuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from router.cluster.errors import NodeUnavailable, TooLarge, UnknownGroup
from router.cluster.hints import Hints
from router.cluster.hotkeys import HotKeys
from router.cluster.metaget import UNANSWERED
from router.cluster.router import Group, Item, Router
from router.cluster.singleflight import SingleFlight
from router.cluster.stats import RouterStats
from router.cluster.writes import NOT_STORED_, STORED, Written
from router.config.topology import parse_topology
from router.dataplane.getrun import RouteTable
from router.dataplane.serve import Routes
from router.http.api import build_site
from router.memcache.server import MemcacheFactory
from router.sources import build_source as build_real_source
from shared import ringcache_pb2 as pb
from tests.helpers import CountingTransport

NOW = 1_700_000_000.0  # FakeMemcacheRouter's wall clock, for absolute exptimes


# -- time -----------------------------------------------------------------------------------

class FakeClock:
    """A clock that stands still until a test moves ``now``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SyncPool:
    """A thread pool that runs each call at once, or holds it until ``run_held``.

    ``make`` stands in for PythonSource's ``make_pool``: it answers this pool and records
    the size asked for; ``started`` and ``stopped`` count starts and stops."""

    def __init__(self, hold=False):
        self.hold = hold
        self.calls = []
        self.held = []
        self.sizes = []
        self.started = self.stopped = 0

    def make(self, size: int, name: str):
        self.sizes.append(size)
        return self

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1

    def callInThreadWithCallback(self, on_result, fn, *args, **kwargs):
        self.calls.append(fn.__name__)
        self.held.append((on_result, fn, args, kwargs))
        if not self.hold:
            self.run_held()

    def run_held(self):
        held, self.held = self.held, []
        for on_result, fn, args, kwargs in held:
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                on_result(False, Failure())
            else:
                on_result(True, result)


class FakeReactor(Clock):
    """A Clock with a SyncPool (``pool``), calls from threads run at once, and system event
    triggers kept in ``triggers`` (id -> (phase, event, fn)) for a test to fire."""

    def __init__(self, pool=None):
        super().__init__()
        self.pool = pool or SyncPool()
        self.triggers: dict[int, tuple] = {}
        self._triggers_made = 0

    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)

    def addSystemEventTrigger(self, phase, event, fn, *args, **kwargs):
        self._triggers_made += 1
        trigger = self._triggers_made
        self.triggers[trigger] = (phase, event, lambda: fn(*args, **kwargs))
        return trigger

    def removeSystemEventTrigger(self, trigger):
        del self.triggers[trigger]

    def fire(self, event: str) -> None:
        for phase, name, fn in list(self.triggers.values()):
            if name == event:
                fn()


# -- node clients and sources behind a real Router ----------------------------------------

SCORES = {"ttl": "5m", "source": {"python": "fake:scores"}}
LEASE = 77  # the token a fake node's lease comes with



@dataclass
class Sent:
    op: int
    group: str
    key: bytes
    value: bytes
    ttl: float
    flags: int
    d: Deferred
    negative: bool = False
    keys: list = ()
    cas: int = 0
    delta: int = 0
    lease: int = 0
    lease_ttl: float = 0.0
    meta: int = 0
    wait: float = 0.0

    def answer(self, status=pb.OK, value=b"", flags=0, error="", negative=False, values=(),
               cas=0, ttl=0.0, lease=None, stale=pb.FRESH, meta=0):
        """The node's answer. A LEASE_GET answered NOT_FOUND (not negative) comes with a
        lease, token LEASE, unless the test says ``lease=0`` (the lease waited on found
        nothing)."""
        if lease is None:
            lease = LEASE if (self.op == pb.LEASE_GET and status == pb.NOT_FOUND
                              and not negative) else 0
        self.d.callback(pb.Response(status=status, value=value, flags=flags, error=error,
                                    negative=negative, values=values, cas=cas, ttl=ttl,
                                    lease=lease, stale=stale, meta=meta))

    def fail(self, reason="connection refused"):
        self.d.errback(NodeUnavailable("node", reason))


class FakeClient:
    """Stands in for NodeClient: records requests and answers Deferreds the test fires."""

    def __init__(self, name, host, port, reactor, timeout, configure=None, observe_latency=None,
                 returning=None):
        self.name, self.host, self.port, self.timeout = name, host, port, timeout
        self.returning = returning
        self.address = f"{host}:{port}"
        self.state = "connecting"
        self.down_reason = "not connected yet"
        self.starts = self.stops = self.configures = 0
        self.marked_down = self.timeouts = 0
        self.sent: list[Sent] = []
        self.leases = True

    def lacks_leases(self):
        self.leases = False

    def start(self):
        self.starts += 1
        self.state = "up"

    def stop(self):
        self.stops += 1
        self.state = "stopped"

    def configure(self):
        self.configures += 1
        return succeed(None)

    def request(self, op, group="", key=b"", value=b"", ttl=0.0, flags=0, groups=None,
                negative=False, keys=None, cas=0, delta=0, lease=0, lease_ttl=0.0, meta=0,
                wait=0.0):
        d = Deferred()
        self.sent.append(Sent(op, group, key, value, ttl, flags, d, negative, list(keys or ()),
                              cas, delta, lease, lease_ttl, meta, wait))
        return d

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent


class PlaneClient(FakeClient):
    """A fake node client that takes the data plane's prepared GET_MANYs as well."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: list[tuple[pb.Request, object]] = []

    def send_prepared(self, body, waiter):
        if self.state not in ("up", "connecting"):
            return False
        self.prepared.append((pb.Request.FromString(body), waiter))
        return True

    def answer_prepared(self, values_for) -> None:
        """Answer every GET_MANY waiting, ``values_for(request)`` giving its Response."""
        prepared, self.prepared = self.prepared, []
        for request, waiter in prepared:
            waiter.callback(values_for(request))


class FakeNodes:
    """A node client factory for Router: makes ``cls`` clients and keeps every one made."""

    def __init__(self, cls=FakeClient):
        self.cls = cls
        self.made: list[FakeClient] = []

    def __call__(self, *args, **kwargs):
        client = self.cls(*args, **kwargs)
        self.made.append(client)
        return client


class FakeSource:
    def __init__(self, target):
        self.name = f"python:{target}"
        self.loads: list[tuple[str, Deferred]] = []
        self.closed = False

    def load(self, key):
        d = Deferred()
        self.loads.append((key, d))
        return d

    def check(self):
        return succeed(None)

    def close(self):
        self.closed = True


class FakeSources:
    """A source factory for Router: a target module named ``fake`` makes a FakeSource (kept
    in ``built``); any other source is built for real."""

    def __init__(self):
        self.built: list[FakeSource] = []

    def __call__(self, spec, reactor, base_dir):
        if not spec.target.startswith("fake:"):
            return build_real_source(spec, reactor, base_dir)
        source = FakeSource(spec.target)
        self.built.append(source)
        return source


def topology(nodes=("node-a",), groups=None, **router):
    """A parsed topology; ``nodes`` holds names (port 7001 on) or (name, port) pairs."""
    node_list = []
    for i, node in enumerate(nodes):
        name, port = node if isinstance(node, tuple) else (node, 7001 + i)
        node_list.append({"name": name, "address": f"127.0.0.1:{port}"})
    data = {
        "router": {"default_group": "scores", "item_size_max": "1KiB", **router},
        "nodes": node_list,
        "groups": groups if groups is not None else {"scores": SCORES, "sessions": {}},
    }
    return parse_topology(data, "t.yaml")


def make_router(topo=None, nodes=None, sources=None) -> Router:
    """A started Router on fake node clients (``nodes``, a FakeNodes) and sources."""
    router = Router(topo or topology(), Clock(), clock=lambda: 1000.0,
                    node_client=nodes or FakeNodes(), build_source=sources or FakeSources())
    router.start()
    return router


def node(router, name="node-a") -> FakeClient:
    return router.clients[name]


def replicated(n_nodes=3, replicas=2):
    groups = {"scores": {"source": {"python": "fake:scores"}}, "sessions": {"replicas": replicas}}
    router = make_router(topology(nodes=[f"node-{i}" for i in range(n_nodes)], groups=groups))
    owners = router.ring.owners(b"sessions:k", replicas)
    return router, [router.clients[name] for name in owners]


# -- a router as the memcached front end sees it ------------------------------------------

class _NoDataPlane:
    """FakeMemcacheRouter's one node for the data plane: a text get reaching it is a test
    that belongs on a real Router (PlaneConn), since every text get is the data plane's."""

    name = "node-a"

    def send_prepared(self, body, waiter):
        raise AssertionError("a text get on FakeMemcacheRouter: test gets with PlaneConn")


class FakeMemcacheRouter:
    """Records each call as (op, args, Deferred); ``GROUP:KEY`` is in GROUP, others in
    "default". Each read's client connection is recorded in ``conns``.

    For the commands other than text gets (binary and meta gets call ``get``)."""

    item_size_max = 1024

    def __init__(self):
        self.calls: list[tuple[str, tuple, Deferred]] = []
        self.conns: list = []
        self.stats = RouterStats()
        self.flight = SimpleNamespace(coalesced=3)
        self.ring = SimpleNamespace(digest="0123456789abcdef")
        self.clients = {"node-a": SimpleNamespace(state="up"),
                        "node-b": SimpleNamespace(state="down")}
        self.clock = lambda: NOW
        self.groups = {"default": None, "sessions": None}
        table = RouteTable({b"default": 0, b"sessions": 1}, 0, ["default", "sessions"],
                           [True, True], [0], [0])
        self.routes = Routes(table, [_NoDataPlane()], [None, None])

    def resolve(self, key: bytes) -> tuple[str, bytes]:
        group, sep, rest = key.partition(b":")
        return (group.decode(), rest) if sep else ("default", key)

    def _call(self, op, *args) -> Deferred:
        d = Deferred()
        self.calls.append((op, args, d))
        return d

    def get(self, group, key, conn=None):
        self.conns.append(conn)
        return self._call("get", group, key)

    def meta_get(self, group, key, meta, ttl=None, vivify_ttl=None, recache=0.0, conn=None):
        # As a node without META_GET: mg takes the plain way, through get (and gat, add).
        return succeed(UNANSWERED)

    def write(self, op, group, key, value=b"", ttl=None, flags=0, cas=0, delta=0, meta=0):
        # Recorded by op name, with cas/delta only where the op takes them (and the Meta
        # bits, if any); a test may answer a store with True/False (STORED/NOT_STORED) or
        # with a Written.
        name = pb.Op.Name(op).lower()
        extra = (cas,) if op in (pb.CAS, pb.APPEND, pb.PREPEND, pb.DELETE) else ()
        extra += (meta,) if meta else ()
        if op in (pb.INCR, pb.DECR):  # with an initial value (and its ttl) to create
            return self._call(name, group, key, delta, *((value, ttl) if value else ()))
        return self._call(name, group, key, value, ttl, flags, *extra).addCallback(
            lambda r: r if isinstance(r, Written) else Written(STORED if r else NOT_STORED_))

    def gat(self, group, key, ttl, conn=None):
        self.conns.append(conn)
        return self._call("gat", group, key, ttl)

    def flush(self, delay=0.0):
        return self._call("flush", delay)

    def node_stats(self):
        node = pb.NodeStats(max_memory=1000, bytes=300)
        node.groups.add(name="default", items=2, bytes=300, max_bytes=500, evictions=4,
                        sets=9, hits=5, expirations=1)
        return succeed({"node-a": node, "node-b": "node-b unavailable: down"})

    def delete(self, group, key):
        return self._call("delete", group, key)

    def touch(self, group, key, ttl):
        return self._call("touch", group, key, ttl)

    def ops(self):
        return [(op, args) for op, args, _ in self.calls]

    def deferreds(self):
        return [d for _, _, d in self.calls]


class MemcacheConn:
    """A memcached client connection over StringTransport to a FakeMemcacheRouter."""

    def __init__(self, router=None, clock=None):
        self.clock = clock or Clock()
        self.router = router or FakeMemcacheRouter()
        self.factory = MemcacheFactory(self.router, self.clock)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = CountingTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def turn(self) -> bytes:
        """End the reactor turn; what was written since the last call."""
        self.clock.advance(0)
        out = self.transport.value()
        self.transport.clear()
        return out


class PlaneConn(MemcacheConn):
    """A memcached client connection to a real Router whose nodes are PlaneClients: for
    text gets, which the data plane serves (router/dataplane/serve.py)."""

    def __init__(self, nodes=("node-a",), groups=None):
        router = Router(topology(nodes, groups), Clock(), clock=lambda: NOW,
                        node_client=FakeNodes(PlaneClient), build_source=FakeSources())
        router.start()
        super().__init__(router, router.reactor)

    def node(self, name="node-a") -> PlaneClient:
        return self.router.clients[name]

    def answer(self, values: dict, name="node-a") -> None:
        """Node ``name`` answers every GET_MANY it was sent from ``values`` ({key: entry})."""
        self.node(name).answer_prepared(
            lambda r: pb.Response(values=[values.get(k, b"") for k in r.keys]))


# -- a router as the HTTP front end sees it -----------------------------------------------

RING = {"digest": "ab12", "vnodes": 160,
        "nodes": [{"name": "node-a", "address": "127.0.0.1:7001", "weight": 1.0,
                   "share": 1.0, "state": "up", "healthy": True}]}

CONFIG = {"path": "topology.yaml", "digest": "ab12", "loaded_at": 1.0, "age_seconds": 2.0,
          "reloads": 0, "failures": 0, "last_error": None}


TOPOLOGY = {"router": {"default_group": "scores"},
            "nodes": [{"name": "node-a", "address": "127.0.0.1:7001"}],
            "groups": {"scores": {}, "sessions": {}}}


class FakeHTTPRouter:
    """The slice of router.cluster.router.Router the HTTP front end calls, answering from a dict."""

    def __init__(self):
        self.reactor = Clock()
        self.stats = RouterStats()
        self.flight = SingleFlight()
        self.hints = Hints(lambda: [])
        self.clients = {}
        self.workers = None  # router workers: tests/integration/test_workers.py
        self.groups = {name: Group(None, None, hot=HotKeys(self.reactor.seconds))
                       for name in ("scores", "sessions")}
        self.items: dict[tuple[str, bytes], bytes] = {}
        self.loaded: set[bytes] = set()  # keys get() answers as read through (misses)
        self.failures: dict[bytes, Exception] = {}  # key -> what get() fails with
        self.pending: Deferred | None = None  # when set, get() answers this
        self.conns = []  # the client connection of each get
        self.sets = []
        self.plans = []
        self.reload_answer = lambda: {"applied": True, "digest": "cd34", "moved": 0.25}
        self.reloads = self.reload_failures = 0
        self.topology = parse_topology(TOPOLOGY, "topology.yaml")
        self.item_size_max = self.topology.router.item_size_max

    def get(self, group, key, conn=None):
        self.conns.append(conn)
        if group not in self.groups:
            return fail(UnknownGroup(group))
        if key in self.failures:
            return fail(self.failures[key])
        if self.pending is not None:
            return self.pending
        value = self.items.get((group, key))
        return succeed(None if value is None else Item(value, hit=key not in self.loaded))

    def set(self, group, key, value, ttl=None, flags=0):
        if group not in self.groups:
            return fail(UnknownGroup(group))
        if key in self.failures:
            return fail(self.failures[key])
        if len(value) > 10:
            return fail(TooLarge(f"value of {len(value)} bytes is over the item limit of 10"))
        self.sets.append((group, key, value, ttl))
        self.items[group, key] = value
        return succeed(True)

    def delete(self, group, key):
        if group not in self.groups:
            return fail(UnknownGroup(group))
        return succeed(self.items.pop((group, key), None) is not None)

    def where(self, group, key):
        if group not in self.groups:
            raise UnknownGroup(group)
        return {"group": group, "key": key.decode(), "node": "node-a",
                "address": "127.0.0.1:7001", "state": "up"}

    def ring_info(self):
        return RING

    def node_stats(self):
        stats = pb.NodeStats(groups=[pb.GroupStats(name="scores", policy="lru", items=3,
                                                   bytes=30, max_bytes=1024, hits=7)],
                             max_memory=4096, bytes=30, uptime=1.5, configured=True)
        return succeed({"node-a": stats, "node-b": "node node-b unavailable: refused"})

    def config_status(self):
        return CONFIG

    def reload(self):
        return self.reload_answer()

    def plan(self, topology):
        self.plans.append(topology)
        return {"digest": "ab12", "new_digest": "ef56", "moved": 0.5}


class Response(NamedTuple):
    code: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "transfer-encoding" not in headers
    assert len(body) == int(headers.get("content-length", 0))
    return Response(int(status.split()[1]), headers, body)


class HTTPConn:
    """One HTTP connection to the Site, over a StringTransport."""

    def __init__(self, router, environ=None):
        self.site = build_site(router, {} if environ is None else environ)
        self.transport = StringTransport()
        self.protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol.makeConnection(self.transport)

    def send(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in {"Content-Length": len(body), **(headers or {})}.items()]
        self.protocol.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + body)

    def response(self) -> Response:
        data = self.transport.value()
        self.transport.clear()
        return parse_response(data)
