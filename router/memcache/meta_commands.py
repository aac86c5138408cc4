"""Carrying out memcached's meta commands (router/memcache/meta.py's events) on the router.

``carry_out(router, meta, conn)`` answers a Deferred of the bytes to send (b"" when quiet
mode hides the answer); failures are left to the connection, which words them as for any
command. ``conn`` is the client connection, by which a miss's load is queued.
"""

from __future__ import annotations

from twisted.internet.defer import succeed

from router.memcache import commands
from router.cluster.items import Item
from router.memcache.meta import EN, MN, Meta, answer
from router.cluster.writes import EXISTS, MISSING, NON_NUMERIC, NOT_STORED_, STORED

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
    return _COMMANDS[command](router, meta)


def _ttl_flag(meta: Meta) -> int:
    # Nodes do not report an item's remaining ttl: t is known only when T just set it.
    return meta.get("T", -1) if meta.has("T") else -1


def _mg(router, meta: Meta, conn):
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
                       meta.get("T", 0), meta.get("C", 0))

    def stored(written):
        if written.outcome == STORED and meta.quiet:
            return b""
        return answer(_CODES[written.outcome], meta,
                      {"c": written.cas, "s": len(meta.value)} if written.cas else {})

    return d.addCallback(stored)


def _md(router, meta: Meta):
    # I (invalidate) deletes: ringcache keeps no stale items to mark.
    d = commands.delete(router, meta.key, meta.get("C", 0))

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


_COMMANDS = {"ms": _ms, "md": _md, "ma": _ma}  # and mg, which reads for a connection
