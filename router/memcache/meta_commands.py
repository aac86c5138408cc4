"""Carrying out memcached's meta commands (router/memcache/meta.py's events) on the router.

``carry_out(router, meta, conn)`` answers a Deferred of the bytes to send (b"" when quiet
mode hides the answer); failures are left to the connection, which words them as for any
command. ``conn`` is the client connection, by which a miss's load is queued.
"""

from __future__ import annotations

import math

from twisted.internet.defer import succeed

from router.memcache import commands
from router.cluster.items import Item
from router.cluster.metaget import UNANSWERED
from router.memcache.meta import EN, MN, Meta, answer
from router.cluster.writes import EXISTS, MISSING, NON_NUMERIC, NOT_STORED_, STORED
from shared import ringcache_pb2 as pb

# An ms/md/ma outcome in meta words.
_CODES = {STORED: b"HD", NOT_STORED_: b"NS", EXISTS: b"EX", MISSING: b"NF"}
NON_NUMERIC_LINE = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"


def carry_out(router, meta: Meta, conn=None):
    command = meta.command
    if command == "mn":
        return succeed(MN)
    if command == "me":
        # No item metadata to dump: a proxy holds none (protocol.txt lets me answer EN).
        return succeed(EN)
    if command == "mg":
        return _mg(router, meta, conn)
    return _RUN[command](router, meta)


def _ttl_flag(meta: Meta) -> int:
    # (A node without META_GET does not report an item's remaining ttl: t is known only
    # when T just set it.)
    return meta.get("T", -1) if meta.has("T") else -1


def _mg(router, meta: Meta, conn):
    """mg with memcached's anti-stampede flags, carried out on the key's owner."""
    order = meta.order
    bits, ttl, vivify, recache = 0, None, None, 0.0
    if meta.has("T"):
        bits |= pb.MG_TOUCH
        ttl = commands.ttl_or_expired(router, meta.get("T"))
        if "R" in order and order.index("T") < order.index("R"):
            bits |= pb.MG_TOUCH_FIRST
        if "N" in order and order.index("T") < order.index("N"):
            bits |= pb.MG_TOUCH_BEFORE_VIVIFY
    if meta.has("N"):
        bits |= pb.MG_VIVIFY
        vivify = commands.ttl_or_expired(router, meta.get("N"))
    if meta.has("R"):
        bits |= pb.MG_RECACHE
        recache = commands.ttl_or_expired(router, meta.get("R")) or 0.0
    group, key = router.resolve(meta.key)
    d = router.meta_get(group, key, bits, ttl, vivify, recache, conn)

    def answered(item):
        if item is UNANSWERED:
            return _mg_plain(router, meta, conn)
        return _mg_answer(meta, item, ttl, vivify)

    return d.addCallback(answered)


def _mg_answer(meta: Meta, item, ttl, vivify) -> bytes:
    if item is None:
        return b"" if meta.quiet else EN
    created = item.meta & pb.ITEM_CREATED
    shown = -1 if created else _seconds(item.ttl)
    for flag in meta.order:  # t shows the ttl as the flags before it left it
        if flag == "t":
            break
        if flag == "T" or (flag == "N" and created):
            shown = _seconds(ttl if flag == "T" else vivify)
    extra = []
    if item.meta & pb.ITEM_WIN_SENT:
        extra.append(b"Z")
    if item.meta & pb.ITEM_STALE or item.stale is not None:
        extra.append(b"X")
    if item.meta & pb.ITEM_WON:
        extra.append(b"W")
    fields = {"c": item.cas, "f": item.flags, "s": len(item.value), "t": shown,
              "v": item.value, "extra": extra}
    return answer(b"VA" if meta.has("v") else b"HD", meta, fields)


def _seconds(ttl: float | None) -> int:
    """An item's ttl as memcached shows it: whole seconds left, -1 for none."""
    return -1 if ttl is None else math.ceil(ttl - 1e-6)


def _mg_plain(router, meta: Meta, conn):
    """mg on a node without META_GET (an older release): a get (or gat), and N by add."""
    if meta.has("T"):
        d = commands.gat(router, meta.key, meta.get("T"), conn)
    else:
        d = router.get(*router.resolve(meta.key), conn=conn)

    def got(item, won=False):
        if item is None:
            if meta.has("N"):
                return vivify()
            return b"" if meta.quiet else EN
        fields = {"c": item.cas, "f": item.flags, "s": len(item.value), "t": _ttl_flag(meta),
                  "v": item.value}
        if won:
            fields["extra"] = (b"W",)
        return answer(b"VA" if meta.has("v") else b"HD", meta, fields)

    def vivify():
        # N: the first client to miss creates an empty item and is told it won (W) the
        # right to fill it; a client that loses the race reads what the winner made.
        added = commands.store(router, "add", meta.key, b"", 0, meta.get("N"))

        def vivified(written):
            if written.outcome == STORED:
                return got(Item(b"", 0, written.cas), won=True)
            return router.get(*router.resolve(meta.key), conn=conn).addCallback(got)

        return added.addCallback(vivified)

    return d.addCallback(got)


def _ms(router, meta: Meta):
    d = commands.store(router, meta.get("M", "set"), meta.key, meta.value, meta.get("F", 0),
                       meta.get("T", 0), meta.get("C", 0), stale=meta.has("I"))

    def stored(written):
        if written.outcome == STORED and meta.quiet:
            return b""
        return answer(_CODES[written.outcome], meta,
                      {"c": written.cas, "s": len(meta.value)} if written.cas else {})

    return d.addCallback(stored)


def _md(router, meta: Meta):
    # I keeps the item, marked stale (and T gives it a new ttl); T alone changes nothing.
    stale = meta.has("I")
    d = commands.delete(router, meta.key, meta.get("C", 0), stale,
                        meta.get("T") if stale and meta.has("T") else None)

    def deleted(written):
        if written.outcome == STORED and meta.quiet:
            return b""
        return answer(_CODES[written.outcome], meta, {})

    return d.addCallback(deleted)


def _ma(router, meta: Meta):
    initial = meta.get("J", 0) if meta.has("N") else None
    d = commands.arith(router, meta.key, meta.get("M", "incr") == "incr", meta.get("D", 1),
                       initial, meta.get("N", 0))

    def counted(written):
        if written.outcome == NON_NUMERIC:
            return NON_NUMERIC_LINE
        if written.outcome != STORED:
            return answer(_CODES[written.outcome], meta, {})
        if meta.has("T"):
            return commands.touch(router, meta.key, meta.get("T")).addCallback(
                lambda _: reply(written))
        return reply(written)

    def reply(written):
        if not meta.has("v") and meta.quiet:
            return b""
        fields = {"c": written.cas, "t": _ttl_flag(meta), "v": written.value}
        return answer(b"VA" if meta.has("v") else b"HD", meta, fields)

    return d.addCallback(counted)


_RUN = {"ms": _ms, "md": _md, "ma": _ma}  # and mg, which reads for a connection
