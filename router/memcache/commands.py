"""What memcached's commands do to the router, whichever protocol asked.

The text, meta and binary front ends turn their requests into these calls and the
outcomes (router.cluster.writes.Written, items, booleans) into their own words. Here live the
rules all three share: exptimes (relative, absolute, already past), a CAS unique turning
a store into a compare-and-swap, and incr/decr creating a missing counter when asked.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from router.memcache.text import EXPIRED, exptime_to_ttl
from router.cluster.writes import MISSING, NOT_STORED_, STORED, Written
from shared import ringcache_pb2 as pb

# The ttl of an item stored already expired (memcached's negative exptime) where the
# write must stay conditional: gone before anyone could read it back.
ALREADY_EXPIRED = 1e-6

OPS = {"set": pb.SET, "add": pb.ADD, "replace": pb.REPLACE, "append": pb.APPEND,
       "prepend": pb.PREPEND, "cas": pb.CAS}


def ttl(router, exptime: int):
    """Seconds to live for a memcached exptime, None for never, EXPIRED for already past."""
    return exptime_to_ttl(exptime, router.clock())


def store(router, mode: str, key: bytes, value: bytes, flags: int, exptime: int,
          cas: int = 0) -> Deferred:
    """set/add/replace/append/prepend/cas of a client key: a Deferred Written. A CAS
    unique other than 0 makes set/add/replace a cas (binary and meta requests carry one
    in any store); append/prepend keep their entry's flags and exptime."""
    group, key = router.resolve(key)
    op = OPS[mode]
    if cas and op in (pb.SET, pb.ADD, pb.REPLACE):
        op = pb.CAS
    seconds = ttl(router, exptime)
    if op in (pb.APPEND, pb.PREPEND):
        return router.write(op, group, key, value, None, 0, cas)
    if seconds is EXPIRED:
        if op == pb.SET:  # memcached stores it already expired: the key reads as absent
            return router.delete(group, key).addCallback(lambda _: Written(STORED))
        if op == pb.REPLACE:
            return router.delete(group, key).addCallback(
                lambda found: Written(STORED if found else NOT_STORED_))
        seconds = ALREADY_EXPIRED  # add and cas stay conditional
    return router.write(op, group, key, value, seconds, flags, cas)


def arith(router, key: bytes, incr: bool, delta: int, initial: int | None = None,
          exptime: int = 0) -> Deferred:
    """incr/decr: a Deferred Written whose value is the new number. With ``initial``
    (binary incr, meta ma with N) a missing key is created holding it, with ``exptime``,
    by the node in the same step."""
    group, key = router.resolve(key)
    op = pb.INCR if incr else pb.DECR
    if initial is None:
        return router.write(op, group, key, delta=delta)
    seconds = ttl(router, exptime)
    return router.write(op, group, key, b"%d" % initial,
                        ALREADY_EXPIRED if seconds is EXPIRED else seconds, delta=delta)


def touch(router, key: bytes, exptime: int) -> Deferred:
    """True if the key was there to get the new exptime (a past one removes it)."""
    group, key = router.resolve(key)
    seconds = ttl(router, exptime)
    if seconds is EXPIRED:
        return router.delete(group, key)
    return router.touch(group, key, seconds)


def gat(router, key: bytes, exptime: int, conn=None) -> Deferred:
    """The Item (or None) of a get that also sets the exptime of a hit; ``conn``: the
    client connection, by which a miss's load is queued."""
    group, key = router.resolve(key)
    seconds = ttl(router, exptime)
    return router.gat(group, key, ALREADY_EXPIRED if seconds is EXPIRED else seconds, conn)


def delete(router, key: bytes, cas: int = 0) -> Deferred:
    """A Deferred Written: STORED (deleted), MISSING, or EXISTS when ``cas`` names
    another version."""
    group, key = router.resolve(key)
    if cas:
        return router.write(pb.DELETE, group, key, cas=cas)
    return router.delete(group, key).addCallback(
        lambda found: Written(STORED if found else MISSING))


def flush(router, delay: int) -> Deferred:
    """flush_all: every item, now or at ``delay`` (an exptime), on every node."""
    seconds = ttl(router, delay) if delay > 0 else None
    return router.flush(0.0 if seconds is None or seconds is EXPIRED else seconds)
