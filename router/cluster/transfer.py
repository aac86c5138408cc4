"""Every entry of the cluster out, and back in: `ringcache backup`, `restore` and `keys`.

``dump`` walks each group on each node (the nodes' DUMP op, storage_node/transfer.py) and
hands on the entries the ring serves from that node (its first live copy of the key):
an entry left on a node from an older ring, or a second copy, is not served, so it is not
backed up either. A node that is down fails the dump (its keys cannot be read), unless
the group is replicated: its keys come from their next copies then. Blocks go out one at a time, each after the sink took the one before,
so memory stays at a block or two whatever the number of entries.

``restore`` reads a snapshot or backup file (shared/snapshot.py) block by block and sends
each entry to its owners on the current ring (every copy of a replicated group) with the
nodes' RESTORE op, a batch per node at a time and at most WINDOW batches unanswered, so
it also moves entries onto new nodes or a new ring, keeping their flags and remaining ttl.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, DeferredList

from router.cluster.errors import NodeError, UnknownGroup
from router.cluster.nodeclient import UP
from router.cluster.ring import routing_key
from shared import ringcache_pb2 as pb
from shared.snapshot import (
    ENTRIES,
    HAS_DEADLINE,
    MAGIC,
    NO_RANK,
    GroupHeader,
    Header,
    Reader,
    Trailer,
    block,
    decode_entries,
    entries_payload,
)

DUMP_BATCH = 4096  # entries asked of a node at a time
RESTORE_BATCH = 1000  # entries sent to a node per RESTORE
WINDOW = 16  # RESTORE batches unanswered at most


@dataclass
class Summary:
    entries: int = 0  # read (restore) or written (dump)
    stored: int = 0  # stored by the nodes (restore)
    skipped_groups: dict[str, int] = field(default_factory=dict)  # not in the topology
    expired: int = 0

    def as_dict(self) -> dict:
        return {"entries": self.entries, "stored": self.stored, "expired": self.expired,
                "skipped_groups": self.skipped_groups}


def groups_of(router, only: str | None) -> list:
    if only is None:
        return list(router.groups.values())
    if only not in router.groups:
        raise UnknownGroup(only)
    return [router.groups[only]]


def header_of(router, groups: list, wall: float) -> Header:
    return Header(node=f"router ring {router.ring.digest}", created_at=wall, kind="backup",
                  groups=[GroupHeader(g.name, g.spec.policy, g.spec.max_bytes) for g in groups])


async def dump(router, groups: list, emit: Callable[[list[tuple], int], Awaitable],
               prefix: bytes = b"", keys_only: bool = False) -> Summary:
    """For each group, node by node: ``await emit(entries, group_index)`` with the entries
    (key, stored entry, deadline, rank) the ring serves from that node."""
    summary = Summary()
    for index, g in enumerate(groups):
        for name in router.ring.weights:
            client = router.clients[name]
            if g.spec.replicas > 1 and client.state != UP:
                continue  # its keys are served, and dumped, from their next copies
            cursor = 0
            while True:
                response = await client.request(pb.DUMP, g.name, prefix, cas=cursor,
                                                delta=DUMP_BATCH, flags=1 if keys_only else 0)
                if response.status != pb.OK:
                    raise NodeError(f"node {name}: DUMP of group {g.name!r}: "
                                    f"{response.error or pb.Status.Name(response.status)}")
                _, entries = decode_entries(response.value, groups=1)
                served = [e for e in entries if _served_by(router, g, e[0], name)]
                if served:
                    summary.entries += len(served)
                    await emit(served, index)
                cursor = response.cas
                if not cursor:
                    break
    return summary


def _served_by(router, g, key: bytes, name: str) -> bool:
    rk = routing_key(g.name, key)
    if g.spec.replicas == 1:
        return router.ring.owner(rk) == name
    for owner in router.ring.owners(rk, g.spec.replicas):
        if router.clients[owner].state == UP:
            return owner == name
    return False


def entry_block(index: int, entries: list[tuple]) -> bytes:
    """An entry block of decoded entries (key, stored, deadline or None, rank or None)."""
    return block(ENTRIES, entries_payload(index, *_columns(entries)))


def file_start(header: Header) -> bytes:
    return MAGIC + header.encode()


def file_end(counts: list[int], blocks: int) -> bytes:
    return Trailer(entries=counts, blocks=blocks, cas=0).encode()


async def restore(router, read, only: str | None, wall: float,
                  progress: Callable[[int], None] = lambda n: None) -> Summary:
    """Every entry of the file ``read`` reads (a binary file's read) onto its owners now.
    A damaged file raises SnapshotError: what came before the damage is stored already."""
    reader = Reader(read)
    names = [g.name for g in reader.header.groups]
    if only is not None and only not in names:
        raise UnknownGroup(only)
    summary = Summary()
    window: list[Deferred] = []
    pending: dict[tuple[str, str], list] = {}

    async def send(client, group: str, entries: list) -> None:
        payload = entries_payload(0, *_columns(entries, ranks=False))
        d = client.request(pb.RESTORE, group, value=payload)
        d.addCallback(_stored, client.name, summary)
        window.append(d)
        if len(window) >= WINDOW:
            first = window.pop(0)
            await first

    for index, entries in reader.entry_blocks():
        name = names[index]
        progress(len(entries))
        summary.entries += len(entries)
        if only is not None and name != only:
            continue
        g = router.groups.get(name)
        if g is None:
            summary.skipped_groups[name] = summary.skipped_groups.get(name, 0) + len(entries)
            continue
        for item in entries:
            deadline = item[2]
            if deadline is not None and deadline <= wall:
                summary.expired += 1
                continue
            rk = routing_key(name, item[0])
            owners = ([router.ring.owner(rk)] if g.spec.replicas == 1
                      else router.ring.owners(rk, g.spec.replicas))
            for owner in owners:
                batch = pending.setdefault((owner, name), [])
                batch.append(item)
                if len(batch) >= RESTORE_BATCH:
                    del pending[owner, name]
                    await send(router.clients[owner], name, batch)
    for (owner, name), batch in pending.items():
        await send(router.clients[owner], name, batch)
    results = await DeferredList(window, consumeErrors=True)
    # Restored entries may replace what the near caches hold: they forget every key.
    for g in router.groups.values():
        if g.near is not None and (only is None or g.name == only):
            g.near.clear()
    for ok, result in results:
        if not ok:
            result.raiseException()
    return summary


def _columns(entries: list[tuple], ranks: bool = True):
    """entries_payload's columns of decoded entries; ``ranks`` False leaves them out (an
    entry put on another node takes the state its core gives a new one)."""
    keys, stored, rank_bytes, deadlines = [], [], bytearray(), []
    for key, value, deadline, rank in entries:
        keys.append(key)
        stored.append(value)
        rank = NO_RANK if rank is None or not ranks else rank
        if deadline is None:
            rank_bytes.append(rank)
        else:
            rank_bytes.append(rank | HAS_DEADLINE)
            deadlines.append(deadline)
    return keys, stored, rank_bytes, deadlines


def _stored(response, node: str, summary: Summary) -> None:
    if response.status != pb.OK:
        raise NodeError(f"node {node}: RESTORE: {response.error or pb.Status.Name(response.status)}")
    summary.stored += response.cas
