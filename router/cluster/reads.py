"""The router's read path: a key's owner, then a replica, a previous owner (warm-up) or
the group's source, with one load per key at a time: per router process (singleflight),
and across every router under the owner's lease (router/cluster/leases.py).

A replicated group's copies repair each other: a miss on one copy asks the next, and a
copy that has the key writes it back to those that missed (read repair, with the copy's
remaining ttl and flags, as an ADD, so that it never overwrites a newer write). Warm-up
asks the key's owners under the previous rings on every miss the new owner answers, and
when the new owner cannot be reached at all.

Each step carries the Group object it started with, not its name: a reload may replace or
remove the group while a request is out, and the request finishes with the configuration
it began under. The data plane (router/dataplane/serve.py) serves cached keys without this
module and hands it what the nodes did not answer: ``missed``, ``read_failed``, ``read``.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.logger import Logger

from router.cluster.errors import NodeError, NodeUnavailable, SourceError, UnknownGroup
from router.cluster.items import Group, Item
from router.cluster.nearpath import held, kept, written
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

    def read_near(self, g: Group, key: bytes, conn=None) -> Deferred:
        """``read``, answered by the group's near cache when it holds the key (the data
        plane's gets of a group with replicas, which it leaves to this path)."""
        item = held(g, key, self.reactor.seconds())
        if item is not None:
            return succeed(item)
        return kept(self._read(g, key, self._replicas(g, key), 0, conn), g, key)

    def get(self, group: str, key: bytes, conn=None) -> Deferred:
        """Item or None; reads through the group's source on a miss. A hot key of a group
        with a near cache is answered from it (router/cluster/nearpath.py)."""
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        if self.sampler.due():
            g.hot.add(key)
        return self.read_near(g, key, conn)

    def gat(self, group: str, key: bytes, ttl: float | None, conn=None) -> Deferred:
        """memcached's gat: Item or None, the item given ``ttl`` (None: no expiry). A miss
        reads through like get, and what it loads gets ``ttl`` too."""
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        return written(lambda: self._gat(g, key, ttl, conn), g, key)

    def _gat(self, g: Group, key: bytes, ttl: float | None, conn) -> Deferred:
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
        d.addCallbacks(self._got_copy, self._read_failed, (g, key, replicas, i, conn), None,
                       (g, key, replicas, i, conn))
        return d

    def _got_copy(self, response, g: Group, key: bytes, replicas: list, i: int, conn):
        if (response.status == NOT_FOUND and not response.negative
                and i + 1 < len(replicas)):
            return Deferred.fromCoroutine(self._repair(g, key, replicas, i, conn))
        return self._got(response, g, key, replicas[i], conn)

    def _got(self, response, g: Group, key: bytes, owner: NodeClient, conn):
        status = response.status
        if status == OK:
            self.stats.group_hits[g.name] += 1
            return Item(response.value, response.flags, response.cas, ttl=response.ttl or None)
        if status != NOT_FOUND:
            raise node_failed(response)
        return self._missed(g, key, owner, response.negative, conn)

    async def _repair(self, g: Group, key: bytes, replicas: list, i: int, conn):
        """``replicas[i]`` missed: the next copies are asked, and the first that has the
        key writes it back to every copy that missed (read repair)."""
        missed = [replicas[i]]
        for client in replicas[i + 1:]:
            if client.state != UP:
                continue
            try:
                response = await client.request(pb.GET, g.name, key)
            except NodeUnavailable:
                continue
            if response.status == NOT_FOUND and not response.negative:
                missed.append(client)
                continue
            if response.status == OK:
                self.stats.read_repairs += len(missed)
                for copy in missed:
                    copy.request(pb.ADD, g.name, key, response.value, response.ttl,
                                 response.flags).addErrback(lambda _: None)
            return await maybeDeferred(self._got, response, g, key, client, conn)
        return await maybeDeferred(self._missed, g, key, replicas[0], False, conn)

    def _missed(self, g: Group, key: bytes, owner: NodeClient, negative: bool, conn):
        """A key its node does not hold: None for a cached absence, else what the
        previous owner (warm-up) or the source has, or a Deferred of it."""
        self.stats.group_misses[g.name] += 1
        if negative:
            self.stats.negative_hits += 1
            return None
        if g.source is None:
            previous = self._previous_owners(g, key, owner)
            if not previous:
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
        # No copy reachable: during a warm-up the previous owners may hold the key; then
        # a group with a source still answers, straight from the source and without
        # caching; a plain cache group has nowhere else to look.
        previous = self._previous_owners(g, key, replicas[0])
        if previous:
            return Deferred.fromCoroutine(self._warm_or(g, key, previous, failure, conn))
        if g.source is None:
            return failure
        self.stats.failovers += 1
        return self.flight.do((g.name, key), lambda: self._load(g, key, conn))

    async def _warm_or(self, g: Group, key: bytes, previous: list, failure, conn):
        item = await self._warm(g, key, previous)
        if item is not None:
            return item
        if g.source is None:
            return failure
        self.stats.failovers += 1
        return await self.flight.do((g.name, key), lambda: self._load(g, key, conn))

    async def _fill(self, g: Group, key: bytes, owner: NodeClient, conn):
        # Look again inside the flight: a flight for this key may have landed between
        # our miss and the start of this one, and loading again would break the
        # promise of one load per miss. The owner's lease makes that look the one of
        # every router, and orders our fill against the key's writes.
        if owner.leases:
            try:
                item = await self.leased.read(g, key, owner, conn)
            except NodeUnavailable:
                return await self._fill_unleased(g, key, owner, conn, recheck=False)
            if owner.leases:
                return item
        return await self._fill_unleased(g, key, owner, conn)

    async def _fill_unleased(self, g: Group, key: bytes, owner: NodeClient, conn,
                             recheck=True):
        """The miss of a node without leases (or unreachable): look again, load, fill."""
        try:
            if recheck:
                again = await owner.request(pb.GET, g.name, key)
                if again.status == OK:
                    return Item(again.value, again.flags, again.cas, hit=False)
                if again.negative:
                    return None
        except NodeUnavailable:
            pass
        previous = self._previous_owners(g, key, owner)
        if previous:
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
                             flags: int, negative: bool = False, op: int = pb.SET) -> int:
        """Cache a loaded value on every live replica; failing to cache is not an error.
        Answers the CAS unique the first replica (the one reads ask first) gave it, or 0.
        ``op`` ADD copies a value found elsewhere without overwriting a newer write."""
        ds = [c.request(op, g.name, key, value, ttl or 0.0, flags, negative=negative)
              for c in self._replicas(g, key) if c.state == UP]
        cas = None
        for ok, result in await DeferredList(ds, consumeErrors=True):
            if ok and result.status != OK and not (op == pb.ADD and result.status == pb.NOT_STORED):
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

    def _previous_owners(self, g: Group, key: bytes, owner: NodeClient) -> list[NodeClient]:
        """The live clients of the key's owners under the previous rings (warm-up)."""
        found = []
        for name in self.warmup.previous_owners(routing_key(g.name, key)):
            if name == owner.name:
                continue
            client = self.clients.get(name) or self.warmup.retired.get(name)
            if client is not None and client.state == UP:
                found.append(client)
        return found

    async def _warm_copy(self, g: Group, key: bytes, previous: list[NodeClient]):
        """The first previous owner's answer holding the key, or None."""
        for client in previous:
            try:
                response = await client.request(pb.GET, g.name, key)
            except NodeUnavailable:
                continue
            if response.status == OK:
                self.stats.warmup_hits += 1
                return response
        return None

    async def _warm(self, g: Group, key: bytes, previous: list[NodeClient]):
        response = await self._warm_copy(g, key, previous)
        if response is None:
            return None
        # The copy keeps the old one's remaining ttl and flags; an ADD, so a write that
        # reached the new owner meanwhile is not overwritten.
        cas = await self._fill_replicas(g, key, response.value, response.ttl or None,
                                        response.flags, op=pb.ADD)
        return Item(response.value, response.flags, cas, hit=False, ttl=response.ttl or None)
