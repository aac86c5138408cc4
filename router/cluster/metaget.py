"""memcached's mg on the cluster: META_GET on the key's owner, where the item's bits live
(storage_node/meta_ops.py), and a read through the group's copies or source on a miss
that did not vivify."""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred

from router.cluster.errors import NodeUnavailable
from router.cluster.items import Item
from router.cluster.reads import node_failed
from shared import ringcache_pb2 as pb

# What meta_get answers when the owner cannot say (an older node, or unreachable): the
# caller reads the way it did before META_GET.
UNANSWERED = object()


async def meta_get(router, group: str, key: bytes, meta: int, ttl: float | None = None,
                   vivify_ttl: float | None = None, recache: float = 0.0, conn=None):
    """An Item (its ``meta`` the item's bits), None, or UNANSWERED. ``meta`` holds the
    MG_* bits of the flags given: T's ``ttl``, N's ``vivify_ttl``, R's ``recache``."""
    g = router.group(group)
    replicas = router._replicas(g, key)
    owner = replicas[0]
    try:
        answer = await owner.request(pb.META_GET, g.name, key, ttl=ttl or 0.0,
                                     delta=int(vivify_ttl or 0), lease_ttl=recache, meta=meta)
    except NodeUnavailable:
        return UNANSWERED
    touch = meta & pb.MG_TOUCH
    if answer.status == pb.OK:
        if not answer.meta & pb.ITEM_CREATED:
            router.stats.group_hits[g.name] += 1
        if touch:
            for client in replicas[1:]:
                client.request(pb.TOUCH, g.name, key, ttl=ttl or 0.0).addErrback(lambda _: None)
        return Item(answer.value, answer.flags, answer.cas, ttl=answer.ttl or None,
                    meta=answer.meta)
    if answer.status == pb.UNKNOWN_OP:
        return UNANSWERED
    if answer.status != pb.NOT_FOUND:
        raise node_failed(answer)
    if len(replicas) > 1:  # the other copies, then the source, as any read
        item = await router.read(g, key, conn=conn)
    else:
        item = await maybeDeferred(router.missed, g, key, owner, answer.negative, conn)
    if item is not None and touch:
        await router.touch(g.name, key, ttl)
    return item
