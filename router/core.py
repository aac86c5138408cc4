"""The router's core: one ring, one singleflight table, node clients and read-through.

Front ends (memcached, HTTP) call these methods and translate router.errors into their
protocol's words. Every method answers a Deferred; none blocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults
from twisted.logger import Logger

from router.errors import NodeError, NodeUnavailable, SourceError, TooLarge, UnknownGroup
from router.nodeclient import NodeClient
from router.ring import HashRing, routing_key
from router.singleflight import SingleFlight
from router.sources import build_source
from router.stats import RouterStats
from router.topology import load_topology
from shared import ringcache_pb2 as pb

log = Logger()

OK, NOT_FOUND, NOT_STORED = pb.OK, pb.NOT_FOUND, pb.NOT_STORED


class Item(NamedTuple):
    value: bytes
    flags: int = 0


@dataclass
class Group:
    """A group as the router serves it: its spec and its live source (or None)."""

    spec: object  # router.topology.GroupSpec
    source: object | None  # router.sources.Source

    @property
    def name(self) -> str:
        return self.spec.name


def _node_failed(response) -> NodeError:
    return NodeError(response.error or pb.Status.Name(response.status))


class Router:
    def __init__(self, topology, reactor, clock=time.time):
        self.reactor = reactor
        self.clock = clock
        self.flight = SingleFlight()
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
        self._apply(topology)

    # -- topology ------------------------------------------------------------------------

    def _apply(self, topology) -> dict:
        """Make ``topology`` current; keep what did not change. Answers what moved.

        Everything that can fail (building sources) happens before the swap, so a
        topology that cannot be applied leaves the old one serving untouched.
        """
        cfg = topology.router
        ring = HashRing(((n.name, n.weight) for n in topology.nodes), vnodes=cfg.vnodes)
        old_groups, old_clients = self.groups, self.clients
        groups = {}
        built = []
        try:
            for name, spec in topology.groups.items():
                old = old_groups.get(name)
                if old is not None and old.spec.source == spec.source and (
                        spec.source is None or topology.base_dir == self.topology.base_dir):
                    source = old.source
                elif spec.source is not None:
                    source = build_source(spec.source, self.reactor, topology.base_dir)
                    built.append(source)
                else:
                    source = None
                groups[name] = Group(spec, source)
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
                clients[node.name] = NodeClient(
                    node.name, node.address.host, node.address.port, self.reactor,
                    timeout=cfg.timeout, configure=self._group_configs,
                    observe_latency=self.stats.node_latency.labels(node.name).observe)
        configs = [pb.GroupConfig(name=g.name, policy=g.policy, max_bytes=g.max_bytes)
                   for g in topology.groups.values()]
        configs_changed = configs != self._configure_groups
        previous_ring = getattr(self, "ring", None)

        # The swap: from here on requests route by the new ring.
        self.topology, self.ring, self.groups, self.clients = topology, ring, groups, clients
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
        for name, client in old_clients.items():
            if clients.get(name) is not client:
                client.stop()
        live_sources = {id(g.source) for g in groups.values()}
        for group in old_groups.values():
            if group.source is not None and id(group.source) not in live_sources:
                group.source.close()
        return {
            "digest": ring.digest,
            "moved": previous_ring.diff(ring) if previous_ring is not None else 0.0,
            "nodes_added": sorted(set(clients) - set(old_clients)),
            "nodes_removed": sorted(set(old_clients) - set(clients)),
            "nodes_changed": sorted(set(clients) & set(old_clients) - kept),
            "groups_reconfigured": configs_changed,
        }

    def reload(self, topology=None) -> dict:
        """Load the topology file again (or apply ``topology``) and swap atomically.

        Raises TopologyError (or ValueError from a source) and keeps the old ring when
        the new topology is invalid; the failure is recorded for /v1/stats.
        """
        try:
            if topology is None:
                topology = load_topology(self.topology.path)
            result = self._apply(topology)
        except Exception as exc:
            self.reload_failures += 1
            self.last_error = str(exc)
            self.last_error_at = self.clock()
            log.error("reload refused, the old topology keeps serving: {error}", error=exc)
            raise
        self.reloads += 1
        self.last_error = None
        log.info("topology reloaded: digest {digest}, {moved:.1%} of keys moved",
                 digest=result["digest"], moved=result["moved"])
        return {"applied": True, **result}

    def plan(self, topology) -> dict:
        """What applying ``topology`` would move, without applying it."""
        ring = HashRing(((n.name, n.weight) for n in topology.nodes),
                        vnodes=topology.router.vnodes)
        moves = self.ring.moves(ring)
        return {
            "digest": self.ring.digest,
            "new_digest": ring.digest,
            "moved": self.ring.diff(ring),
            "moves": [{"from": old, "to": new, "share": share}
                      for (old, new), share in sorted(moves.items())],
            "shares_before": self.ring.shares(),
            "shares_after": ring.shares(),
        }

    def config_status(self) -> dict:
        return {
            "path": self.topology.path,
            "digest": self.ring.digest,
            "loaded_at": self.loaded_at,
            "age_seconds": max(0.0, self.clock() - self.loaded_at),
            "reloads": self.reloads,
            "failures": self.reload_failures,
            "last_error": self.last_error,
        }

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

    def owner(self, group: str, key: bytes) -> str:
        return self.ring.owner(routing_key(group, key))

    def _client(self, group: str, key: bytes) -> NodeClient:
        return self.clients[self.ring.owner(routing_key(group, key))]

    # -- reads ---------------------------------------------------------------------------

    def get(self, group: str, key: bytes) -> Deferred:
        """Item or None; reads through the group's source on a miss."""
        if group not in self.groups:
            return fail(UnknownGroup(group))
        d = self._client(group, key).request(pb.GET, group, key)
        d.addCallbacks(self._got, self._get_failed, (group, key), None, (group, key))
        return d

    def _got(self, response, group: str, key: bytes):
        status = response.status
        if status == OK:
            self.stats.hits += 1
            return Item(response.value, response.flags)
        if status != NOT_FOUND:
            raise _node_failed(response)
        self.stats.misses += 1
        # self.group(), not self.groups[...]: a reload may have removed the group
        # while the request was out, which is UnknownGroup, not an internal error.
        if self.group(group).source is None:
            return None
        return self.flight.do((group, key), lambda: self._load_and_fill(group, key))

    def _get_failed(self, failure, group: str, key: bytes):
        # The owner is unreachable: a group with a source still answers, straight from
        # the source and without caching; a plain cache group has nowhere else to look.
        failure.trap(NodeUnavailable)
        self.stats.node_errors += 1
        if self.group(group).source is None:
            return failure
        self.stats.failovers += 1
        return self.flight.do((group, key), lambda: self._load(group, key))

    def _load_and_fill(self, group: str, key: bytes) -> Deferred:
        return Deferred.fromCoroutine(self._fill(group, key))

    async def _fill(self, group: str, key: bytes):
        client = self._client(group, key)
        # Look again inside the flight: a flight for this key may have landed between
        # our miss and the start of this one, and loading again would break the
        # promise of one load per miss.
        try:
            again = await client.request(pb.GET, group, key)
            if again.status == OK:
                return Item(again.value, again.flags)
        except NodeUnavailable:
            pass
        item = await self._load(group, key)
        if item is None:
            return None
        ttl = self.group(group).spec.ttl or 0.0
        # Fill before landing the flight, so a request arriving after it lands hits.
        try:
            stored = await client.request(pb.SET, group, key, item.value, ttl)
            if stored.status != OK:
                log.warn("group {group}: could not cache a loaded value: {why}",
                         group=group, why=stored.error or pb.Status.Name(stored.status))
        except NodeUnavailable as exc:
            log.debug("fill skipped: {exc}", exc=exc)
        return item

    def _load(self, group: str, key: bytes) -> Deferred:
        source = self.group(group).source
        self.stats.loads += 1
        started = self.reactor.seconds()
        d = source.load(key.decode("utf-8", "surrogateescape"))

        def loaded(value):
            self.stats.observe_load(group, self.reactor.seconds() - started, None,
                                    found=value is not None)
            return None if value is None else Item(value, 0)

        def failed(failure):
            self.stats.observe_load(group, self.reactor.seconds() - started, failure)
            if not failure.check(SourceError):
                raise SourceError(source.name, failure.getErrorMessage())
            return failure

        d.addCallbacks(loaded, failed)
        return d

    def get_many(self, pairs) -> Deferred:
        """Items (or None) for [(group, key), ...], in order; node batching is per turn."""
        return gatherResults([self.get(g, k) for g, k in pairs], consumeErrors=True)

    # -- writes --------------------------------------------------------------------------

    def _store(self, op: int, group: str, key: bytes, value: bytes, ttl: float | None,
               flags: int) -> Deferred:
        if group not in self.groups:
            return fail(UnknownGroup(group))
        if len(value) > self.item_size_max:
            return fail(TooLarge(f"value of {len(value)} bytes is over the item limit "
                                 f"of {self.item_size_max}"))
        d = self._client(group, key).request(op, group, key, value, ttl or 0.0, flags)
        d.addCallback(self._stored)
        return d

    @staticmethod
    def _stored(response) -> bool:
        if response.status == OK:
            return True
        if response.status == NOT_STORED:
            return False
        if response.status == pb.TOO_LARGE:
            raise TooLarge(response.error)
        raise _node_failed(response)

    def set(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.SET, group, key, value, ttl, flags)

    def add(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.ADD, group, key, value, ttl, flags)

    def replace(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.REPLACE, group, key, value, ttl, flags)

    def _keyed(self, op: int, group: str, key: bytes, ttl: float = 0.0) -> Deferred:
        if group not in self.groups:
            return fail(UnknownGroup(group))
        d = self._client(group, key).request(op, group, key, ttl=ttl)
        d.addCallback(self._found)
        return d

    @staticmethod
    def _found(response) -> bool:
        if response.status == OK:
            return True
        if response.status == NOT_FOUND:
            return False
        raise _node_failed(response)

    def delete(self, group: str, key: bytes) -> Deferred:
        """True if the key was cached. A read-through group loads it again on next get."""
        return self._keyed(pb.DELETE, group, key)

    def touch(self, group: str, key: bytes, ttl: float | None) -> Deferred:
        return self._keyed(pb.TOUCH, group, key, ttl or 0.0)

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
                          "state": client.state, "healthy": client.state == "up",
                          **({"down_reason": client.down_reason}
                             if client.state != "up" else {})})
        return {"digest": self.ring.digest, "vnodes": self.topology.router.vnodes,
                "nodes": nodes}

    def node_stats(self) -> Deferred:
        """{node name: NodeStats message or an error string} from every node."""
        names = list(self.clients)
        ds = [self.clients[n].request(pb.STATS) for n in names]

        def collect(results):
            out = {}
            for name, (ok, value) in zip(names, results):
                if ok and value.status == OK:
                    out[name] = value.stats
                else:
                    out[name] = value.getErrorMessage() if not ok else value.error
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(collect)

