"""The router's write path: memcached's writes on a key's owner and its replicas.

With replicas, the first live replica decides (conditional writes are decided there, and
its CAS unique is the one clients see, since reads ask it first); the others follow:
with a plain SET of what it stored, or, for writes whose result only the node knows
(append, incr), with the same write.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet.defer import Deferred, DeferredList, fail

from router.cluster.errors import NodeUnavailable, TooLarge, UnknownGroup
from router.cluster.nearpath import flushed, written
from router.cluster.reads import node_failed
from shared import ringcache_pb2 as pb

OK, NOT_FOUND, NOT_STORED = pb.OK, pb.NOT_FOUND, pb.NOT_STORED

# Outcomes of a write, in memcached's terms.
STORED, NOT_STORED_, EXISTS, MISSING, NON_NUMERIC = (
    "stored", "not_stored", "exists", "not_found", "non_numeric")

# What a node's status means for each write op (absent: an error).
_OUTCOMES = {
    pb.SET: {OK: STORED, NOT_STORED: NOT_STORED_},
    pb.ADD: {OK: STORED, NOT_STORED: NOT_STORED_},
    pb.REPLACE: {OK: STORED, NOT_STORED: NOT_STORED_},
    pb.CAS: {OK: STORED, NOT_STORED: EXISTS, NOT_FOUND: MISSING},
    pb.APPEND: {OK: STORED, NOT_FOUND: NOT_STORED_, NOT_STORED: EXISTS},
    pb.PREPEND: {OK: STORED, NOT_FOUND: NOT_STORED_, NOT_STORED: EXISTS},
    pb.INCR: {OK: STORED, NOT_FOUND: MISSING, NOT_STORED: NON_NUMERIC},
    pb.DECR: {OK: STORED, NOT_FOUND: MISSING, NOT_STORED: NON_NUMERIC},
    pb.DELETE: {OK: STORED, NOT_FOUND: MISSING, NOT_STORED: EXISTS},
}
# Writes whose followers are sent the same request rather than a SET of the value.
_REPEATED = frozenset((pb.APPEND, pb.PREPEND, pb.INCR, pb.DECR, pb.DELETE))


class Written(NamedTuple):
    """A write's outcome (STORED, NOT_STORED_, EXISTS, MISSING or NON_NUMERIC), the CAS
    unique the deciding node stamped (0 if none) and, for incr/decr, the new value."""

    outcome: str
    cas: int = 0
    value: bytes = b""


class Writes:
    """The write half of Router (router/cluster/router.py)."""

    def write(self, op: int, group: str, key: bytes, value: bytes = b"",
              ttl: float | None = None, flags: int = 0, cas: int = 0,
              delta: int = 0, meta: int = 0) -> Deferred:
        """Any write op (SET ADD REPLACE CAS APPEND PREPEND INCR DECR, or DELETE with a
        CAS unique to check): a Deferred Written. ``meta``: its Meta bits (MARK_STALE:
        memcached's md I and ms I)."""
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        if len(value) > self.item_size_max:
            # As memcached does: a refused store must not leave the old value readable.
            error = TooLarge(f"value of {len(value)} bytes is over the item limit "
                             f"of {self.item_size_max}")
            return self._keyed(pb.DELETE, group, key).addBoth(lambda _: fail(error))
        request = (op, g.name, key, value, ttl or 0.0, flags, cas, delta, meta)
        return written(lambda: self._decide(request, self._replicas(g, key)), g, key)

    def _decide(self, request: tuple, replicas: list) -> Deferred:
        op, group, key, value, ttl, flags, cas, delta, meta = request
        d = replicas[0].request(op, group, key, value, ttl, flags, cas=cas, delta=delta,
                                meta=meta)
        d.addCallback(_written, op)
        if len(replicas) == 1:
            return d

        def follow(written: Written):
            if written.outcome != STORED:
                return written
            if op in _REPEATED:
                d = self._on_all(replicas[1:], op, group, key, value, ttl, flags, cas=0,
                                 delta=delta, meta=meta)
            else:
                d = self._on_all(replicas[1:], pb.SET, group, key, value, ttl, flags)
            # The write stands once the deciding replica has it; a follower that is
            # down is counted in replica_errors and refilled by later writes.
            return d.addBoth(lambda _: written)

        def next_decides(failure):
            # The deciding replica went away mid-request: the next one decides, and the
            # one that missed the write is told of it when it returns.
            failure.trap(NodeUnavailable)
            self.stats.replica_errors += 1
            self.hints.note(replicas[0].name, group, key)
            return self._decide(request, replicas[1:])

        return d.addCallbacks(follow, next_decides)

    def _on_all(self, clients, op, group, key, value=b"", ttl=0.0, flags=0, **fields) -> Deferred:
        """Send one request to several replicas; fires with the list of responses that came
        back. A replica that did not take it is given a hint (router/cluster/hints.py): it
        forgets the key when it returns, and is repaired on its next miss."""
        ds = [c.request(op, group, key, value, ttl, flags, **fields) for c in clients]

        def answered(results):
            responses = [r for ok, r in results if ok]
            self.stats.replica_errors += len(results) - len(responses)
            for client, (ok, result) in zip(clients, results):
                if not ok and result.check(NodeUnavailable):
                    self.hints.note(client.name, group, key)
            if not responses:
                return results[0][1]  # every replica failed: the first failure
            return responses

        return DeferredList(ds, consumeErrors=True).addCallback(answered)

    def set(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self.write(pb.SET, group, key, value, ttl, flags).addCallback(_stored)

    def add(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self.write(pb.ADD, group, key, value, ttl, flags).addCallback(_stored)

    def replace(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self.write(pb.REPLACE, group, key, value, ttl, flags).addCallback(_stored)

    def _keyed(self, op: int, group: str, key: bytes, ttl: float = 0.0) -> Deferred:
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        return written(lambda: self._keyed_on(op, g, key, ttl), g, key)

    def _keyed_on(self, op: int, g, key: bytes, ttl: float) -> Deferred:
        replicas = self._replicas(g, key)
        if len(replicas) == 1:
            return replicas[0].request(op, g.name, key, ttl=ttl).addCallback(self._found)
        d = self._on_all(replicas, op, g.name, key, ttl=ttl)
        return d.addCallback(lambda responses: any(self._found(r) for r in responses))

    @staticmethod
    def _found(response) -> bool:
        if response.status == OK:
            return True
        if response.status == NOT_FOUND:
            return False
        raise node_failed(response)

    def delete(self, group: str, key: bytes) -> Deferred:
        """True if the key was cached. A read-through group loads it again on next get."""
        return self._keyed(pb.DELETE, group, key)

    def touch(self, group: str, key: bytes, ttl: float | None) -> Deferred:
        return self._keyed(pb.TOUCH, group, key, ttl or 0.0)

    def flush(self, delay: float = 0.0) -> Deferred:
        """memcached's flush_all: every group on every node, now or ``delay`` seconds from
        now (each node applies the delay on its own clock). Fires with None once every
        node answered, or with the first failure."""
        return flushed(lambda: self._flush(delay), self.groups.values())

    def _flush(self, delay: float) -> Deferred:
        sent = [(client, group) for client in self.clients.values() for group in self.groups]
        ds = [client.request(pb.FLUSH_GROUP, group, ttl=delay) for client, group in sent]

        def flushed(results):
            for (client, group), (ok, result) in zip(sent, results):
                if not ok and result.check(NodeUnavailable):
                    self.hints.note(client.name, group, None)  # flushed when it returns
            for ok, result in results:
                if not ok:
                    return result
                if result.status != OK:
                    raise node_failed(result)
            return None

        return DeferredList(ds, consumeErrors=True).addCallback(flushed)


def _written(response, op: int) -> Written:
    outcome = _OUTCOMES[op].get(response.status)
    if outcome is None:
        if response.status == pb.TOO_LARGE:
            raise TooLarge(response.error)
        raise node_failed(response)
    return Written(outcome, response.cas, response.value)


def _stored(written: Written) -> bool:
    return written.outcome == STORED
