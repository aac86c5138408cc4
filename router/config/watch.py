"""Notice when a file changes: by polling its stat, which also sees a symlink swap.

Kubernetes updates a mounted ConfigMap by pointing a symlink at a new directory; the
path's own mtime need not change, but following the link gives another inode.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.task import LoopingCall


def _signature(path: str):
    try:
        st = os.stat(path)  # follows symlinks
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)


class FileWatch:
    def __init__(self, path: str, on_change: Callable[[], object], clock, interval: float = 1.0):
        self.path = path
        self.on_change = on_change
        self.interval = interval
        self._last = _signature(path)
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        self._last = _signature(self.path)  # changes made while it was off are not news
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        current = _signature(self.path)
        # A missing file is a write in progress (or a swap): wait for it to reappear.
        if current is None or current == self._last:
            return
        self._last = current
        self.on_change()
