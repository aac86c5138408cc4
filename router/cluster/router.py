"""The Router: one ring, one singleflight table, node clients and read-through.

This module holds the topology and what follows from it (ring, groups, sources, node
clients, the data plane's routes) and swaps them on reload. Front ends (memcached, HTTP)
call the read and write methods and translate router.cluster.errors into their protocol's words.
Every method answers a Deferred; none blocks.
"""

from __future__ import annotations

import time
from collections import deque

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from router.dataplane.serve import Routes
from router.cluster.errors import UnknownGroup
from router.cluster.hints import Hints
from router.cluster.hotkeys import HotKeys, Sampler
from router.cluster.nearcache import NearCache
from router.cluster.nearpath import written
from router.dataplane.getrun import RouteTable
from router.cluster.items import Group, Item
from router.cluster.leases import LeasedReads
from router.cluster.loads import LoadLimiter
from router.cluster.metaget import meta_get
from router.cluster.nodeclient import UP, NodeClient
from router.cluster.plan import plan, ring_for
from router.cluster.reads import Reads
from router.cluster.ring import HashRing, routing_key
from router.cluster.singleflight import SingleFlight
from router.sources import build_source
from router.cluster.stats import RouterStats
from router.config.origin import FileOrigin
from router.cluster.warmup import WarmUp
from router.cluster.writes import Writes
from shared import ringcache_pb2 as pb

log = Logger()

__all__ = ["Group", "Item", "Router"]

HISTORY = 10  # reloads kept for /v1/stats


class Router(Reads, Writes):
    """The ring, the groups and their sources, and a client per node; the read and write
    paths are router/cluster/reads.py and router/cluster/writes.py, the hot path router/dataplane/serve.py."""

    def __init__(self, topology, reactor, clock=time.time, node_client=NodeClient,
                 build_source=build_source, origin=None):
        self.reactor = reactor
        self.clock = clock
        # How a node's client and a group's source are made: tests pass fakes (tests/fakes.py).
        self._node_client = node_client
        self._build_source = build_source
        self.flight = SingleFlight()
        self.sampler = Sampler()  # which gets the groups' hot-key trackers see
        self.leased = LeasedReads(self)
        self.stats = RouterStats()
        self.topology = None
        self.clients: dict[str, NodeClient] = {}
        self.groups: dict[str, Group] = {}
        self._configure_groups: list = []
        self.started = False
        self.reloads = 0
        self.reload_failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        # The last reloads, newest first, with what moved: the status page shows them.
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self.warmup = WarmUp(reactor)
        self.hints = Hints(self._replicated_groups)  # writes a down copy missed
        # Called with each topology a reload applied (router workers pass it on).
        self.reload_hooks: list = []
        # The control process's WorkerPool (router/process/workers.py), when workers serve memcached.
        self.workers = None
        # Where reload() reads the topology again (router/config/origin.py): its file, or etcd.
        self.origin = origin if origin is not None else FileOrigin(topology.path)
        self._apply(topology)

    # -- topology ------------------------------------------------------------------------

    def _apply(self, topology) -> dict:
        """Make ``topology`` current; keep what did not change. Answers what moved.

        Everything that can fail (building sources) happens before the swap, so a
        topology that cannot be applied leaves the old one serving untouched.
        """
        cfg = topology.router
        ring = ring_for(topology)
        old_groups, old_clients = self.groups, self.clients
        groups = {}
        built = []
        try:
            for name, spec in topology.groups.items():
                old = old_groups.get(name)
                if old is not None and old.spec.source == spec.source and (
                        spec.source is None or topology.base_dir == self.topology.base_dir):
                    source, loads = old.source, old.loads
                elif spec.source is not None:
                    try:
                        source = self._build_source(spec.source, self.reactor, topology.base_dir)
                    except Exception as exc:
                        raise ValueError(f"{topology.path}: groups.{name}.source: {exc}") from None
                    built.append(source)
                    loads = LoadLimiter(source.name, spec.source.concurrency, spec.source.queue)
                else:
                    source = loads = None
                groups[name] = self._group(spec, source, loads, old)
        except Exception:
            for source in built:
                source.close()
            raise
        clients = {}
        for node in topology.nodes:
            old = old_clients.get(node.name)
            if old is not None and (old.host, old.port) == (node.address.host, node.address.port):
                old.timeout = cfg.timeout  # connections to unchanged nodes are kept
                clients[node.name] = old
            else:
                clients[node.name] = self._node_client(
                    node.name, node.address.host, node.address.port, self.reactor,
                    timeout=cfg.timeout, configure=self._group_configs,
                    observe_latency=self.stats.node_observer(node.name),
                    returning=self.hints)
        configs = [pb.GroupConfig(name=g.name, policy=g.policy, max_bytes=g.max_bytes,
                                  stale_while_revalidate=g.stale_while_revalidate or 0.0,
                                  stale_if_error=g.stale_if_error or 0.0)
                   for g in topology.groups.values()]
        configs_changed = configs != self._configure_groups
        previous_ring = getattr(self, "ring", None)

        routes = _routes(topology, ring, groups, clients)
        # The swap: from here on requests route by the new ring.
        self.topology, self.ring, self.groups, self.clients = topology, ring, groups, clients
        self.routes = routes
        self._configure_groups = configs
        self.item_size_max = cfg.item_size_max
        self.loaded_at = self.clock()

        kept = {name for name, c in clients.items() if old_clients.get(name) is c}
        if self.started:
            for name, client in clients.items():
                if name not in kept:
                    client.start()
                elif configs_changed:
                    client.configure()
        replaced = {name: c for name, c in old_clients.items() if clients.get(name) is not c}
        moved = previous_ring.diff(ring) if previous_ring is not None else 0.0
        self.warmup.begin(previous_ring, moved, replaced, cfg.warmup, clients.values())
        live_sources = {id(g.source) for g in groups.values()}
        for group in old_groups.values():
            if group.source is not None and id(group.source) not in live_sources:
                group.source.close()
        return {
            "digest": ring.digest,
            "moved": moved,
            "nodes_added": sorted(set(clients) - set(old_clients)),
            "nodes_removed": sorted(set(old_clients) - set(clients)),
            "nodes_changed": sorted(set(clients) & set(old_clients) - kept),
            "groups_reconfigured": configs_changed,
        }

    def _group(self, spec, source, loads, old: Group | None) -> Group:
        """A group as this topology serves it: its tracker kept across reloads, its near
        cache kept only while the group's configuration is unchanged."""
        hot = old.hot if old is not None else HotKeys(self.reactor.seconds,
                                                      every=self.sampler.every)
        near = None
        if spec.near_cache is not None:
            if old is not None and old.spec == spec and old.near is not None:
                near = old.near
            else:
                near = NearCache(spec.near_cache, self.reactor.seconds, hot.counts)
        return Group(spec, source, loads, hot, near)

    def reload(self, topology=None) -> dict:
        """Read the topology again from its origin (or apply ``topology``) and swap atomically.

        Raises TopologyError (or ValueError from a source) and keeps the old ring when
        the new topology is invalid; the failure is recorded for /v1/stats.
        """
        try:
            if topology is None:
                topology = self.origin.read()
            result = self._apply(topology)
        except Exception as exc:
            self.reload_failures += 1
            self.last_error = str(exc)
            self.last_error_at = self.clock()
            self.history.appendleft({"at": self.last_error_at, "applied": False,
                                     "error": self.last_error})
            log.error("reload refused, the old topology keeps serving: {error}", error=exc)
            raise
        self.reloads += 1
        self.last_error = None
        self.history.appendleft({"at": self.loaded_at, "applied": True, **result})
        log.info("topology reloaded: digest {digest}, {moved:.1%} of keys moved",
                 digest=result["digest"], moved=result["moved"])
        for hook in self.reload_hooks:
            hook(topology)
        return {"applied": True, **result}

    def plan(self, topology) -> dict:
        """What applying ``topology`` would move, without applying it."""
        return plan(self.ring, topology)

    def config_status(self) -> dict:
        return {
            "path": self.topology.path,
            "digest": self.ring.digest,
            "loaded_at": self.loaded_at,
            "age_seconds": max(0.0, self.clock() - self.loaded_at),
            "reloads": self.reloads,
            "failures": self.reload_failures,
            "last_error": self.last_error,
            "revision": self.topology.revision,  # etcd's revision of the document serving
            **self.origin.status(),
            "history": list(self.history),
        }

    def _replicated_groups(self) -> list[str]:
        # What a node this router never saw up may hold stale: the groups whose writes
        # went to other copies while it was away (router/cluster/hints.py).
        return [g.name for g in self.groups.values() if g.spec.replicas > 1]

    def _group_configs(self) -> list:
        return self._configure_groups

    def start(self) -> None:
        self.started = True
        for client in self.clients.values():
            client.start()
        for group in self.groups.values():
            if group.source is not None:
                group.source.check().addErrback(self._source_check_failed, group)

    @staticmethod
    def _source_check_failed(failure, group) -> None:
        log.warn("group {group}: source {source} is not reachable yet: {problem}",
                 group=group.name, source=group.source.name, problem=failure.getErrorMessage())

    def stop(self) -> None:
        for client in self.clients.values():
            client.stop()
        for group in self.groups.values():
            if group.source is not None:
                group.source.close()

    # -- routing -------------------------------------------------------------------------

    def resolve(self, memcache_key: bytes) -> tuple[str, bytes]:
        """The (group, key) a memcached key addresses: GROUP:KEY or the default group."""
        return self.topology.group_for(memcache_key)

    def group(self, name: str) -> Group:
        try:
            return self.groups[name]
        except KeyError:
            raise UnknownGroup(name) from None

    def meta_get(self, group: str, key: bytes, meta: int, ttl=None, vivify_ttl=None,
                 recache: float = 0.0, conn=None) -> Deferred:
        """memcached's mg with its flags, on the key's owner (router/cluster/metaget.py).
        One that touches or creates the item is a write to the near cache."""
        d_of = lambda: Deferred.fromCoroutine(meta_get(self, group, key, meta, ttl,  # noqa: E731
                                                       vivify_ttl, recache, conn))
        g = self.groups.get(group)
        if g is None or not meta & (pb.MG_TOUCH | pb.MG_VIVIFY):
            return d_of()
        return written(d_of, g, key)

    def owner(self, group: str, key: bytes) -> str:
        return self.ring.owner(routing_key(group, key))

    def _replicas(self, group: Group, key: bytes) -> list[NodeClient]:
        """The clients holding (group, key): its owner, then ``replicas - 1`` successors.

        With replicas, nodes known to be down go last, so a read or write never
        waits on a node already marked down while a live copy exists.
        """
        rk = routing_key(group.name, key)
        n = group.spec.replicas
        if n == 1:
            return [self.clients[self.ring.owner(rk)]]
        clients = [self.clients[name] for name in self.ring.owners(rk, n)]
        return ([c for c in clients if c.state == UP]
                + [c for c in clients if c.state != UP])

    # -- introspection -------------------------------------------------------------------

    def where(self, group: str, key: bytes) -> dict:
        self.group(group)
        name = self.owner(group, key)
        client = self.clients[name]
        return {"group": group, "key": key.decode("utf-8", "replace"), "node": name,
                "address": client.address, "state": client.state}

    def ring_info(self) -> dict:
        shares = self.ring.shares()
        nodes = []
        for node in self.topology.nodes:
            client = self.clients[node.name]
            nodes.append({"name": node.name, "address": str(node.address),
                          "weight": node.weight, "share": shares.get(node.name, 0.0),
                          "state": client.state, "healthy": client.state == UP,
                          "marked_down": client.marked_down, "timeouts": client.timeouts,
                          **({"down_reason": client.down_reason}
                             if client.state != UP else {})})
        return {"digest": self.ring.digest, "vnodes": self.topology.router.vnodes,
                "nodes": nodes, "warmup": self.warmup.info(),
                "config": {"origin": self.origin.name, "revision": self.topology.revision,
                           "last_error": self.last_error}}

    def node_stats(self) -> Deferred:
        """{node name: NodeStats message or an error string} from every node."""
        names = list(self.clients)
        ds = [self.clients[n].request(pb.STATS) for n in names]

        def collect(results):
            out = {}
            for name, (ok, value) in zip(names, results):
                if ok and value.status == pb.OK:
                    out[name] = value.stats
                else:
                    out[name] = value.getErrorMessage() if not ok else value.error
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(collect)


def _routes(topology, ring: HashRing, groups: dict, clients: dict) -> Routes:
    """The data plane's view of a topology: groups and nodes by index, the ring's points."""
    names = list(groups)
    nodes = list(clients)
    index = {name: i for i, name in enumerate(nodes)}
    hashes, owners = ring.points()
    table = RouteTable({name.encode(): i for i, name in enumerate(names)},
                       names.index(topology.router.default_group), names,
                       [groups[name].spec.replicas == 1 for name in names],
                       hashes, [index[owner] for owner in owners])
    return Routes(table, [clients[name] for name in nodes], [groups[name] for name in names],
                  any(g.near is not None for g in groups.values()))
