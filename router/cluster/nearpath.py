"""The near cache (router/cluster/nearcache.py) on the router's item paths: reads that
answer an Item (HTTP GET, binary get, reads of old nodes) and every write.

The data plane's plain gets use it in router/dataplane/near.py; these are the other doors
a key's value goes in and out by. A write drops the key before it is sent and again when
it is answered, so no answer read before the write is kept after it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from router.cluster.items import Group, Item
from shared.entry import pack, unpack_cas


def held(g: Group, key: bytes, now: float) -> Item | None:
    """The Item ``g``'s near cache answers for ``key``, or None."""
    near = g.near
    if near is None:
        return None
    stored = near.get(key, now)
    if stored is None:
        return None
    value, flags, cas = unpack_cas(stored)
    return Item(value, flags, cas, near=True)


def kept(d: Deferred, g: Group, key: bytes) -> Deferred:
    """``d`` (a read's Item or None) with its answer offered to ``g``'s near cache: a node's
    value of a key it admits, not one answered stale or loaded."""
    near = g.near
    if near is None or key not in near.admits:
        return d
    epoch = near.epoch

    def offer(item):
        if item is not None and item.hit and item.stale is None and not item.meta:
            near.offer(key, pack(item.value, item.flags, item.cas), epoch)
        return item

    return d.addCallback(offer)


def written(d_of, g: Group, key: bytes) -> Deferred:
    """``d_of()``, a write of ``key``: the near cache forgets the key before and after."""
    near = g.near
    if near is None:
        return d_of()
    near.drop(key)

    def again(result):
        near.drop(key)
        return result

    return d_of().addBoth(again)


def flushed(d_of, groups) -> Deferred:
    """``d_of()``, a write of every key of ``groups`` (flush_all, restore)."""
    nears = [g.near for g in groups if g.near is not None]
    for near in nears:
        near.clear()

    def again(result):
        for near in nears:
            near.clear()
        return result

    return d_of().addBoth(again)
