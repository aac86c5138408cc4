"""A node's snapshots over its life: loaded at start, written every ``every`` seconds while
it serves, and once more, whole, as it stops.

A periodic snapshot walks the cores a slice per reactor turn (TURN seconds of walking,
then the reactor serves), and a thread of its own writes the blocks, so serving never
waits on the disk; at most WriterThread's queue (8 MiB) of blocks waits in memory. The
one written as the node stops runs in one go, nothing being served meanwhile, and is
marked final. See docs/snapshot.md for the file, the journal and what is guaranteed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from shared import ringcache_pb2 as pb
from storage_node.snapshot import files, journal, loader
from storage_node.snapshot.writer import SnapshotWalk

TURN = 0.002  # seconds of walking per reactor turn
JOURNAL_LIMIT = 64 << 20  # a journal past this starts a snapshot early (which restarts it)
TICK = 1.0  # how often the schedule is looked at (at most: as often as --snapshot-every)


class Snapshots:
    def __init__(self, node, directory: Path, name: str, reactor, every: float, max_age: float,
                 wall: Callable[[], float] = time.time, log: Callable[[str], None] = print,
                 timer: Callable[[], float] = time.perf_counter,
                 writer: Callable = files.WriterThread):
        self.node = node
        self.directory = Path(directory)
        self.name = name
        self.reactor = reactor
        self.every = every  # 0: only as the node stops
        self.max_age = max_age
        self.wall = wall
        self.log = log
        self.timer = timer
        self._writer = writer  # (file, call_from_thread) -> a WriterThread or its like
        self.stats = node.snapshot_stats = pb.SnapshotStats(data_dir=str(directory))
        self.journal: journal.Journal | None = None
        self._running: Deferred | None = None
        self._last_start = 0.0  # on the node's clock
        self._tick: LoopingCall | None = None

    # -- at start ------------------------------------------------------------------------

    def load(self) -> loader.Restored:
        """Load the data dir into the node (before it serves) and open the journal."""
        started = self.timer()
        self.directory.mkdir(parents=True, exist_ok=True)
        restored = loader.load(self.directory, self.node.groups, self.name, self.wall,
                               self.max_age, self.log)
        if restored.groups:
            self.node.groups.groups = restored.groups
        self.node.ops.seen_cas(restored.cas)
        self.stats.restored = restored.outcome
        self.stats.restored_entries = restored.entries
        if restored.outcome == "loaded":
            self.stats.restored_age = self.wall() - restored.created_at
        self.stats.restore_seconds = self.timer() - started
        self.journal = journal.Journal(self.directory, restored.journal, lambda: self.node.ops.cas,
                                       self._journal_failed)
        self.node.ops.journal = self.journal
        self._last_start = self.node.clock()
        return restored

    def start(self) -> None:
        """Once serving: look at the schedule every TICK seconds."""
        self._tick = LoopingCall(self._scheduled)
        self._tick.clock = self.reactor
        self._tick.start(min(TICK, self.every) if self.every else TICK, now=False)

    def _scheduled(self) -> None:
        if self._running is not None:
            return
        due = self.every and self.node.clock() - self._last_start >= self.every
        if due or self.journal.size > JOURNAL_LIMIT:
            self.snapshot()

    # -- while serving -------------------------------------------------------------------

    def snapshot(self) -> Deferred:
        """Write a snapshot a slice per turn; fires with True once it is in force (False if
        it failed: logged and counted). One at a time: a second call gets the first's."""
        running = self._running
        if running is None:
            running = self._running = Deferred.fromCoroutine(self._write())
            running.addBoth(self._finished)  # (at once, if it failed before its first turn)
        return _follow(running)

    def _finished(self, result):
        self._running = None
        if isinstance(result, Failure):
            result.trap(CancelledError)  # stop() dropped it; anything else is a bug, raised
            return False
        return result

    async def _write(self) -> bool:
        self.stats.in_progress = True
        walk, seq = self._begin(final=False)
        started = self.timer()
        try:
            writer = self._writer(files.SnapshotFile(self.directory), self.reactor.callFromThread)
        except OSError as exc:  # the data dir cannot take a new file (full, read-only)
            return self._end(walk, seq, started, 0, exc)
        try:
            writer.write(walk.header_block())
            while not walk.done:
                await deferLater(self.reactor, 0, lambda: None)  # the reactor serves meanwhile
                room = True
                for data in walk.step(TURN):
                    room = writer.write(data)
                if not room:
                    await _room(writer)
            writer.write(walk.trailer_block(self.node.ops.cas))
            error = await _committed(writer)
        except CancelledError:
            writer.abort()
            self.stats.in_progress = False
            raise
        except Exception as exc:  # a core or the disk failed: this snapshot only
            writer.abort()
            error = exc
        return self._end(walk, seq, started, writer.file.written, error)

    # -- as the node stops ---------------------------------------------------------------

    def stop(self) -> None:
        """The final snapshot, whole, in this turn (a periodic one in progress is dropped)."""
        if self._tick is not None and self._tick.running:
            self._tick.stop()
        if self._running is not None:
            self._running.cancel()
        walk, seq = self._begin(final=True)
        started = self.timer()
        error = file = None
        try:
            file = files.SnapshotFile(self.directory)
            file.write(walk.header_block())
            for data in walk.step(math.inf):
                file.write(data)
            file.write(walk.trailer_block(self.node.ops.cas))
            file.commit()
        except Exception as exc:
            if file is not None:
                file.abort()
            error = exc
        self._end(walk, seq, started, file.written if file is not None else 0, error)
        self.journal.close()

    # -- both ----------------------------------------------------------------------------

    def _begin(self, final: bool) -> tuple[SnapshotWalk, int]:
        """A new journal, then the walk: what changes from here on is noted in it."""
        seq = self.journal.seq + 1
        self.journal.rotate(seq)
        self._last_start = self.node.clock()
        walk = SnapshotWalk.of(list(self.node.groups), self.name, self.wall, self.node.clock,
                               journal=seq, final=final, timer=self.timer)
        return walk, seq

    def _end(self, walk: SnapshotWalk, seq: int, started: float, size: int, error) -> bool:
        stats = self.stats
        stats.in_progress = False
        if walk.unlisted:
            self.log(f"snapshot: groups {', '.join(walk.unlisted)} not written: their cores "
                     f"cannot list their entries (storage_node/cores/walk.py)")
        if error is not None:
            stats.failures += 1
            stats.last_error = str(error) or repr(error)
            self.log(f"snapshot to {self.directory} failed: {stats.last_error}")
            return False
        journal.remove_before(self.directory, seq)
        stats.written += 1
        stats.last_at = self.wall()
        stats.last_seconds = self.timer() - started
        stats.last_entries = sum(walk.entries)
        stats.last_bytes = size
        return True

    def _journal_failed(self, exc: OSError) -> None:
        # The snapshot in force can no longer be corrected at a restart: it must not be
        # loaded. The next snapshot (which opens a new journal) makes the dir safe again.
        self.stats.failures += 1
        self.stats.last_error = f"journal: {exc}"
        self.log(f"cannot write the journal in {self.directory} ({exc}): removing the "
                 f"snapshot in force; a restart before the next snapshot starts empty")
        (self.directory / files.SNAPSHOT).unlink(missing_ok=True)


def _follow(d: Deferred) -> Deferred:
    """A Deferred firing with ``d``'s result, leaving ``d``'s own callbacks alone."""
    out = Deferred(lambda _: d.cancel())
    d.addBoth(lambda result: (out.callback(result), result)[1])
    return out


def _room(writer: files.WriterThread) -> Deferred:
    d = Deferred()

    def room():
        writer.on_room = None
        d.callback(None)

    writer.on_room = room
    return d


def _committed(writer: files.WriterThread) -> Deferred:
    d = Deferred()
    # (A cancelled wait may see the thread answer after all: that answer goes nowhere.)
    writer.commit(lambda error: None if d.called else d.callback(error))
    return d
