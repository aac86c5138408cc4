"""The lease ops a node answers -- LEASE_GET, LEASE_FILL, LEASE_RELEASE -- and what the
readers waiting on a lease (storage_node/leases.py) are told when it ends.

A LEASE_GET is answered as a GET when the key is there and fresh. Otherwise it gets a
lease (NOT_FOUND with a token) when none is out, or waits for the one out. In a group
with grace (storage_node/grace.py), an entry past its ttl is answered too, marked stale:
within stale_while_revalidate at once, with a lease for its refresh if none is out yet;
past that (within stale_if_error) only as the fallback of a load: with the lease when it
can have one, else once the lease out ends in a failed load.

A lease ends in one of five ways, and its waiters are told:
- filled: each reads again, so gets what the fill stored (a value too large to store is
  handed to them as it came);
- voided by a write or flush of the key: each reads again, so gets what the write left,
  and if it left nothing the first gets a new lease and loads, the others wait on;
- lapsed: likewise, and the first of them gets the lease (handed on);
- given back, the source having no value: not found (the stale copy, if any, goes);
- given back, the load having failed: the stale copy within stale_if_error, else
  SOURCE_FAILED with why -- not a new load each, one after the other.
Answers to waiters go out in frames of their own once the frame being handled is
answered (``outbox``), to whichever connection each waiter came from.
"""

from __future__ import annotations

from collections.abc import Callable

from shared import entry
from shared import ringcache_pb2 as pb
from shared.framing import _HEADER, HEADER_SIZE
from shared.wire import RESPONSES, len_field
from storage_node.grace import lookup
from storage_node.groups import Group, GroupTable
from storage_node.leases import MAX_LIFE, LeaseTable, Waiter
from storage_node.ops import GroupOps, error

# An outbox frame for one connection is sent early past this many bytes.
FLUSH_BYTES = 4 << 20


class Outbox:
    """Answers owed to waiting readers, per connection (``peer.deliver(frame)``)."""

    def __init__(self):
        self._frames: dict[object, bytearray] = {}

    def add(self, peer, response: pb.Response) -> None:
        frame = self._frames.get(peer)
        if frame is None:
            frame = self._frames[peer] = bytearray(HEADER_SIZE)
        frame += len_field(RESPONSES, response.SerializeToString())
        if len(frame) >= FLUSH_BYTES:
            _send(peer, self._frames.pop(peer))

    def flush(self) -> None:
        frames, self._frames = self._frames, {}
        for peer, frame in frames.items():
            _send(peer, frame)


def _send(peer, frame: bytearray) -> None:
    _HEADER.pack_into(frame, 0, len(frame) - HEADER_SIZE)
    peer.deliver(frame)


class LeaseOps:
    """The lease ops of one node. ``peer`` is the connection whose frame is being handled
    (set by the node per frame): where a reader that waits is answered later."""

    def __init__(self, ops: GroupOps, groups: GroupTable, table: LeaseTable):
        self.ops = ops
        self.groups = groups
        self.table = table
        self.outbox = Outbox()
        self.peer = None
        table.on_lapse = self._lapsed

    def table_ops(self) -> dict[int, Callable]:
        return {pb.LEASE_GET: self.get, pb.LEASE_FILL: self.fill,
                pb.LEASE_RELEASE: self.release}

    # -- the ops -------------------------------------------------------------------------

    def get(self, group: Group, request, out: bytearray) -> pb.Response | None:
        life = request.lease_ttl
        if not 0 < life <= MAX_LIFE:
            return error(request, pb.ERROR, f"LEASE_GET needs lease_ttl, the lease's life in "
                                            f"seconds (up to {MAX_LIFE:.0f}), got {life!r}")
        return self._read(group, request, self.peer)

    def fill(self, group: Group, request, out: bytearray) -> pb.Response:
        waiters = self.table.take(group.spec.name, request.key, request.lease)
        if waiters is None:
            self.table.fills_dropped += 1
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        response = self.ops.store(group, request)
        if response.status == pb.TOO_LARGE:
            # Not cached, but loaded: those who waited for it get it as it came.
            self._tell(waiters, lambda rid: _loaded(rid, request))
        else:
            self._read_again(group, waiters)
        return response

    def release(self, group: Group, request, out: bytearray) -> pb.Response:
        key = request.key
        waiters = self.table.take(group.spec.name, key, request.lease)
        if waiters is None:
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        stored, past = lookup(group.core, key)
        stale = past is not None and entry.present(stored)
        if not request.meta & pb.LEASE_FAILED:
            if stale:  # the source no longer has it: nor does the cache
                self.ops.changed(group, key)
                group.core.delete(key)
            self._tell(waiters, lambda rid: pb.Response(id=rid, status=pb.NOT_FOUND))
        elif stale:
            self._tell(waiters, lambda rid: _entry(rid, group, key, stored, pb.IF_ERROR))
        else:
            why = request.value.decode("utf-8", "replace")
            self._tell(waiters, lambda rid: pb.Response(id=rid, status=pb.SOURCE_FAILED,
                                                        error=why))
        return pb.Response(id=request.id)

    # -- what ends a lease besides its holder ---------------------------------------------

    def written(self, group: Group, key: bytes) -> None:
        """``key`` was written: its lease is void, its waiters read again."""
        waiters = self.table.void(group.spec.name, key)
        if waiters:
            self._read_again(group, waiters)

    def flushed(self, name: str) -> None:
        """Group ``name`` was flushed (or is gone): every lease of it is void."""
        for key, waiters in self.table.void_group(name):
            group = self.groups.groups.get(name)
            if group is None:
                self._tell(waiters, lambda rid: pb.Response(
                    id=rid, status=pb.UNKNOWN_GROUP, error=f"unknown group {name!r}"))
            elif waiters:
                self._read_again(group, waiters)

    def _lapsed(self, name: str, key: bytes, waiters: list[Waiter]) -> None:
        group = self.groups.groups.get(name)
        if group is not None:
            self._read_again(group, waiters)
        self.outbox.flush()

    def forget(self, peer) -> None:
        self.table.forget(peer)

    # -- answers ---------------------------------------------------------------------------

    def _read(self, group: Group, request, peer, again: bool = False) -> pb.Response | None:
        """The answer to a LEASE_GET now, or None: it waits (``again``: it waited before)."""
        key = request.key
        name = group.spec.name
        stored, past = lookup(group.core, key)
        if stored is not None and past is None:
            group.hits += 1
            if stored == entry.NEGATIVE:
                return pb.Response(id=request.id, status=pb.NOT_FOUND, negative=True)
            return _entry(request.id, group, key, stored, pb.FRESH)
        group.misses += 1
        table = self.table
        lease = table.current(name, key)
        if past is not None and entry.present(stored):
            if past < group.core.swr:  # answered at once; one refresh behind it
                token = table.grant(name, key, request.lease_ttl) if lease is None else 0
                return _entry(request.id, group, key, stored, pb.REVALIDATE, token)
            if lease is None:  # loaded now, and answered if the load fails
                token = table.grant(name, key, request.lease_ttl)
                return _entry(request.id, group, key, stored, pb.IF_ERROR, token)
        elif lease is None:
            return pb.Response(id=request.id, status=pb.NOT_FOUND,
                               lease=table.grant(name, key, request.lease_ttl))
        if request.meta & pb.LEASE_NO_WAIT:
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        if peer is None or not table.wait(name, key, Waiter(peer, request), again):
            return error(request, pb.ERROR,
                         f"too many readers waiting for leases on this node (at most "
                         f"{table.max_waiting}, {table.max_waiting_bytes} bytes)")
        return None

    def _read_again(self, group: Group, waiters: list[Waiter]) -> None:
        for waiter in waiters:
            response = self._read(group, waiter.request, waiter.peer, again=True)
            if response is not None:
                self.outbox.add(waiter.peer, response)

    def _tell(self, waiters: list[Waiter], answer: Callable[[int], pb.Response]) -> None:
        for waiter in waiters:
            self.outbox.add(waiter.peer, answer(waiter.request.id))


def _entry(rid: int, group: Group, key: bytes, stored: bytes, stale: int,
           token: int = 0) -> pb.Response:
    value, flags, cas = entry.unpack_cas(stored)
    ttl = group.ttl_left(key) or 0.0
    return pb.Response(id=rid, value=value, flags=flags, cas=cas, ttl=ttl, stale=stale,
                       lease=token)


def _loaded(rid: int, request) -> pb.Response:
    if request.negative:
        return pb.Response(id=rid, status=pb.NOT_FOUND, negative=True)
    return pb.Response(id=rid, value=request.value, flags=request.flags)
