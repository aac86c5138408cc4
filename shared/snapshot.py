"""The snapshot file format (docs/snapshot.md), sans I/O: what a storage node writes to its
data dir and ``ringcache backup`` writes through the router, block by block.

A file is MAGIC, then blocks: a header block first, entry blocks, a trailer block last.
Every block is ``kind (1 byte) | length (u32) | crc32 (u32) | payload`` (little-endian),
the CRC taken over the kind, the length and the payload, so that a torn, truncated or
flipped block is found before any of it is used. Readers take a file whole or not at all.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

MAGIC = b"\x89RCSNAP\n"  # 0x89 and the newline catch a file mangled as text
FORMAT_VERSION = 1
HEADER, ENTRIES, TRAILER = b"H", b"E", b"T"
_BLOCK = struct.Struct("<cII")
BLOCK_OVERHEAD = _BLOCK.size
MAX_PAYLOAD = 64 << 20  # a block's payload at most: a longer length is damage
_ENTRIES = struct.Struct("<HIB")  # group index, count, widths
_WIDE_KEYS, _WIDE_ENTRIES = 1, 2
HAS_DEADLINE = 0x80
NO_RANK = 0x7F
_LITTLE = sys.byteorder == "little"


class SnapshotError(ValueError):
    """A file or block that is not a whole, valid snapshot: its text says what is wrong."""


class CutShort(SnapshotError):
    """The file ends inside a block: what a writer stopped in the middle of leaves."""


@dataclass
class GroupHeader:
    name: str
    policy: str
    max_bytes: int
    flush_at: float | None = None  # a pending delayed flush, on the wall clock


@dataclass
class Header:
    """The first block: who wrote the file, when, and its groups (entry blocks name a
    group by its index in ``groups``)."""

    node: str
    created_at: float  # wall clock, seconds since the epoch
    groups: list[GroupHeader]
    kind: str = "node"  # "node": a node's own snapshot; "backup": ringcache backup
    journal: int = 0  # the node's journal sequence open when the snapshot began
    final: bool = False  # written as the node stopped, with nothing served meanwhile
    format: int = FORMAT_VERSION

    def encode(self) -> bytes:
        document = {"format": self.format, "kind": self.kind, "node": self.node,
                    "created_at": self.created_at, "journal": self.journal, "final": self.final,
                    "groups": [vars(g) for g in self.groups]}
        return block(HEADER, json.dumps(document, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, payload: bytes) -> Header:
        document = _json(payload, "header")
        if document.get("format") != FORMAT_VERSION:
            raise SnapshotError(f"format version {document.get('format')!r}, this reader "
                                f"knows {FORMAT_VERSION}")
        try:
            groups = [GroupHeader(str(g["name"]), str(g["policy"]), int(g["max_bytes"]),
                                  None if g.get("flush_at") is None else float(g["flush_at"]))
                      for g in document["groups"]]
            return cls(node=str(document["node"]), created_at=float(document["created_at"]),
                       groups=groups, kind=str(document["kind"]),
                       journal=int(document["journal"]), final=bool(document["final"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"header: {exc!r}") from None


@dataclass
class Trailer:
    """The last block: what came before it, so that a file cut at a block boundary is
    found short."""

    entries: list[int] = field(default_factory=list)  # per group
    blocks: int = 0  # entry blocks
    cas: int = 0  # the highest CAS unique the writer had given out when it ended

    def encode(self) -> bytes:
        return block(TRAILER, json.dumps(vars(self), separators=(",", ":")).encode())

    @classmethod
    def decode(cls, payload: bytes) -> Trailer:
        document = _json(payload, "trailer")
        try:
            return cls(entries=[int(n) for n in document["entries"]],
                       blocks=int(document["blocks"]), cas=int(document["cas"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"trailer: {exc!r}") from None


def block(kind: bytes, payload: bytes | bytearray) -> bytes:
    head = _BLOCK.pack(kind, len(payload), 0)[:5]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def encode_entries(group: int, keys: list[bytes], entries: list[bytes], ranks: bytearray,
                   deadlines: list[float]) -> bytes:
    """One entry block of group index ``group``: ``ranks[i]`` is entry i's rank (NO_RANK:
    none), with HAS_DEADLINE set when it has a deadline, the next of ``deadlines`` in
    order (wall clock). ``entries`` are as a node stores them (shared/entry.py)."""
    return block(ENTRIES, entries_payload(group, keys, entries, ranks, deadlines))


def walked_payload(group: int, batch: list[tuple], wall_now: float) -> bytes:
    """An entry block's payload of a core walk's batch, (key, entry, ttl left or None,
    rank) each (storage_node/cores/walk.py): the ttls become wall-clock deadlines."""
    keys, entries, ranks, deadlines = [], [], bytearray(), []
    for key, value, left, rank in batch:
        keys.append(key)
        entries.append(value)
        if type(rank) is not int or not 0 <= rank < NO_RANK:
            rank = NO_RANK
        if left is None or left == math.inf:
            ranks.append(rank)
        else:
            ranks.append(rank | HAS_DEADLINE)
            deadlines.append(wall_now + left)
    return entries_payload(group, keys, entries, ranks, deadlines)


def regroup(payload: bytes, group: int) -> bytes:
    """An entry block's payload with another group index (the place of its group in
    another file's header): a block as a node answered it, framed for a backup file."""
    return block(ENTRIES, struct.pack("<H", group) + payload[2:])


def entries_payload(group: int, keys: list[bytes], entries: list[bytes], ranks: bytearray,
                    deadlines: list[float]) -> bytes:
    """What encode_entries frames as a block."""
    key_lengths = array("H")
    widths = 0
    try:
        key_lengths.extend(map(len, keys))
    except OverflowError:
        key_lengths = array("I", map(len, keys))
        widths |= _WIDE_KEYS
    entry_lengths = array("H")
    try:
        entry_lengths.extend(map(len, entries))
    except OverflowError:
        entry_lengths = array("I", map(len, entries))
        widths |= _WIDE_ENTRIES
    times = array("d", deadlines)
    if not _LITTLE:
        for column in (key_lengths, entry_lengths, times):
            column.byteswap()
    return b"".join((_ENTRIES.pack(group, len(keys), widths), key_lengths.tobytes(),
                     entry_lengths.tobytes(), ranks, times.tobytes(), *keys, *entries))


def decode_entries(payload: bytes, groups: int) -> tuple[int, list[tuple]]:
    """(group index, [(key, entry, deadline or None, rank or None)]) of an entry block's
    payload, checked whole: SnapshotError if any length does not add up."""
    if len(payload) < _ENTRIES.size:
        raise SnapshotError("entry block shorter than its header")
    group, count, widths = _ENTRIES.unpack_from(payload)
    if group >= groups:
        raise SnapshotError(f"entry block names group {group} of {groups}")
    at = _ENTRIES.size
    key_lengths, at = _column("I" if widths & _WIDE_KEYS else "H", payload, at, count)
    entry_lengths, at = _column("I" if widths & _WIDE_ENTRIES else "H", payload, at, count)
    ranks = payload[at:at + count]
    at += count
    timed = sum(1 for rank in ranks if rank & HAS_DEADLINE)
    deadlines, at = _column("d", payload, at, timed)
    keys_at = at
    entries_at = keys_at + sum(key_lengths)
    if len(ranks) != count or entries_at + sum(entry_lengths) != len(payload):
        raise SnapshotError("entry block lengths do not add up")
    out = []
    key_ends = itertools.accumulate(key_lengths, initial=keys_at)
    entry_ends = itertools.accumulate(entry_lengths, initial=entries_at)
    next(key_ends), next(entry_ends)
    k, e, d = keys_at, entries_at, 0
    for rank, key_end, entry_end in zip(ranks, key_ends, entry_ends):
        if rank & HAS_DEADLINE:
            deadline = deadlines[d]
            d += 1
        else:
            deadline = None
        rank &= NO_RANK
        out.append((payload[k:key_end], payload[e:entry_end], deadline,
                    None if rank == NO_RANK else rank))
        k, e = key_end, entry_end
    return group, out


def _column(code: str, payload: bytes, at: int, count: int) -> tuple[array, int]:
    column = array(code)
    end = at + column.itemsize * count
    if end > len(payload):
        raise SnapshotError("entry block shorter than its columns")
    column.frombytes(payload[at:end])
    if not _LITTLE:
        column.byteswap()
    return column, end


def read_blocks(read, magic: bytes = MAGIC) -> Iterator[tuple[bytes, bytes]]:
    """(kind, payload) of each block after ``magic``, from ``read(n)`` (a binary file's
    read), each checked against its CRC; SnapshotError on the first that is damaged,
    CutShort if the data ends inside one."""
    start = read(len(magic))
    if start != magic:
        raise SnapshotError("not a ringcache snapshot (no magic)" if start else "empty file")
    while True:
        head = read(BLOCK_OVERHEAD)
        if not head:
            return
        if len(head) < BLOCK_OVERHEAD:
            raise CutShort("cut inside a block header")
        kind, length, crc = _BLOCK.unpack(head)
        if length > MAX_PAYLOAD:
            raise SnapshotError(f"a block of {length} bytes claimed: damaged")
        payload = read(length)
        if len(payload) < length:
            raise CutShort("cut inside a block")
        if zlib.crc32(payload, zlib.crc32(head[:5])) != crc:
            raise SnapshotError(f"a {kind!r} block fails its checksum")
        yield kind, payload


@dataclass
class Reader:
    """A whole file's blocks, checked in order: ``header`` once read, then each entry
    block through ``entry_blocks()``; the trailer must come last and agree."""

    read: object
    header: Header | None = None
    trailer: Trailer | None = None

    def __post_init__(self):
        self._blocks = read_blocks(self.read)
        kind, payload = next(self._blocks, (None, None))
        if kind != HEADER:
            raise SnapshotError("no header block")
        self.header = Header.decode(payload)

    def entry_blocks(self, decode: bool = True) -> Iterator[tuple[int, list[tuple] | int]]:
        """(group index, entries) of each entry block; with ``decode`` False, (group
        index, number of entries): each block's checksum is checked, not its columns."""
        groups = len(self.header.groups)
        counts, blocks = [0] * groups, 0
        for kind, payload in self._blocks:
            if self.trailer is not None:
                raise SnapshotError("data after the trailer")
            if kind == ENTRIES:
                if decode:
                    group, entries = decode_entries(payload, groups)
                    n = len(entries)
                else:
                    if len(payload) < _ENTRIES.size:
                        raise SnapshotError("entry block shorter than its header")
                    group, n, _ = _ENTRIES.unpack_from(payload)
                    if group >= groups:
                        raise SnapshotError(f"entry block names group {group} of {groups}")
                    entries = n
                counts[group] += n
                blocks += 1
                yield group, entries
            elif kind == TRAILER:
                self.trailer = Trailer.decode(payload)
            else:
                raise SnapshotError(f"unknown block kind {kind!r}")
        if self.trailer is None:
            raise SnapshotError("no trailer: the file is cut short")
        if self.trailer.entries != counts or self.trailer.blocks != blocks:
            raise SnapshotError("the trailer's counts disagree with the blocks")


def _json(payload: bytes, what: str) -> dict:
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(f"{what}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise SnapshotError(f"{what}: not a JSON object")
    return document
