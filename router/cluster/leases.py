"""Read-through under the owner's lease: one load per key across every router, and no
fill over a newer write (storage_node/leases.py keeps the leases).

Inside its flight (one per key per router process, singleflight), a miss asks the key's
owner with LEASE_GET. The owner answers the entry (another router filled it meanwhile),
or a lease: this router loads and fills with the lease's token, a fill the owner stores
only if no write of the key came in between; or it holds the request until the lease out
ends, and answers it with what that left. A group with grace (stale_while_revalidate,
stale_if_error) is answered stale by the owner past an entry's ttl: at once with a refresh
behind it, or as the fallback of a load that fails.

A replicated group's lease lives on the key's owner (the copy the read ended on); each
other live copy is asked for a lease of its own that never waits, before the load, so a
write reaching a copy during the load voids that copy's fill too. A node that answers
LEASE_GET UNKNOWN_OP (an older release) is read through as before (router/cluster/reads.py).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from router.cluster.errors import NodeError, NodeUnavailable, RingcacheError, SourceError
from router.cluster.items import Group, Item
from router.cluster.nodeclient import UP, NodeClient
from router.sources import DEFAULT_TIMEOUT
from shared import ringcache_pb2 as pb

log = Logger()

# Seconds a lease outlives its group's source timeout: time for the fill's round trip and
# a load that waited its turn (router/cluster/loads.py). A holder that died is replaced
# by a waiting reader that long after its load's timeout.
LEASE_MARGIN = 1.0

STALE_KINDS = {pb.REVALIDATE: "revalidate", pb.IF_ERROR: "if_error"}


def lease_life(g: Group) -> float:
    """The most a lease of ``g`` lives: its source's timeout plus LEASE_MARGIN."""
    return (g.spec.source.options.get("timeout") or DEFAULT_TIMEOUT) + LEASE_MARGIN


class LeasedReads:
    """The lease half of a read-through miss, for Router (router/cluster/reads.py), which
    supplies the stats, the loads, the replicas and warm-up."""

    def __init__(self, router):
        self.router = router

    async def read(self, g: Group, key: bytes, owner: NodeClient, conn=None):
        """What a miss of ``key`` (its owner ``owner`` has no entry) answers under a lease:
        an Item or None. None also when ``owner`` does not know leases: then ``owner.leases``
        is False and the caller reads through the old way. ``conn``: the client connection
        the read serves, by which its load is queued (router/cluster/loads.py)."""
        life = lease_life(g)
        answer = await owner.request(pb.LEASE_GET, g.name, key, lease_ttl=life, wait=2 * life)
        if answer.status == pb.UNKNOWN_OP:
            owner.lacks_leases()
            return None
        return await self._answered(g, key, owner, answer, conn)

    async def _answered(self, g: Group, key: bytes, owner: NodeClient, answer, conn):
        status, stats = answer.status, self.router.stats
        if status == pb.OK:
            item = Item(answer.value, answer.flags, answer.cas, hit=False, ttl=answer.ttl or None)
            kind = STALE_KINDS.get(answer.stale)
            if kind is None:
                return item
            stale = item._replace(stale=kind)
            if answer.lease and answer.stale == pb.REVALIDATE:
                stats.lease_loads[g.name] += 1
                self.refresh(g, key, owner, answer.lease, conn)
            elif answer.lease:
                try:
                    return await self.load(g, key, owner, answer.lease, conn)
                except RingcacheError as exc:
                    log.info("group {group}: load failed, answered stale: {why}",
                             group=g.name, why=exc)
            stats.stale_answers[g.name, kind] += 1
            return stale
        if status == pb.NOT_FOUND:
            if answer.negative or not answer.lease:
                # A cached absence, or the lease we waited on found nothing at its source.
                return None
            return await self.load(g, key, owner, answer.lease, conn)
        if status == pb.SOURCE_FAILED:  # the load we waited on failed
            raise SourceError(g.source.name, answer.error)
        raise NodeError(answer.error or pb.Status.Name(status))

    def refresh(self, g: Group, key: bytes, owner: NodeClient, token: int, conn) -> None:
        """Load and fill ``key`` behind a stale answer (stale_while_revalidate)."""
        d = Deferred.fromCoroutine(self.load(g, key, owner, token, conn, counted=True))
        d.addErrback(lambda failure: log.info(
            "group {group}: background refresh failed: {why}", group=g.name,
            why=failure.getErrorMessage()))

    async def load(self, g: Group, key: bytes, owner: NodeClient, token: int, conn=None,
                   counted: bool = False):
        """Load ``key`` holding the owner's lease ``token`` and fill it: the Item or None."""
        router = self.router
        if not counted:
            router.stats.lease_loads[g.name] += 1
        copies = await self._copy_leases(g, key, owner)
        previous = router._previous_owners(g, key, owner)
        found = await router._warm_copy(g, key, previous) if previous else None
        if found is not None:  # warm-up: the previous owner's copy, filled under the lease
            cas = await self._fill(g, key, owner, token, copies, found.value,
                                   found.ttl or None, found.flags)
            return Item(found.value, found.flags, cas, hit=False, ttl=found.ttl or None)
        try:
            item = await router._load(g, key, conn)
        except Exception as exc:
            why = exc.reason if isinstance(exc, SourceError) else str(exc)
            self._give_back(g, key, owner, token, copies, why)
            raise
        if item is not None:
            cas = await self._fill(g, key, owner, token, copies, item.value, g.spec.ttl,
                                   item.flags)
            return item._replace(cas=cas)
        if g.spec.negative_ttl:
            await self._fill(g, key, owner, token, copies, b"", g.spec.negative_ttl, 0, True)
        else:
            self._give_back(g, key, owner, token, copies, None)
        return None

    async def _copy_leases(self, g: Group, key: bytes, owner: NodeClient) -> list:
        """For a replicated group: (client, token) of each other live copy whose lease it
        got at once (token 0: a node without leases, filled with a plain SET)."""
        if g.spec.replicas == 1:
            return []
        others = [c for c in self.router._replicas(g, key) if c is not owner and c.state == UP]
        life = lease_life(g)
        ds = [c.request(pb.LEASE_GET, g.name, key, lease_ttl=life, meta=pb.LEASE_NO_WAIT)
              if c.leases else None for c in others]
        copies = []
        for client, d in zip(others, ds):
            if d is None:
                copies.append((client, 0))
                continue
            try:
                answer = await d
            except NodeUnavailable:
                continue
            if answer.status == pb.UNKNOWN_OP:
                client.lacks_leases()
                copies.append((client, 0))
            elif answer.lease:
                copies.append((client, answer.lease))
        return copies

    async def _fill(self, g: Group, key: bytes, owner: NodeClient, token: int, copies: list,
                    value: bytes, ttl: float | None, flags: int, negative: bool = False) -> int:
        """Fill the owner (and the copies) under their leases: the owner's CAS unique, or 0
        when it refused the fill (a write came first: the value answered is not cached)."""
        ds = [owner.request(pb.LEASE_FILL, g.name, key, value, ttl or 0.0, flags,
                            negative=negative, lease=token)]
        for client, copy_token in copies:
            op = pb.LEASE_FILL if copy_token else pb.SET
            ds.append(client.request(op, g.name, key, value, ttl or 0.0, flags,
                                     negative=negative, lease=copy_token))
        results = await DeferredList(ds, consumeErrors=True)
        ok, answer = results[0]
        if not ok:
            return 0
        if answer.status == pb.NOT_STORED:
            self.router.stats.lease_fills_dropped[g.name] += 1
        elif answer.status != pb.OK:
            log.warn("group {group}: could not cache a loaded value: {why}", group=g.name,
                     why=answer.error or pb.Status.Name(answer.status))
        return answer.cas if answer.status == pb.OK else 0

    def _give_back(self, g: Group, key: bytes, owner: NodeClient, token: int, copies: list,
                   why: str | None) -> None:
        """Release the leases: the source has no value (``why`` None), or its load failed."""
        meta = 0 if why is None else pb.LEASE_FAILED
        value = b"" if why is None else why.encode("utf-8", "replace")
        owner.request(pb.LEASE_RELEASE, g.name, key, value, lease=token,
                      meta=meta).addErrback(lambda _: None)
        for client, copy_token in copies:
            if copy_token:
                client.request(pb.LEASE_RELEASE, g.name, key, lease=copy_token).addErrback(
                    lambda _: None)
