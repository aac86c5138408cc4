"""Bounds on one group's source loads: so many run at once, so many wait, the rest fail at once.

Without them one client's multi-get of 10,000 distinct misses queues 10,000 loads, and
every other client's miss waits behind them until it times out. With them the excess is
refused at once (SourceBusy), so the source is never asked for more than it can answer
and other misses keep being served.

A load holds its slot until its work has really ended, which for work that cannot be
stopped (a function running in a thread, a query in a database thread) is later than
its answer: when the answer times out, the slot stays taken until the thread returns,
so threads stuck on a hung origin cannot pile up past ``concurrency``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from router.cluster.errors import SourceBusy

# start() -> (answer, finished): the load's outcome, and a Deferred that fires (with
# anything) when its work has ended; the same Deferred when the two cannot differ.
Start = Callable[[], tuple[Deferred, Deferred]]


class LoadLimiter:
    """At most ``concurrency`` loads running and ``queue`` waiting, first come first served."""

    def __init__(self, name: str, concurrency: int, queue: int):
        self.name = name  # the source, as errors name it
        self.concurrency = concurrency
        self.queue = queue
        self.running = 0
        self.refused = 0
        self._waiting: deque[Deferred] = deque()
        self._admitting = False  # guards _admit against re-entry from a load that ends at once

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def run(self, start: Start) -> Deferred:
        """The answer of ``start()``, called now if a slot is free, else when one frees;
        a SourceBusy failure at once when the queue is full too."""
        if self.running < self.concurrency:
            return self._start(start)
        if len(self._waiting) >= self.queue:
            self.refused += 1
            return fail(SourceBusy(self.name, self.running, len(self._waiting)))
        turn = Deferred()
        self._waiting.append(turn)
        return turn.addCallback(lambda _: self._start(start))

    def _start(self, start: Start) -> Deferred:
        self.running += 1
        try:
            answer, finished = start()
        except Exception:
            return fail(self._release(Failure()))
        finished.addBoth(self._release)
        return answer

    def _release(self, result):
        self.running -= 1
        self._admit()
        return result

    def _admit(self) -> None:
        # A load may end inside start() (a source that fails at once); its release then
        # lands here again, and the loop below, not recursion, starts the next one.
        if self._admitting:
            return
        self._admitting = True
        try:
            while self._waiting and self.running < self.concurrency:
                self._waiting.popleft().callback(None)
        finally:
            self._admitting = False
