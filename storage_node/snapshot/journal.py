"""The journal: the keys written since a snapshot began, on disk before their answers leave.

A periodic snapshot is a picture of the past; a node killed after it (kill -9, a crash)
would come back with the values it held then, older than writes it acknowledged since.
So every key a write changes is noted, and the frame's notes are written to the journal
file (one block, shared/snapshot.py's framing) before the frame's answer is sent. A
restart loads the snapshot, then forgets every key of the journals from the one that
snapshot began with on: those keys miss, and nothing older than an acknowledged write
is served. A flush of a group notes the whole group.

Each snapshot opens the next journal (DIR/journal-N.rcj) as it begins; once it is whole
the journals before N are deleted. The write is one os.write of a small block per frame
that wrote (to the page cache, which outlives the process; a host crash may lose the
tail, see docs/snapshot.md). A journal that cannot be written makes the snapshot in force
unsafe: it is deleted, and the node restarts empty until its next snapshot.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from shared.snapshot import CutShort, SnapshotError, block, read_blocks

MAGIC = b"\x89RCJRNL\n"
JOURNAL = b"J"
_NAME = re.compile(r"journal-(\d+)\.rcj")
_GROUP = struct.Struct("<B")
_KEY = struct.Struct("<I")
_CAS = struct.Struct("<Q")
FLUSH = 0xFFFFFFFF  # a key length meaning "the whole group"


def path(directory: Path, seq: int) -> Path:
    return directory / f"journal-{seq}.rcj"


def sequences(directory: Path) -> list[int]:
    """The journals in ``directory``, oldest first."""
    return sorted(int(m.group(1)) for name in os.listdir(directory)
                  if (m := _NAME.fullmatch(name)))


class Journal:
    """The open journal of a node with a data dir (GroupOps.journal)."""

    def __init__(self, directory: Path, seq: int, cas: Callable[[], int],
                 failed: Callable[[OSError], None]):
        self.directory = directory
        self.seq = seq
        self._cas = cas  # the node's CAS counter, recorded with each block
        self._failed = failed
        self._records = bytearray()
        self._fd: int | None = None
        self.size = 0  # bytes in the current file
        self._open(seq)

    def note(self, group: str, key: bytes | None) -> None:
        records = self._records
        name = group.encode()
        records += _GROUP.pack(len(name))
        records += name
        if key is None:
            records += _KEY.pack(FLUSH)
        else:
            records += _KEY.pack(len(key))
            records += key

    def sync(self) -> None:
        if not self._records:
            return
        data = block(JOURNAL, _CAS.pack(self._cas()) + self._records)
        self._records = bytearray()
        if self._fd is None:
            return
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"wrote {written} of {len(data)} bytes")
        except OSError as exc:
            self.close()
            self._failed(exc)
            return
        self.size += written

    def rotate(self, seq: int) -> None:
        """Write on journal ``seq`` from now on (a snapshot begins)."""
        self.sync()
        self.close()
        self.seq = seq
        self._open(seq)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self, seq: int) -> None:
        try:
            self._fd = os.open(path(self.directory, seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if os.fstat(self._fd).st_size == 0:
                os.write(self._fd, MAGIC)
            self.size = os.fstat(self._fd).st_size
        except OSError as exc:
            self.close()
            self._failed(exc)


def remove_before(directory: Path, seq: int) -> None:
    for old in sequences(directory):
        if old < seq:
            try:
                path(directory, old).unlink()
            except FileNotFoundError:
                pass


def read(file: Path) -> Iterator[tuple[int, str, bytes | None]]:
    """(CAS counter, group, key or None for a flush) of every note in a journal file.

    What a write stopped by the process's death leaves is no damage: a block cut short at
    the end (its frame was never answered, so it is dropped), or a file cut inside its
    magic, empty included (the death came between creating the journal and its first
    write: it notes nothing). Any other damage raises SnapshotError naming the file.
    """
    with open(file, "rb") as f:
        start = f.read(len(MAGIC))
        if len(start) < len(MAGIC) and MAGIC.startswith(start):
            return
        f.seek(0)
        blocks = read_blocks(f.read, MAGIC)
        while True:
            try:
                kind, payload = next(blocks)
            except StopIteration:
                return
            except CutShort:
                return
            except SnapshotError as exc:
                raise SnapshotError(f"{file.name}: {exc}") from None
            if kind != JOURNAL:
                raise SnapshotError(f"{file.name}: unknown block kind {kind!r}")
            yield from _records(payload, file.name)


def _records(payload: bytes, name: str):
    try:
        (cas,) = _CAS.unpack_from(payload)
        at = _CAS.size
        while at < len(payload):
            (length,) = _GROUP.unpack_from(payload, at)
            group = payload[at + 1:at + 1 + length].decode()
            at += 1 + length
            (length,) = _KEY.unpack_from(payload, at)
            at += _KEY.size
            if length == FLUSH:
                yield cas, group, None
                continue
            if at + length > len(payload):
                raise SnapshotError("a key runs past its block")
            yield cas, group, payload[at:at + length]
            at += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{name}: a damaged note ({exc})") from None
