"""A node's data dir: its lock, the snapshot file and how a new one replaces it whole.

DIR/snapshot.rcs is the snapshot in force. A new one is written to DIR/snapshot.rcs.tmp,
fsynced, renamed over it and the directory fsynced: a crash at any moment leaves either
the old file or the new one, each whole. DIR/journal-N.rcj are the journals (journal.py).
A file the node refuses is moved aside to DIR/snapshot.rcs.refused, one of them kept.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

SNAPSHOT = "snapshot.rcs"
TEMPORARY = SNAPSHOT + ".tmp"
REFUSED = SNAPSHOT + ".refused"
LOCK = ".lock"


class DataDirError(OSError):
    """A data dir the node cannot use: its text says why."""


def lock(directory: Path):
    """Create ``directory`` if need be and hold its lock for the life of the process (the
    returned file): two nodes on one data dir would overwrite each other's snapshots."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / LOCK, "a+b")
    except OSError as exc:
        raise DataDirError(f"cannot use data dir {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DataDirError(f"data dir {directory} is in use by another node") from None
    return handle


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_aside(directory: Path) -> None:
    """The snapshot in force out of the way (refused), so the next start does not retry it."""
    try:
        os.replace(directory / SNAPSHOT, directory / REFUSED)
    except FileNotFoundError:
        pass


class SnapshotFile:
    """A new snapshot being written; ``commit`` makes it the one in force."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / TEMPORARY
        self._file = open(self.path, "wb", buffering=0)
        self.written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a raw file may write less than asked
            n = self._file.write(view)
            view = view[n:]
            self.written += n

    def commit(self) -> None:
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.path, self.directory / SNAPSHOT)
        fsync_dir(self.directory)

    def abort(self) -> None:
        self._file.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class WriterThread:
    """Writes a SnapshotFile's blocks on a thread of its own, so that a slow disk (a full
    page cache, the fsync) never holds the reactor; at most ``max_queued`` bytes wait.

    The reactor side calls ``write``; when it answers False the queue is full and
    ``on_room`` is called (through ``call_from_thread``) once there is room again. Errors
    are kept and given by ``done(callback)``: ``callback(None)`` once committed, or
    ``callback(exception)``.
    """

    _COMMIT, _ABORT = object(), object()

    def __init__(self, file: SnapshotFile, call_from_thread: Callable, max_queued: int = 8 << 20):
        self.file = file
        self._call = call_from_thread
        self._max = max_queued
        self._queued = 0  # bytes handed over and not yet written (the reactor's count)
        self._error: BaseException | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.on_room: Callable[[], None] | None = None
        self._done: Callable | None = None
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False when the queue is full (on_room follows)."""
        self._queued += len(data)
        self._queue.put(data)
        return self._queued < self._max

    def commit(self, done: Callable[[BaseException | None], None]) -> None:
        self._done = done
        self._queue.put(self._COMMIT)

    def abort(self) -> None:
        """Stop, dropping the temporary file; waits for the thread (it writes one block at
        most meanwhile)."""
        self._queue.put(self._ABORT)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._ABORT:
                self.file.abort()
                return
            if item is self._COMMIT:
                error = self._error
                if error is None:
                    try:
                        self.file.commit()
                    except OSError as exc:
                        error = exc
                if error is not None:
                    self.file.abort()
                self._call(self._done, error)
                return
            if self._error is None:
                try:
                    self.file.write(item)
                except OSError as exc:
                    self._error = exc
            self._call(self._written, len(item))

    def _written(self, n: int) -> None:
        full = self._queued >= self._max
        self._queued -= n
        if full and self._queued < self._max and self.on_room is not None:
            self.on_room()
