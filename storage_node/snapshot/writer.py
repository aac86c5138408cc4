"""One snapshot of a node's groups as file blocks (shared/snapshot.py), made a slice at a time.

``step(budget)`` walks the groups' cores (storage_node/cores/walk.py) for about
``budget`` seconds and returns the entry blocks made meanwhile, so that the reactor can
serve between two slices: a walk never holds it longer than one slice, whatever the
number of entries. The final snapshot, as the node stops, takes the whole walk in one go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from shared.snapshot import ENTRIES, MAGIC, GroupHeader, Header, Trailer, block, walked_payload
from storage_node.cores.walk import walker

# Entries per take(): one entry block each (about 120 KiB of 100-byte entries).
BLOCK_ENTRIES = 1024


class SnapshotWalk:
    def __init__(self, groups: list, header: Header, wall: Callable[[], float],
                 timer: Callable[[], float] = time.perf_counter):
        self.groups = list(groups)  # storage_node.groups.Group, in the header's order
        self.header = header
        self._wall = wall
        self._timer = timer
        self._index = -1
        self._cursor = None
        self.entries = [0] * len(self.groups)
        self.blocks = 0
        self.unlisted: list[str] = []  # groups whose core cannot list its entries
        self.done = False

    @classmethod
    def of(cls, groups: list, node: str, wall: Callable[[], float], clock: Callable[[], float],
           journal: int = 0, final: bool = False, **kwargs) -> SnapshotWalk:
        """A walk of ``groups`` (live Group objects) with their header; a delayed flush
        still pending is recorded on the wall clock."""
        now, wall_now = clock(), wall()
        headers = []
        for group in groups:
            group.flush_due(now)
            flush_at = None if group.flush_at is None else wall_now + (group.flush_at - now)
            headers.append(GroupHeader(group.spec.name, group.spec.policy, group.spec.max_bytes,
                                       flush_at))
        header = Header(node=node, created_at=wall_now, groups=headers, journal=journal,
                        final=final)
        return cls(groups, header, wall, **kwargs)

    def header_block(self) -> bytes:
        """The file's start: MAGIC and the header block."""
        return MAGIC + self.header.encode()

    def trailer_block(self, cas: int) -> bytes:
        return Trailer(entries=self.entries, blocks=self.blocks, cas=cas).encode()

    def step(self, budget: float = math.inf) -> list[bytes]:
        """The entry blocks of about ``budget`` seconds of walking (at least one take)."""
        end = self._timer() + budget
        out = []
        while not self.done:
            if self._cursor is None and not self._next_group():
                break
            batch = self._cursor.take(BLOCK_ENTRIES)
            if not batch:
                self._cursor = None
                continue
            out.append(self._encode(batch))
            if self._timer() >= end:
                break
        return out

    def _next_group(self) -> bool:
        while self._index + 1 < len(self.groups):
            self._index += 1
            group = self.groups[self._index]
            self._cursor = walker(group.core)
            if self._cursor is not None:
                return True
            self.unlisted.append(group.spec.name)
        self.done = True
        return False

    def _encode(self, batch: list[tuple]) -> bytes:
        self.entries[self._index] += len(batch)
        self.blocks += 1
        return block(ENTRIES, walked_payload(self._index, batch, self._wall()))
