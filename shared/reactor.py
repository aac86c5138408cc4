"""The reactor the router and nodes run on: Twisted's epoll reactor with two costs per
reactor turn taken out of the data plane's way.

- Each ready descriptor is handled directly instead of through ``log.callWithLogger``,
  which pushes and pops a logging context per event only to label legacy log lines
  with the protocol's name (what the router and nodes log says where it comes from).
- ``callAtEndOfTurn(fn)``: ``fn`` runs once this turn's events are handled, before the
  next poll. Batching (one node frame, one client write per turn) needs exactly that,
  and ``callLater(0, fn)`` paid for it with a DelayedCall on the timer heap every turn.

``end_of_turn(reactor, fn)`` uses the hook where the reactor has it and ``callLater(0)``
elsewhere (tests' Clock), so library code takes any reactor.
"""

from __future__ import annotations

import errno
import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.python import log


class TurnCall:
    """A call waiting for the end of the turn: cancellable, like a DelayedCall."""

    __slots__ = ("fn", "pending")

    def __init__(self, fn):
        self.fn = fn
        self.pending = True

    def active(self) -> bool:
        return self.pending

    def cancel(self) -> None:
        self.pending = False


class DataPlaneReactor(EPollReactor):
    def __init__(self):
        self._turn_end: list[TurnCall] = []
        super().__init__()

    def callAtEndOfTurn(self, fn) -> TurnCall:
        call = TurnCall(fn)
        self._turn_end.append(call)
        return call

    def timeout(self):
        # Calls waiting for the end of a turn mean the next poll must not block.
        return 0 if self._turn_end else super().timeout()

    def doPoll(self, timeout):
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        handle = self._doReadOrWrite  # catches, logs and disconnects on any error itself
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)
        self._run_turn_end()

    doIteration = doPoll

    def _run_turn_end(self) -> None:
        # Calls made by these calls run in this same pass: a flush that triggers a flush.
        calls = self._turn_end
        while calls:
            self._turn_end = []
            for call in calls:
                if call.pending:
                    call.pending = False
                    try:
                        call.fn()
                    except BaseException:
                        log.err(None, "end-of-turn call failed")
            calls = self._turn_end


def end_of_turn(reactor, fn):
    """Run ``fn`` once this reactor turn's events are handled; a cancellable handle."""
    hook = getattr(reactor, "callAtEndOfTurn", None)
    if hook is not None:
        return hook(fn)
    return reactor.callLater(0, fn)


def install() -> None:
    """Make DataPlaneReactor the global reactor (before anything imports one), on Linux."""
    if "twisted.internet.reactor" in sys.modules or not sys.platform.startswith("linux"):
        return
    installReactor(DataPlaneReactor())
