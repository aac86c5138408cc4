"""memcached's anti-stampede flags, kept with the item on its owner as memcached keeps them
(memcached 1.6's mg, md and ms, proto_text.c), for clients that manage stampedes
themselves.

An item carries two bits (shared/entry.py, kind 5): STALE, set by ``md I`` (the item is
kept, marked stale) or by an ``ms I`` whose CAS unique is older than the item's; and
WIN_SENT, set when a get was told it won (W) the right to recache the item. A META_GET
(mg) answers them, and may win: with N (MG_VIVIFY) a missing item is created empty and
the get wins; with R (MG_RECACHE) it wins when less than R seconds are left; a stale item
is won by the first get after it was marked. Once a win was sent, later gets see Z until
the item is replaced. Any store replaces the item with one without bits, as memcached's
does; a touch keeps them.
"""

from __future__ import annotations

from collections.abc import Callable

from shared import entry
from shared import ringcache_pb2 as pb
from storage_node.groups import Group
from storage_node.ops import GroupOps
from storage_node.rmw import ReadModifyWrite

_NO_EXPIRY = 0.0  # Response.ttl for an item without one


class MetaOps:
    """META_GET, and DELETE and CAS with MARK_STALE (md I, ms I) in front of the plain ones."""

    def __init__(self, ops: GroupOps, rmw: ReadModifyWrite):
        self.ops = ops
        self.rmw = rmw

    def table(self) -> dict[int, Callable]:
        return {pb.META_GET: self.meta_get, pb.DELETE: self.delete, pb.CAS: self.cas}

    def delete(self, group: Group, request, out: bytearray) -> pb.Response | None:
        if not request.meta & pb.MARK_STALE:
            return self.ops.delete(group, request, out)
        stored = group.core.get(request.key)
        if not entry.present(stored):
            return pb.Response(id=request.id, status=pb.NOT_FOUND)
        if request.cas and entry.unpack_cas(stored)[2] != request.cas:
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return mark_stale(self.ops, group, request, stored)

    def cas(self, group: Group, request, out: bytearray) -> pb.Response | None:
        if request.meta & pb.MARK_STALE:
            stored = group.core.get(request.key)
            if entry.present(stored) and 0 < request.cas < entry.unpack_cas(stored)[2]:
                return store_stale(self.ops, group, request, stored)
        return self.rmw.cas_store(group, request, out)

    def meta_get(self, group: Group, request, out: bytearray) -> pb.Response:
        key, meta = request.key, request.meta
        core = group.core
        stored = core.get(key)
        if not entry.present(stored):
            if not meta & pb.MG_VIVIFY:
                return pb.Response(id=request.id, status=pb.NOT_FOUND,
                                   negative=stored is not None)
            return self._vivify(group, request)
        group.hits += 1
        bits = entry.bits(stored)
        left = group.ttl_left(key)
        ttl = left  # what the item has left as the flags are carried out, in order
        touch = meta & pb.MG_TOUCH
        if touch and meta & pb.MG_TOUCH_FIRST:
            ttl = _ttl(request.ttl)
        won = False
        if meta & pb.MG_RECACHE and not bits & entry.WIN_SENT:
            won = ttl is not None and ttl < request.lease_ttl
        if bits & entry.STALE and not bits & entry.WIN_SENT:
            won = True
        answer = _meta(bits, won)
        if won:
            self.ops.changed(group, key)
            stored = entry.with_bits(stored, bits | entry.WIN_SENT)
            core.set(key, stored, left)
        if touch:
            self.ops.changed(group, key)
            group.touch(key, _ttl(request.ttl))
        value, flags, cas = entry.unpack_cas(stored)
        return pb.Response(id=request.id, value=value, flags=flags, cas=cas,
                           ttl=left or _NO_EXPIRY, meta=answer)

    def _vivify(self, group: Group, request) -> pb.Response:
        """N: the item, empty, made now; this get won it."""
        key, meta = request.key, request.meta
        ttl = _ttl(request.delta)
        if meta & pb.MG_TOUCH and not meta & pb.MG_TOUCH_BEFORE_VIVIFY:
            ttl = _ttl(request.ttl)  # T came after N: its ttl is the one that stays
        self.ops.changed(group, key)
        self.ops.cas += 1
        stored = entry.with_bits(entry.pack(b"", 0, self.ops.cas), entry.WIN_SENT)
        try:
            group.core.set(key, stored, ttl)
        except ValueError:  # a budget too small for an empty item: nothing made
            return pb.Response(id=request.id, status=pb.NOT_FOUND)
        group.sets += 1
        return pb.Response(id=request.id, cas=self.ops.cas,
                           meta=pb.ITEM_CREATED | pb.ITEM_WON)


def _ttl(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


def _meta(bits: int, won: bool) -> int:
    out = pb.ITEM_WON if won else 0
    if bits & entry.STALE:
        out |= pb.ITEM_STALE
    if bits & entry.WIN_SENT:
        out |= pb.ITEM_WIN_SENT
    return out


def mark_stale(ops: GroupOps, group: Group, request, stored: bytes) -> pb.Response:
    """md I: the item kept, marked stale, with a new CAS unique (and ttl, with T); its win
    handed out anew."""
    key = request.key
    value, flags, _ = entry.unpack_cas(stored)
    bits = (entry.bits(stored) | entry.STALE) & ~entry.WIN_SENT
    ttl = _ttl(request.ttl) if request.meta & pb.MG_TOUCH else group.ttl_left(key)
    ops.changed(group, key)
    ops.cas += 1
    group.core.set(key, entry.with_bits(entry.pack(value, flags, ops.cas), bits), ttl)
    return pb.Response(id=request.id, cas=ops.cas)


def store_stale(ops: GroupOps, group: Group, request, stored: bytes) -> pb.Response:
    """ms I with a CAS unique older than the item's: the value stored, marked stale, with
    the item's ttl and its win bit kept."""
    key = request.key
    bits = entry.STALE | (entry.bits(stored) & entry.WIN_SENT)
    ttl = group.ttl_left(key)
    response = ops.store(group, request, ttl=ttl)
    if response.status == pb.OK:
        group.core.set(key, entry.with_bits(group.core.get(key), bits), ttl)
    return response

