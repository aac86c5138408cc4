"""Answers in request order, written together: a client's pipelined commands are answered
in the order it sent them although their node answers come back in any order.

Each command takes a slot in a queue; the completed slots at the head of the queue are
written together, once per reactor turn, or at once when every command the client sent
has its answer (the common case of a client awaiting its answers: waiting for the end of
the turn could batch nothing more).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from twisted.internet.defer import Deferred

from shared.net import cancel_call
from shared.reactor import end_of_turn


class Slot:
    """A place in the answer order for one command, or for the ``commands`` of a run the
    data plane serves at once; ``data`` is None until it is answered (bytes, or a list of
    pieces when large values are left uncopied: router/dataplane/serve.py). ``command`` and
    ``read_at`` time it for the request latency histogram, when it is written."""

    __slots__ = ("data", "commands", "command", "read_at")

    def __init__(self, data: bytes | None = None, commands: int = 1):
        self.data = data
        self.commands = commands


class AnswerQueue:
    """One connection's slots. ``deliver(data)`` is called by a flush that found answers
    ready at the head of the queue (bytes, or a list of pieces when one was in pieces), so the connection writes them and looks again at its
    bounds. ``observe(command, seconds, n)`` is told, as each slot is written, how long
    after its read it was answered."""

    def __init__(self, reactor, deliver: Callable[[bytes], None],
                 observe: Callable[[str, float, int], None]):
        self.reactor = reactor
        self._deliver = deliver
        self._observe = observe
        # The command being queued and when its read came in: each slot queued takes them,
        # for ringcache_request_duration_seconds (the protocol's commands set them).
        self.command = "get"
        self.read_at = 0.0
        self.slots: deque[Slot] = deque()
        self.outstanding = 0  # commands queued and not yet written (one slot may hold many)
        self._flush_call = None
        self._closed = False

    def queue(self, slot: Slot) -> None:
        slot.command, slot.read_at = self.command, self.read_at
        self.slots.append(slot)
        self.outstanding += slot.commands

    def answer(self, data: bytes) -> None:
        # Even an immediate answer queues: commands ahead of it may still be waiting,
        # and the flush at the end of the turn writes everything ready at once.
        self.queue(Slot(data))

    def pending(self) -> Slot:
        slot = Slot()
        self.queue(slot)
        return slot

    def fill(self, data: bytes, slot: Slot) -> None:
        slot.data = data
        if self._closed:
            return
        slots = self.slots
        if slots and slots[-1].data is not None:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = end_of_turn(self.reactor, self.flush)

    def later(self, d, on_result, errors, noreply: bool = False) -> None:
        """Answer from Deferred ``d`` in a slot of its own: ``on_result(result) -> bytes``,
        or ``errors(failure) -> bytes``; nothing at all for ``noreply``."""
        slot = self.pending()
        d.addCallbacks(on_result, errors)
        if noreply:
            d.addBoth(lambda _: b"")
        d.addCallback(self.fill, slot)

    def stream(self, produce, drained: Callable[[], Awaitable], errors) -> None:
        """An answer written as it is made: ``produce(write)`` awaits ``write(piece)`` for
        each piece and answers the last one (``errors(failure)`` if it fails). Each piece
        takes the answer's place in the order and leaves a new place right behind it for
        the next; a write then waits for ``drained()`` (the client reading what it was
        sent)."""
        slot = self.pending()

        async def write(piece: bytes) -> None:
            nonlocal slot
            following = Slot(commands=0)  # the same command's answer, timed with it
            following.command, following.read_at = slot.command, slot.read_at
            try:
                self.slots.insert(self.slots.index(slot) + 1, following)
            except ValueError:  # written already: it was at the head
                self.slots.appendleft(following)
            self.fill(piece, slot)
            slot = following
            await drained()

        d = Deferred.fromCoroutine(produce(write))
        d.addErrback(errors)
        d.addCallback(lambda last: self.fill(last, slot))

    def flush(self) -> None:
        cancel_call(self._flush_call)
        self._flush_call = None
        slots = self.slots
        out = []
        pieces = False
        now = self.reactor.seconds()
        observe = self._observe
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            self.outstanding -= slot.commands
            observe(slot.command, now - slot.read_at, slot.commands)
            data = slot.data
            if type(data) is list:  # an answer in pieces (large values): kept apart
                out.extend(data)
                pieces = True
            else:
                out.append(data)
        if pieces:
            self._deliver(out)
        elif out:
            self._deliver(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        """The connection is gone: answers still to come are dropped."""
        self._closed = True
        cancel_call(self._flush_call)
        self._flush_call = None
        self.slots.clear()
