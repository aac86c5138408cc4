"""The group ops a node answers: reads, stores, deletes, touches and flushes of one group.

Each op takes the group and the request and returns the response, or appends it to the
answer frame ``out`` itself and returns None (the hot ones). The read-modify-write ops
(storage_node/rmw.py) store through ``GroupOps.store``.
"""

from __future__ import annotations

from collections.abc import Callable

from shared import entry
from shared import ringcache_pb2 as pb
from shared.codec import append_get_many, append_response
from shared.net import UNCOPIED
from storage_node.groups import Group

# Error texts are cut to this many characters.
ERROR_MAX = 200
TOO_BIG = "the answers of this frame exceed one frame; ask for fewer keys at once"


class GroupOps:
    """The plain group ops, and what they share: the CAS unique counter and the room left
    in the answer frame being built (``room``, set by the node per frame).

    ``journal.note(group, key)`` is told of every key a write may change, before its
    answer is sent (storage_node/snapshot/journal.py keeps them, so that a node restarted
    after a crash forgets what changed since its last snapshot); a FLUSH_GROUP notes key
    None. The default journal keeps nothing.
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.cas = 0  # the last CAS unique given out: every store gets the next one
        self.room = 0
        # Where GET_MANY leaves its large entries, uncopied (shared/codec.py
        # append_get_many), while the node builds a frame sent in pieces; else None.
        self.pieces = None
        self.journal = NoJournal()

    def changed(self, group: Group, key: bytes | None) -> None:
        self.journal.note(group.spec.name, key)

    def table(self) -> dict[int, Callable]:
        return {
            pb.GET: self.get,
            pb.GET_MANY: self.get_many,
            pb.SET: self.set,
            pb.ADD: self.add,
            pb.REPLACE: self.replace,
            pb.DELETE: self.delete,
            pb.TOUCH: self.touch,
            pb.FLUSH_GROUP: self.flush,
            pb.GAT: self.gat,
        }

    def seen_cas(self, cas: int) -> None:
        """An entry with CAS unique ``cas`` came back (a restored snapshot): later stores
        get uniques above it, so a client's ``cas`` can never match a newer entry."""
        if cas > self.cas:
            self.cas = cas

    def wrap(self, request, value: bytes | None = None, flags: int | None = None) -> bytes:
        """What a store keeps (shared/entry.py), stamped with a fresh CAS unique (then in
        ``self.cas``); the entry's extra bytes count in the core's budget."""
        if request.negative:
            return entry.NEGATIVE
        self.cas += 1
        return entry.pack(request.value if value is None else value,
                          request.flags if flags is None else flags, self.cas)

    def get(self, group: Group, request, out: bytearray) -> pb.Response | None:
        stored = group.core.get(request.key)
        if stored is None:
            group.misses += 1
            append_response(out, request.id, pb.NOT_FOUND)
            return
        group.hits += 1
        if stored == entry.NEGATIVE:
            append_response(out, request.id, pb.NOT_FOUND, negative=True)
            return
        value, flags, cas = entry.unpack_cas(stored)
        if len(value) > self.room:
            append_response(out, request.id, pb.TOO_LARGE, error=TOO_BIG)
            return None
        self.room -= len(value)
        ttl = group.ttl_left(request.key)
        if ttl:  # (a copy made from this answer, a warm-up or a repair, keeps the deadline)
            return pb.Response(id=request.id, value=value, flags=flags, cas=cas, ttl=ttl)
        append_response(out, request.id, value=value, flags=flags, cas=cas)
        return None

    def gat(self, group: Group, request, out: bytearray) -> pb.Response | None:
        # memcached's gat: a hit gets the new ttl; a miss is a miss (cached absences too).
        if entry.present(group.core.get(request.key)):
            self.changed(group, request.key)
            group.touch(request.key, ttl_of(request))
        return self.get(group, request, out)

    def get_many(self, group: Group, request, out: bytearray) -> None:
        # The multi-get hot path: entries go back as stored (never empty), b"" for a
        # miss, so the loop is the core's get and nothing else.
        keys = request.keys
        answered = append_get_many(out, request.id, group.core.get, keys, self.room,
                                   self.pieces, UNCOPIED)
        if answered is None:
            append_response(out, request.id, pb.TOO_LARGE, error=TOO_BIG)
            return
        hits, size = answered
        self.room -= size
        group.hits += hits
        group.misses += len(keys) - hits

    def store(self, group: Group, request, out: bytearray | None = None,
              value: bytes | None = None, flags: int | None = None,
              ttl: float | None | bool = False) -> pb.Response | None:
        """Store the request's value (or ``value``/``flags``/``ttl`` where given) and
        answer OK with its CAS unique."""
        self.changed(group, request.key)
        try:
            group.core.set(request.key, self.wrap(request, value, flags),
                           ttl_of(request) if ttl is False else ttl)
        except ValueError:
            # As memcached does: a refused store must not leave the old value readable,
            # or a client that overwrote the key would read what it replaced.
            group.core.delete(request.key)
            size = len(request.key) + len(request.value if value is None else value)
            overhead = getattr(group.core, "entry_overhead", 0)
            charged = f" (+{overhead} charged per entry)" if overhead else ""
            return error(
                request,
                pb.TOO_LARGE,
                f"key and value of {size} bytes{charged} do not fit group {group.spec.name!r} "
                f"(budget {group.budget} bytes)",
            )
        group.sets += 1
        cas = 0 if request.negative else self.cas
        if out is None:
            return pb.Response(id=request.id, cas=cas)
        append_response(out, request.id, cas=cas)
        return None

    def set(self, group: Group, request, out: bytearray) -> pb.Response | None:
        return self.store(group, request, out)

    def add(self, group: Group, request, out: bytearray) -> pb.Response | None:
        if entry.present(group.core.get(request.key)):
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return self.store(group, request, out)

    def replace(self, group: Group, request, out: bytearray) -> pb.Response | None:
        if not entry.present(group.core.get(request.key)):
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return self.store(group, request, out)

    def delete(self, group: Group, request, out: bytearray) -> pb.Response | None:
        if request.cas:  # only the version it names (memcached's delete with a CAS unique)
            stored = group.core.get(request.key)
            if entry.present(stored) and entry.unpack_cas(stored)[2] != request.cas:
                return pb.Response(id=request.id, status=pb.NOT_STORED)
        self.changed(group, request.key)
        found = group.core.delete(request.key)
        return pb.Response(id=request.id, status=pb.OK if found else pb.NOT_FOUND)

    def touch(self, group: Group, request, out: bytearray) -> pb.Response | None:
        # A negative entry is an absence: touching it must answer NOT_FOUND.
        found = entry.present(group.core.get(request.key))
        if found:
            self.changed(group, request.key)
            found = group.touch(request.key, ttl_of(request))
        return pb.Response(id=request.id, status=pb.OK if found else pb.NOT_FOUND)

    def flush(self, group: Group, request, out: bytearray) -> pb.Response | None:
        """Drop every entry now, or (Request.ttl seconds) later: memcached's
        ``flush_all <delay>`` drops what is stored until then and nothing stored after.
        A flush now cancels one pending, as in memcached."""
        self.changed(group, None)
        if request.ttl > 0:
            group.flush_at = self.clock() + request.ttl
        else:
            group.flush_at = None
            group.core.clear()
        return pb.Response(id=request.id)


def ttl_of(request: pb.Request) -> float | None:
    return request.ttl if request.ttl > 0 else None


def error(request: pb.Request, status: int, text: str) -> pb.Response:
    if len(text) > ERROR_MAX:
        text = text[:ERROR_MAX - 3] + "..."
    return pb.Response(id=request.id, status=status, error=text)


class NoJournal:
    """The journal of a node without a data dir: nothing to remember."""

    def note(self, group: str, key: bytes | None) -> None:
        return None

    def sync(self) -> None:
        return None
