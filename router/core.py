"""The router's core: one ring, one singleflight table, node clients and read-through.

Front ends (memcached, HTTP) call these methods and translate router.errors into their
protocol's words. Every method answers a Deferred; none blocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

from twisted.internet.defer import Deferred, DeferredList, FirstError, fail, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.logger import Logger

from router.errors import NodeError, NodeUnavailable, SourceError, TooLarge, UnknownGroup
from router.nodeclient import UP, NodeClient
from router.ring import HashRing, routing_key
from router.singleflight import SingleFlight
from router.loads import LoadLimiter
from router.sources import build_source, start_load
from router.stats import RouterStats
from router.warmup import WarmUp
from router.topology import load_topology
from shared import entry
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
    loads: LoadLimiter | None = None  # bounds the source's loads (router/loads.py)

    @property
    def name(self) -> str:
        return self.spec.name


def _place(result, results: list, i: int) -> None:
    """Put one key's outcome (a value, None or a Failure) in its place of a multi-get."""
    results[i] = result


def _gather(ds: list, results: list) -> Deferred:
    """A Deferred firing with ``results`` once every one of ``ds`` (which place their
    outcome in ``results`` and never fail) has fired: DeferredList without its per-result
    bookkeeping, on the multi-get hot path."""
    left = len(ds)
    if left == 0:
        return succeed(results)
    done = Deferred()

    def one(_):
        nonlocal left
        left -= 1
        if left == 0:
            done.callback(results)

    for d in ds:
        d.addBoth(one)
    return done


def _first_error(results: list) -> list:
    for i, result in enumerate(results):
        if isinstance(result, Failure):
            raise FirstError(result, i)
    return results


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
        self.warmup = WarmUp(reactor)
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
                    source, loads = old.source, old.loads
                elif spec.source is not None:
                    try:
                        source = build_source(spec.source, self.reactor, topology.base_dir)
                    except Exception as exc:
                        raise ValueError(f"{topology.path}: groups.{name}.source: {exc}") from None
                    built.append(source)
                    loads = LoadLimiter(source.name, spec.source.concurrency, spec.source.queue)
                else:
                    source = loads = None
                groups[name] = Group(spec, source, loads)
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
                    observe_latency=self.stats.node_latency.labels(node.name).observe,
                    stale_on_return=self._replicated_groups)
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

    def _replicated_groups(self) -> list[str]:
        # A replica that was down missed the writes that went to the others meanwhile;
        # when it returns it starts empty for those groups rather than serve stale copies.
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

    # -- reads ---------------------------------------------------------------------------
    #
    # Each step carries the Group object it started with, not its name: a reload may
    # replace or remove the group while a request is out, and the request finishes
    # with the configuration it began under.

    def get(self, group: str, key: bytes) -> Deferred:
        """Item or None; reads through the group's source on a miss."""
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        return self._read(g, key, self._replicas(g, key), 0)

    def _read(self, g: Group, key: bytes, replicas: list, i: int) -> Deferred:
        d = replicas[i].request(pb.GET, g.name, key)
        d.addCallbacks(self._got, self._read_failed, (g, key, replicas[i]), None,
                       (g, key, replicas, i))
        return d

    def _got(self, response, g: Group, key: bytes, owner: NodeClient):
        status = response.status
        if status == OK:
            self.stats.hits += 1
            return Item(response.value, response.flags)
        if status != NOT_FOUND:
            raise _node_failed(response)
        return self._missed(g, key, owner, response.negative)

    def _missed(self, g: Group, key: bytes, owner: NodeClient, negative: bool):
        """A key its node does not hold: None for a cached absence, else what the
        previous owner (warm-up) or the source has, or a Deferred of it."""
        self.stats.misses += 1
        if negative:
            self.stats.negative_hits += 1
            return None
        if g.source is None:
            previous = self._previous_owner(g, key, owner)
            if previous is None:
                return None
            return Deferred.fromCoroutine(self._warm(g, key, previous))
        return self.flight.do((g.name, key), lambda: Deferred.fromCoroutine(self._fill(g, key, owner)))

    def _read_failed(self, failure, g: Group, key: bytes, replicas: list, i: int):
        failure.trap(NodeUnavailable)
        self.stats.node_errors += 1
        if i + 1 < len(replicas):
            self.stats.failovers += 1
            return self._read(g, key, replicas, i + 1)
        # No copy reachable: a group with a source still answers, straight from the
        # source and without caching; a plain cache group has nowhere else to look.
        if g.source is None:
            return failure
        self.stats.failovers += 1
        return self.flight.do((g.name, key), lambda: self._load(g, key))

    async def _fill(self, g: Group, key: bytes, owner: NodeClient):
        # Look again inside the flight: a flight for this key may have landed between
        # our miss and the start of this one, and loading again would break the
        # promise of one load per miss.
        try:
            again = await owner.request(pb.GET, g.name, key)
            if again.status == OK:
                return Item(again.value, again.flags)
            if again.negative:
                return None
        except NodeUnavailable:
            pass
        previous = self._previous_owner(g, key, owner)
        if previous is not None:
            item = await self._warm(g, key, previous)
            if item is not None:
                return item
        item = await self._load(g, key)
        # Fill before landing the flight, so a request arriving after it lands hits.
        if item is not None:
            await self._fill_replicas(g, key, item.value, g.spec.ttl, item.flags)
        elif g.spec.negative_ttl:
            await self._fill_replicas(g, key, b"", g.spec.negative_ttl, 0, negative=True)
        return item

    async def _fill_replicas(self, g: Group, key: bytes, value: bytes, ttl: float | None,
                             flags: int, negative: bool = False) -> None:
        """Cache a loaded value on every live replica; failing to cache is not an error."""
        ds = [c.request(pb.SET, g.name, key, value, ttl or 0.0, flags, negative=negative)
              for c in self._replicas(g, key) if c.state == UP]
        for ok, result in await DeferredList(ds, consumeErrors=True):
            if ok and result.status != OK:
                log.warn("group {group}: could not cache a loaded value: {why}",
                         group=g.name, why=result.error or pb.Status.Name(result.status))

    def _load(self, g: Group, key: bytes) -> Deferred:
        """The source's answer, through the group's bounds: a SourceBusy failure at once
        when as many loads as allowed are running and waiting."""
        source = g.source
        started = None

        def start():
            # Counted and timed from when the load runs, not from when it queued.
            nonlocal started
            self.stats.loads += 1
            started = self.reactor.seconds()
            answer, finished = start_load(source, key.decode("utf-8", "surrogateescape"))
            answer.addCallbacks(loaded, failed)
            return answer, finished

        def loaded(value):
            self.stats.observe_load(g.name, self.reactor.seconds() - started, None,
                                    found=value is not None)
            return None if value is None else Item(value, 0)

        def failed(failure):
            self.stats.observe_load(g.name, self.reactor.seconds() - started, failure)
            if not failure.check(SourceError):
                raise SourceError(source.name, failure.getErrorMessage())
            return failure

        return g.loads.run(start)

    def get_many(self, pairs) -> Deferred:
        """Items (or None) for [(group, key), ...], in order, or FirstError for the first
        key that failed."""
        return self.read_many(pairs).addCallback(_first_error)

    def read_many(self, pairs) -> Deferred:
        """For [(group, key), ...], in order, each key's Item, None or Failure. Keys of one
        group on one node go out as one GET_MANY request with one Deferred."""
        results: list = [None] * len(pairs)
        batches: dict[tuple[str, str], tuple[NodeClient, Group, list, list]] = {}
        ds = []
        groups, clients, owner = self.groups, self.clients, self.ring.owner
        for i, (group, key) in enumerate(pairs):
            g = groups.get(group)
            if g is None or g.spec.replicas != 1:
                ds.append(self.get(group, key).addBoth(_place, results, i))
                continue
            client = clients[owner(routing_key(group, key))]
            batch = batches.get((client.name, group))
            if batch is None:
                batch = batches[client.name, group] = (client, g, [], [])
            batch[2].append(i)
            batch[3].append(key)
        for batch in batches.values():
            client, g, indexes, keys = batch
            d = client.request(pb.GET_MANY, g.name, keys=keys)
            d.addCallbacks(self._got_many, self._read_many_failed, (*batch, results), None,
                           (*batch, results))
            ds.append(d)
        return _gather(ds, results)

    def _got_many(self, response, client: NodeClient, g: Group, indexes: list, keys: list,
                  results: list):
        values = response.values
        if response.status != OK or len(values) != len(keys):
            # A node without GET_MANY (UNKNOWN_OP, mid-upgrade) or answers too big for one
            # frame (ERROR): ask key by key, so each key gets its own answer.
            return DeferredList([self._read(g, key, [client], 0).addBoth(_place, results, i)
                                 for i, key in zip(indexes, keys)])
        hits = 0
        later = []
        for i, key, stored in zip(indexes, keys, values):
            if stored and stored != entry.NEGATIVE:
                results[i] = Item(*entry.unpack(stored))
                hits += 1
                continue
            try:
                result = self._missed(g, key, client, stored == entry.NEGATIVE)
            except Exception:
                result = Failure()
            if isinstance(result, Deferred):
                later.append(result.addBoth(_place, results, i))
            else:
                results[i] = result
        self.stats.hits += hits
        return DeferredList(later) if later else None

    def _read_many_failed(self, failure, client: NodeClient, g: Group, indexes: list,
                          keys: list, results: list):
        return DeferredList([maybeDeferred(self._read_failed, failure, g, key, [client], 0)
                             .addBoth(_place, results, i) for i, key in zip(indexes, keys)])

    # -- warm-up after a ring change (router/warmup.py) ------------------------------------

    def _previous_owner(self, g: Group, key: bytes, owner: NodeClient) -> NodeClient | None:
        name = self.warmup.previous_owner(routing_key(g.name, key))
        if name is None or name == owner.name:
            return None
        client = self.clients.get(name) or self.warmup.retired.get(name)
        return client if client is not None and client.state == UP else None

    async def _warm(self, g: Group, key: bytes, previous: NodeClient):
        try:
            response = await previous.request(pb.GET, g.name, key)
        except NodeUnavailable:
            return None
        if response.status != OK:
            return None
        self.stats.warmup_hits += 1
        item = Item(response.value, response.flags)
        # The old copy's remaining ttl is unknown here; the group ttl bounds it.
        await self._fill_replicas(g, key, item.value, g.spec.ttl, item.flags)
        return item

    # -- writes --------------------------------------------------------------------------

    def _store(self, op: int, group: str, key: bytes, value: bytes, ttl: float | None,
               flags: int) -> Deferred:
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        if len(value) > self.item_size_max:
            # As memcached does: a refused store must not leave the old value readable.
            error = TooLarge(f"value of {len(value)} bytes is over the item limit "
                             f"of {self.item_size_max}")
            return self._keyed(pb.DELETE, group, key).addBoth(lambda _: fail(error))
        return self._write(op, g, key, value, ttl or 0.0, flags, self._replicas(g, key))

    def _write(self, op: int, g: Group, key: bytes, value: bytes, ttl: float, flags: int,
               replicas: list) -> Deferred:
        d = replicas[0].request(op, g.name, key, value, ttl, flags)
        d.addCallback(self._stored)
        if len(replicas) == 1:
            return d

        # The first live replica decides (add/replace are conditional there); the
        # others follow with a plain SET of what it stored.
        def follow(stored: bool):
            if not stored:
                return False
            d = self._on_all(replicas[1:], pb.SET, g.name, key, value, ttl, flags)
            # The write stands once the deciding replica has it; a follower that is
            # down is counted in replica_errors and refilled by later writes.
            return d.addBoth(lambda _: True)

        def next_decides(failure):
            # The deciding replica went away mid-request: the next one decides.
            failure.trap(NodeUnavailable)
            self.stats.replica_errors += 1
            return self._write(op, g, key, value, ttl, flags, replicas[1:])

        return d.addCallbacks(follow, next_decides)

    @staticmethod
    def _stored(response) -> bool:
        if response.status == OK:
            return True
        if response.status == NOT_STORED:
            return False
        if response.status == pb.TOO_LARGE:
            raise TooLarge(response.error)
        raise _node_failed(response)

    def _on_all(self, clients, op, group, key, value=b"", ttl=0.0, flags=0) -> Deferred:
        """Send one request to several replicas; fires with the list of responses that came
        back (a replica that is down is skipped: it is refilled on its next miss)."""
        ds = [c.request(op, group, key, value, ttl, flags) for c in clients]

        def answered(results):
            responses = [r for ok, r in results if ok]
            self.stats.replica_errors += len(results) - len(responses)
            if not responses:
                return results[0][1]  # every replica failed: the first failure
            return responses

        return DeferredList(ds, consumeErrors=True).addCallback(answered)

    def set(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.SET, group, key, value, ttl, flags)

    def add(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.ADD, group, key, value, ttl, flags)

    def replace(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.REPLACE, group, key, value, ttl, flags)

    def _keyed(self, op: int, group: str, key: bytes, ttl: float = 0.0) -> Deferred:
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        replicas = self._replicas(g, key)
        if len(replicas) == 1:
            return replicas[0].request(op, group, key, ttl=ttl).addCallback(self._found)
        d = self._on_all(replicas, op, group, key, ttl=ttl)
        return d.addCallback(lambda responses: any(self._found(r) for r in responses))

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
                          "state": client.state, "healthy": client.state == UP,
                          "marked_down": client.marked_down, "timeouts": client.timeouts,
                          **({"down_reason": client.down_reason}
                             if client.state != UP else {})})
        return {"digest": self.ring.digest, "vnodes": self.topology.router.vnodes,
                "nodes": nodes, "warmup": self.warmup.info()}

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

