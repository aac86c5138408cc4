"""The router's write path: set/add/replace/delete/touch on a key's owner and its replicas.

With replicas, the first live replica decides (add and replace are conditional there) and
the others follow with a plain SET of what it stored.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList, fail

from router.errors import NodeUnavailable, TooLarge, UnknownGroup
from router.items import Group
from router.reads import node_failed
from shared import ringcache_pb2 as pb

OK, NOT_FOUND, NOT_STORED = pb.OK, pb.NOT_FOUND, pb.NOT_STORED


class Writes:
    """The write half of Router (router/core.py)."""

    def _store(self, op: int, group: str, key: bytes, value: bytes, ttl: float | None,
               flags: int) -> Deferred:
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        if len(value) > self.item_size_max:
            # As memcached does: a refused store must not leave the old value readable.
            error = TooLarge(f"value of {len(value)} bytes is over the item limit "
                             f"of {self.item_size_max}")
            return self._keyed(pb.DELETE, group, key).addBoth(lambda _: fail(error))
        return self._write(op, g, key, value, ttl or 0.0, flags, self._replicas(g, key))

    def _write(self, op: int, g: Group, key: bytes, value: bytes, ttl: float, flags: int,
               replicas: list) -> Deferred:
        d = replicas[0].request(op, g.name, key, value, ttl, flags)
        d.addCallback(self._stored)
        if len(replicas) == 1:
            return d

        # The first live replica decides (add/replace are conditional there); the
        # others follow with a plain SET of what it stored.
        def follow(stored: bool):
            if not stored:
                return False
            d = self._on_all(replicas[1:], pb.SET, g.name, key, value, ttl, flags)
            # The write stands once the deciding replica has it; a follower that is
            # down is counted in replica_errors and refilled by later writes.
            return d.addBoth(lambda _: True)

        def next_decides(failure):
            # The deciding replica went away mid-request: the next one decides.
            failure.trap(NodeUnavailable)
            self.stats.replica_errors += 1
            return self._write(op, g, key, value, ttl, flags, replicas[1:])

        return d.addCallbacks(follow, next_decides)

    @staticmethod
    def _stored(response) -> bool:
        if response.status == OK:
            return True
        if response.status == NOT_STORED:
            return False
        if response.status == pb.TOO_LARGE:
            raise TooLarge(response.error)
        raise node_failed(response)

    def _on_all(self, clients, op, group, key, value=b"", ttl=0.0, flags=0) -> Deferred:
        """Send one request to several replicas; fires with the list of responses that came
        back (a replica that is down is skipped: it is refilled on its next miss)."""
        ds = [c.request(op, group, key, value, ttl, flags) for c in clients]

        def answered(results):
            responses = [r for ok, r in results if ok]
            self.stats.replica_errors += len(results) - len(responses)
            if not responses:
                return results[0][1]  # every replica failed: the first failure
            return responses

        return DeferredList(ds, consumeErrors=True).addCallback(answered)

    def set(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.SET, group, key, value, ttl, flags)

    def add(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.ADD, group, key, value, ttl, flags)

    def replace(self, group, key, value, ttl=None, flags=0) -> Deferred:
        return self._store(pb.REPLACE, group, key, value, ttl, flags)

    def _keyed(self, op: int, group: str, key: bytes, ttl: float = 0.0) -> Deferred:
        g = self.groups.get(group)
        if g is None:
            return fail(UnknownGroup(group))
        replicas = self._replicas(g, key)
        if len(replicas) == 1:
            return replicas[0].request(op, group, key, ttl=ttl).addCallback(self._found)
        d = self._on_all(replicas, op, group, key, ttl=ttl)
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
