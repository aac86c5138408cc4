"""Bounds on one group's source loads, shared fairly: so many run at once, so many wait,
the waiting ones are served a client connection at a time, the rest fail at once.

Without bounds one client's multi-get of 10,000 distinct misses queues 10,000 loads, and
every other client's miss waits behind them until it times out. With them the excess is
refused at once (SourceBusy), so the source is never asked for more than it can answer.
Without fairness the ``queue`` waiting loads would still be one client's, and another
client's single miss would wait for all of them to run first.

So waiting loads are queued per client connection (``conn``: any hashable the front end
names the connection by; None for callers with no connection), and a freed slot goes to
the connections in turn, one load per turn -- deficit round robin where every load costs
the same, which is plain round robin. A connection that starts waiting joins the end of
the turn order; a miss of a connection waits for at most one load of each other
connection with loads waiting. The ``queue`` bound is over all connections; when it is
full, a newcomer whose connection waits for fewer loads than the connection waiting for
the most takes the place of that connection's newest load (which fails as refused), so
one client's burst cannot keep the queue to itself either.

A load holds its slot until its work has really ended, which for work that cannot be
stopped (a function running in a thread, a query in a database thread) is later than
its answer: when the answer times out, the slot stays taken until the thread returns,
so threads stuck on a hung origin cannot pile up past ``concurrency``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from router.cluster.errors import SourceBusy

# start() -> (answer, finished): the load's outcome, and a Deferred that fires (with
# anything) when its work has ended; the same Deferred when the two cannot differ.
Start = Callable[[], tuple[Deferred, Deferred]]


class LoadLimiter:
    """At most ``concurrency`` loads running and ``queue`` waiting, the waiting ones
    started a connection at a time, in turn."""

    def __init__(self, name: str, concurrency: int, queue: int):
        self.name = name  # the source, as errors name it
        self.concurrency = concurrency
        self.queue = queue
        self.running = 0
        self.refused = 0
        self.waiting = 0  # over all connections
        # conn -> its waiting loads' turns, oldest first; only connections with some.
        self._queues: dict[Hashable, deque[Deferred]] = {}
        self._order: deque[Hashable] = deque()  # the connections of _queues, next served first
        self._admitting = False  # guards _admit against re-entry from a load that ends at once

    def run(self, start: Start, conn: Hashable = None) -> Deferred:
        """The answer of ``start()``, called now if a slot is free, else when one frees and
        it is ``conn``'s turn; a SourceBusy failure when the queue is full (at once, or
        later when another connection's load takes its place)."""
        if self.running < self.concurrency and not self.waiting:
            return self._start(start)
        while self.waiting >= self.queue:  # (a refused load's errback may queue another)
            if not self._make_room(conn):
                self.refused += 1
                return fail(self._busy())
        mine = self._queues.get(conn)
        if mine is None:
            mine = self._queues[conn] = deque()
            self._order.append(conn)
        turn = Deferred(lambda d: self._withdraw(conn, d))
        mine.append(turn)
        self.waiting += 1
        return turn.addCallback(lambda _: self._start(start))

    def _busy(self) -> SourceBusy:
        return SourceBusy(self.name, self.running, self.waiting)

    def _make_room(self, conn: Hashable) -> bool:
        """Refuse the newest load of the connection waiting for the most, if that is more
        than one load more than ``conn`` waits for; whether room was made."""
        if not self._queues:
            return False  # queue: 0
        longest = max(self._queues, key=lambda c: len(self._queues[c]))
        queue = self._queues[longest]
        if len(queue) <= len(self._queues.get(conn, ())) + 1:
            return False
        busy = self._busy()  # worded with the queue full, as a refusal at once is
        turn = queue.pop()  # of two at least: ``longest`` keeps its place in the turn order
        self.waiting -= 1
        self.refused += 1
        turn.errback(busy)
        return True

    def _withdraw(self, conn: Hashable, turn: Deferred) -> None:
        """A waiting load cancelled by its caller leaves the queue."""
        mine = self._queues.get(conn)
        if mine is not None and turn in mine:
            mine.remove(turn)
            self.waiting -= 1
            if not mine:
                del self._queues[conn]
                self._order.remove(conn)

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
            while self._order and self.running < self.concurrency:
                conn = self._order.popleft()
                mine = self._queues[conn]
                turn = mine.popleft()
                if mine:
                    self._order.append(conn)  # its next load waits for the others' turns
                else:
                    del self._queues[conn]
                self.waiting -= 1
                turn.callback(None)
        finally:
            self._admitting = False
