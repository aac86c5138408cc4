"""DUMP and RESTORE: a group's entries streamed out a block at a time, coldest first
(`ringcache backup` and `keys`, memcached's `lru_crawler metadump`), and taken back in
(`ringcache restore`). Blocks are shared/snapshot.py's entry blocks, so a backup file is
the same format as a node's snapshot.

A DUMP begins a walk of the group's core (storage_node/cores/walk.py) and answers its
first entries with the walk's id; the router asks again with that id for the next ones.
Walks left idle for IDLE seconds are dropped, and at most MAX_WALKS are open at a time
(the oldest goes), so a router that stops asking costs the node nothing for long.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shared import entry
from shared import ringcache_pb2 as pb
from shared.snapshot import SnapshotError, decode_entries, walked_payload
from storage_node.cores.walk import restorer, walker
from storage_node.groups import Group
from storage_node.ops import GroupOps, error

MAX_ENTRIES = 4096  # entries in one DUMP answer at most
MAX_BYTES = 4 << 20  # and about this many bytes of keys and values
SCAN = 64  # entries a walk passes over per entry answered, at most, looking for a prefix
MAX_WALKS = 64
IDLE = 60.0  # seconds


class _Walk:
    __slots__ = ("group", "cursor", "left", "used")

    def __init__(self, group: Group, cursor, used: float):
        self.group, self.cursor, self.left, self.used = group, cursor, [], used


class Transfers:
    def __init__(self, ops: GroupOps, clock: Callable[[], float],
                 wall: Callable[[], float] = time.time):
        self.ops = ops
        self.clock = clock
        self.wall = wall
        self._walks: OrderedDict[int, _Walk] = OrderedDict()
        self._next = 0

    def table(self) -> dict[int, Callable]:
        return {pb.DUMP: self.dump, pb.RESTORE: self.restore}

    def dump(self, group: Group, request, out: bytearray) -> pb.Response:
        now = self.clock()
        self._expire(now)
        if request.cas:
            walk = self._walks.pop(request.cas, None)
            if walk is None or walk.group is not group:
                return error(request, pb.NOT_FOUND, f"no walk {request.cas} of group "
                                                    f"{group.spec.name!r} (idle walks end after {IDLE:.0f} s)")
        else:
            cursor = walker(group.core)
            if cursor is None:
                return error(request, pb.ERROR, f"group {group.spec.name!r}: its core cannot "
                                                f"list its entries")
            walk = _Walk(group, cursor, now)
        wanted = min(request.delta or MAX_ENTRIES, MAX_ENTRIES)
        room = min(MAX_BYTES, max(self.ops.room, 0))
        batch, done = self._take(walk, wanted, room, request.key, bool(request.flags & 1))
        # Framed by the router, which names the group's place in its own file.
        payload = walked_payload(0, batch, self.wall())
        self.ops.room -= len(payload)
        if done:
            return pb.Response(id=request.id, value=payload)
        self._next += 1
        walk.used = now
        self._walks[self._next] = walk
        while len(self._walks) > MAX_WALKS:
            self._walks.popitem(last=False)
        return pb.Response(id=request.id, value=payload, cas=self._next)

    @staticmethod
    def _take(walk: _Walk, wanted: int, room: int, prefix: bytes, keys_only: bool):
        """Up to ``wanted`` entries (about ``room`` bytes) whose keys start with
        ``prefix``; and whether the walk is over."""
        out, size, scanned = [], 0, 0
        while len(out) < wanted and size < room and scanned < SCAN * wanted:
            if not walk.left:
                walk.left = walk.cursor.take(min(wanted, 1024))
                if not walk.left:
                    return out, True
                walk.left.reverse()  # popped from the end, coldest first
            key, value, ttl, rank = walk.left.pop()
            scanned += 1
            if prefix and not key.startswith(prefix):
                continue
            if keys_only:
                value = b""
            out.append((key, value, ttl, rank))
            size += len(key) + len(value)
        return out, False

    def restore(self, group: Group, request, out: bytearray) -> pb.Response:
        try:
            _, entries = decode_entries(request.value, groups=1)
        except SnapshotError as exc:
            return error(request, pb.ERROR, f"RESTORE: {exc}")
        put = restorer(group.core, same_policy=False)
        now, stored = self.wall(), 0
        for key, value, deadline, _ in entries:
            ttl = None
            if deadline is not None:
                ttl = deadline - now
                if not ttl > 0:
                    continue
            if not value:
                continue  # a keys-only block holds no entry to store
            if entry.present(value):
                try:
                    self.ops.seen_cas(entry.unpack_cas(value)[2])
                except ValueError:
                    continue  # not an entry this node can read
            self.ops.changed(group, key)
            try:
                put(key, value, ttl, None)
            except ValueError:
                continue  # larger than this node's budget for the group
            stored += 1
        group.sets += stored
        return pb.Response(id=request.id, cas=stored)

    def _expire(self, now: float) -> None:
        while self._walks:
            walk_id, walk = next(iter(self._walks.items()))
            if now - walk.used < IDLE:
                return
            del self._walks[walk_id]
