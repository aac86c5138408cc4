"""Singleflight: concurrent calls for one key share one execution and its result."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure


class SingleFlight:
    def __init__(self):
        # key -> the Deferreds of every caller waiting on the flight in progress
        self._flights: dict[Hashable, list[Deferred]] = {}
        self.coalesced = 0  # callers that joined a flight instead of starting one

    def __len__(self) -> int:
        return len(self._flights)

    def do(self, key: Hashable, fn: Callable[[], object]) -> Deferred:
        """Run ``fn`` (value, Deferred or failure) once for all concurrent callers of ``key``."""
        waiter = Deferred()
        waiters = self._flights.get(key)
        if waiters is not None:
            waiters.append(waiter)
            self.coalesced += 1
            return waiter
        self._flights[key] = [waiter]
        maybeDeferred(fn).addBoth(self._land, key)
        return waiter

    def _land(self, result, key) -> None:
        # Remove the flight before any waiter runs: a waiter that calls do() again for
        # this key must start a new flight, not join the finished one.
        waiters = self._flights.pop(key)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
