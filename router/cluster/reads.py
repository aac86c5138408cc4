"""The router's read path: a key's owner, then a replica, a previous owner (warm-up) or
the group's source, with one load per key at a time (singleflight).

Each step carries the Group object it started with, not its name: a reload may replace or
remove the group while a request is out, and the request finishes with the configuration
it began under. The data plane (router/dataplane/serve.py) serves cached keys without this
module and hands it what the nodes did not answer: ``missed``, ``read_failed``, ``read``.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.logger import Logger

from router.cluster.errors import NodeError, NodeUnavailable, SourceError, UnknownGroup
from router.cluster.items import Group, Item
from router.cluster.nodeclient import UP, NodeClient
from router.cluster.ring import routing_key
from router.sources.base import start_load
from shared import ringcache_pb2 as pb

log = Logger()

OK, NOT_FOUND = pb.OK, pb.NOT_FOUND


def node_failed(response) -> NodeError:
    return NodeError(response.error or pb.Status.Name(response.status))


class Reads:
    """The read half of Router (router/cluster/router.py), which supplies groups, clients, the
    ring, the singleflight table, stats and warm-up."""

    #
    # Each step carries the Group object it started with, not its name: a reload may
    # replace or remove the group while a request is out, and the request finishes
    # with the configuration it began under. It carries ``conn`` too: the client
    # connection the read serves (any hashable; None for callers without one), by which
    # the group's source loads are queued and served in turn (router/cluster/loads.py).

    def read(self, g: Group, key: bytes, replicas: list | None = None, conn=None) -> Deferred:
        """Item or None for ``key`` of ``g``, from ``replicas`` (default: its copies in ring
        order) and, on a miss, its previous owner or source."""
        return self._read(g, key, replicas or self._replicas(g, key), 0, conn)

    def missed(self, g: Group, key: bytes, owner: NodeClient, negative: bool, conn=None):
        """A key its node ``owner`` did not have (``negative``: a cached absence): None, or
        what the previous owner (warm-up) or the source has, or a Deferred of it."""
        return self._missed(g, key, owner, negative, conn)

    def read_failed(self, failure, g: Group, key: bytes, replicas: list, i: int, conn=None):
        """``replicas[i]`` failed to answer for ``key``: the next replica, or the source."""
        return self._read_failed(failure, g, key, replicas, i, conn)

    def get(self, group: str, key: bytes, conn=None) -> Deferred:
        """Item or None; reads through the group's source on a miss."""
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        return self._read(g, key, self._replicas(g, key), 0, conn)

    def gat(self, group: str, key: bytes, ttl: float | None, conn=None) -> Deferred:
        """memcached's gat: Item or None, the item given ``ttl`` (None: no expiry). A miss
        reads through like get, and what it loads gets ``ttl`` too."""
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        replicas = self._replicas(g, key)
        d = replicas[0].request(pb.GAT, g.name, key, ttl=ttl or 0.0)
        d.addCallbacks(self._gatted, self._read_failed, (g, key, replicas[0], ttl, conn), None,
                       (g, key, replicas, 0, conn))
        if len(replicas) > 1:
            for client in replicas[1:]:
                client.request(pb.TOUCH, g.name, key, ttl=ttl or 0.0).addErrback(lambda _: None)
        return d

    def _gatted(self, response, g: Group, key: bytes, owner: NodeClient, ttl: float | None,
                conn):
        if response.status != NOT_FOUND or response.negative:
            return self._got(response, g, key, owner, conn)
        d = maybeDeferred(self._missed, g, key, owner, False, conn)

        def touch_loaded(item):
            if item is None:
                return None
            return self.touch(g.name, key, ttl).addBoth(lambda _: item)

        return d.addCallback(touch_loaded)

    def _read(self, g: Group, key: bytes, replicas: list, i: int, conn) -> Deferred:
        d = replicas[i].request(pb.GET, g.name, key)
        d.addCallbacks(self._got, self._read_failed, (g, key, replicas[i], conn), None,
                       (g, key, replicas, i, conn))
        return d

    def _got(self, response, g: Group, key: bytes, owner: NodeClient, conn):
        status = response.status
        if status == OK:
            self.stats.group_hits[g.name] += 1
            return Item(response.value, response.flags, response.cas)
        if status != NOT_FOUND:
            raise node_failed(response)
        return self._missed(g, key, owner, response.negative, conn)

    def _missed(self, g: Group, key: bytes, owner: NodeClient, negative: bool, conn):
        """A key its node does not hold: None for a cached absence, else what the
        previous owner (warm-up) or the source has, or a Deferred of it."""
        self.stats.group_misses[g.name] += 1
        if negative:
            self.stats.negative_hits += 1
            return None
        if g.source is None:
            previous = self._previous_owner(g, key, owner)
            if previous is None:
                return None
            return Deferred.fromCoroutine(self._warm(g, key, previous))
        # A load coalesced here counts for the connection that started it.
        return self.flight.do((g.name, key),
                              lambda: Deferred.fromCoroutine(self._fill(g, key, owner, conn)))

    def _read_failed(self, failure, g: Group, key: bytes, replicas: list, i: int, conn):
        failure.trap(NodeUnavailable)
        self.stats.node_errors_by[replicas[i].name] += 1
        if i + 1 < len(replicas):
            self.stats.failovers += 1
            return self._read(g, key, replicas, i + 1, conn)
        # No copy reachable: a group with a source still answers, straight from the
        # source and without caching; a plain cache group has nowhere else to look.
        if g.source is None:
            return failure
        self.stats.failovers += 1
        return self.flight.do((g.name, key), lambda: self._load(g, key, conn))

    async def _fill(self, g: Group, key: bytes, owner: NodeClient, conn):
        # Look again inside the flight: a flight for this key may have landed between
        # our miss and the start of this one, and loading again would break the
        # promise of one load per miss.
        try:
            again = await owner.request(pb.GET, g.name, key)
            if again.status == OK:
                return Item(again.value, again.flags, again.cas, hit=False)
            if again.negative:
                return None
        except NodeUnavailable:
            pass
        previous = self._previous_owner(g, key, owner)
        if previous is not None:
            item = await self._warm(g, key, previous)
            if item is not None:
                return item
        item = await self._load(g, key, conn)
        # Fill before landing the flight, so a request arriving after it lands hits.
        if item is not None:
            cas = await self._fill_replicas(g, key, item.value, g.spec.ttl, item.flags)
            item = item._replace(cas=cas)
        elif g.spec.negative_ttl:
            await self._fill_replicas(g, key, b"", g.spec.negative_ttl, 0, negative=True)
        return item

    async def _fill_replicas(self, g: Group, key: bytes, value: bytes, ttl: float | None,
                             flags: int, negative: bool = False) -> int:
        """Cache a loaded value on every live replica; failing to cache is not an error.
        Answers the CAS unique the first replica (the one reads ask first) gave it, or 0."""
        ds = [c.request(pb.SET, g.name, key, value, ttl or 0.0, flags, negative=negative)
              for c in self._replicas(g, key) if c.state == UP]
        cas = None
        for ok, result in await DeferredList(ds, consumeErrors=True):
            if ok and result.status != OK:
                log.warn("group {group}: could not cache a loaded value: {why}",
                         group=g.name, why=result.error or pb.Status.Name(result.status))
            if cas is None:
                cas = result.cas if ok and result.status == OK else 0
        return cas or 0

    def _load(self, g: Group, key: bytes, conn) -> Deferred:
        """The source's answer, through the group's bounds, queued among ``conn``'s loads:
        a SourceBusy failure when as many loads as allowed are running and waiting."""
        source = g.source
        started = None

        def start():
            # Counted and timed from when the load runs, not from when it queued.
            nonlocal started
            self.stats.group_loads[g.name] += 1
            started = self.reactor.seconds()
            answer, finished = start_load(source, key.decode("utf-8", "surrogateescape"))
            answer.addCallbacks(loaded, failed)
            return answer, finished

        def loaded(value):
            self.stats.observe_load(g.name, self.reactor.seconds() - started, None,
                                    found=value is not None)
            return None if value is None else Item(value, 0, hit=False)

        def failed(failure):
            self.stats.observe_load(g.name, self.reactor.seconds() - started, failure)
            if not failure.check(SourceError):
                raise SourceError(source.name, failure.getErrorMessage())
            return failure

        return g.loads.run(start, conn)

    # -- warm-up after a ring change (router/cluster/warmup.py) ------------------------------------

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
        # The old copy's remaining ttl is unknown here; the group ttl bounds it.
        cas = await self._fill_replicas(g, key, response.value, g.spec.ttl, response.flags)
        return Item(response.value, response.flags, cas, hit=False)
