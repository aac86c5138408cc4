"""A node's start from its data dir: the snapshot in force loaded whole, then the journals
since it began applied, or nothing at all.

Entries go into new cores that are not served until the whole file has been read and
checked (shared/snapshot.py checks every block, the trailer checks the counts): a file
that fails anywhere costs nothing but its log line, and is moved aside. Each entry keeps
its value, flags and CAS unique (they live in the stored entry, shared/entry.py), its
rank in its core (storage_node/cores/walk.py) and its remaining ttl by the wall clock;
one whose deadline has passed is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.snapshot import Reader, SnapshotError
from storage_node.cores.walk import restorer
from storage_node.groups import ConfigError, Group, GroupSpec, GroupTable
from storage_node.snapshot import files, journal


@dataclass
class Restored:
    """What a start found in its data dir."""

    outcome: str  # "loaded", "none", "too old", "refused"
    groups: dict[str, Group] = field(default_factory=dict)
    entries: int = 0  # restored and live
    expired: int = 0  # in the file, dropped as expired
    forgotten: int = 0  # notes of the journals applied (keys forgotten, flushes)
    cas: int = 0  # the CAS counter to go on from
    journal: int = 0  # the journal to open next
    created_at: float = 0.0


def load(directory: Path, table: GroupTable, node: str, wall: Callable[[], float],
         max_age: float, log: Callable[[str], None]) -> Restored:
    """Read ``directory``'s snapshot and journals into new groups of ``table``'s kind
    (not installed: the caller does). Logs one line for what it did."""
    snapshot = directory / files.SNAPSHOT
    (directory / files.TEMPORARY).unlink(missing_ok=True)  # a write that died: never whole
    seqs = journal.sequences(directory)
    next_journal = (seqs[-1] + 1) if seqs else 1
    if not snapshot.exists():
        journal.remove_before(directory, next_journal)  # nothing they could correct
        return Restored("none", journal=next_journal)
    try:
        restored = _read(snapshot, table, node, wall, max_age, log)
        if restored.outcome == "loaded":
            for seq in seqs:
                if seq >= restored.journal:
                    _apply(journal.path(directory, seq), restored)
            restored.entries = sum(len(g.core) for g in restored.groups.values())
    except (SnapshotError, OSError, UnicodeError) as exc:
        log(f"refusing snapshot {snapshot}: {exc}; the node starts empty "
            f"(the file is kept as {files.REFUSED})")
        files.move_aside(directory)
        journal.remove_before(directory, next_journal)
        return Restored("refused", journal=next_journal)
    restored.journal = next_journal
    if restored.outcome == "loaded":
        journal_note = f", {restored.forgotten} changed since forgotten" if restored.forgotten else ""
        log(f"loaded snapshot {snapshot}: {restored.entries} entries in "
            f"{len(restored.groups)} groups, {wall() - restored.created_at:.0f} s old"
            f"{journal_note}" + (f", {restored.expired} expired dropped" if restored.expired else ""))
    return restored


def _read(snapshot: Path, table: GroupTable, node: str, wall, max_age: float, log) -> Restored:
    with open(snapshot, "rb") as f:
        reader = Reader(f.read)
        header = reader.header
        if header.kind != "node":
            raise SnapshotError(f"a {header.kind!r} file, not a node's snapshot (to load a "
                                f"backup, use ringcache restore)")
        if header.node != node:
            raise SnapshotError(f"written by node {header.node!r}, this is {node!r}")
        age = wall() - header.created_at
        if age > max_age:
            log(f"not loading snapshot {snapshot}: written {age:.0f} s ago, more than "
                f"--max-snapshot-age {max_age:.0f} s; the node starts empty")
            return Restored("too old", created_at=header.created_at)
        restored = Restored("loaded", journal=header.journal, created_at=header.created_at)
        built = _groups(header, table, log)
        puts = [None if g is None else restorer(g.core, same_policy=True) for g in built]
        now = wall()
        for index, entries in reader.entry_blocks():
            put = puts[index]
            if put is None:
                continue
            for key, stored, deadline, rank in entries:
                if deadline is None:
                    ttl = None
                else:
                    ttl = deadline - now
                    if not ttl > 0:
                        restored.expired += 1
                        continue
                try:
                    put(key, stored, ttl, rank)
                except ValueError:  # does not fit this node's budget, or a rank it has not
                    continue
        restored.cas = reader.trailer.cas
    clock_now = table.clock()
    for group, spec in zip(built, header.groups):
        if group is None:
            continue
        if spec.flush_at is not None:
            if spec.flush_at <= now:
                group.core.clear()
            else:
                group.flush_at = clock_now + (spec.flush_at - now)
        restored.groups[spec.name] = group
    return restored


def _groups(header, table: GroupTable, log) -> list[Group | None]:
    specs = [GroupSpec(g.name, g.policy, g.max_bytes) for g in header.groups]
    total = sum(spec.max_bytes for spec in specs)
    built = []
    for spec in specs:
        try:
            built.append(table.new_group(spec, table.budget(spec, total)))
        except ConfigError as exc:
            log(f"snapshot: not restoring {exc}")
            built.append(None)
    return built


def _apply(path: Path, restored: Restored) -> None:
    groups = restored.groups
    for cas, name, key in journal.read(path):
        restored.cas = max(restored.cas, cas)
        group = groups.get(name)
        restored.forgotten += 1
        if group is None:
            continue
        if key is None:
            group.core.clear()
        else:
            group.core.delete(key)
