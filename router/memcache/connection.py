"""One memcached client connection: the protocol it speaks, the order of its answers, and
the bounds on what it may hold and leave unread.

The first byte picks the protocol, as in memcached: 0x80 (a binary request's magic) makes
the connection's commands BinaryCommands (router/memcache/binary_commands.py), anything
else TextCommands (router/memcache/text_commands.py). Either parses what arrives, carries
the commands out and queues their answers in an AnswerQueue (router/memcache/order.py);
this class writes what the queue has ready and decides when the client is read from.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from router.memcache.binary import REQUEST
from router.memcache.binary_commands import BinaryCommands
from router.memcache.order import AnswerQueue
from router.memcache.text_commands import TextCommands
from shared.net import whole_answers, write_now

# Commands read but not yet answered, per connection; past this a pipelining client is
# not read from until the queue drains to half. With the answer bytes bound below
# (limits.output_buffer) this is what keeps one client from filling the router's memory.
MAX_OUTSTANDING = 1024

BINARY_MAGIC = bytes([REQUEST])  # a binary request's first byte


@implementer(IHalfCloseableProtocol, IPushProducer)
class MemcacheConnection(Protocol):
    """One client connection. It is also the producer of what the client is sent: when
    the transport's buffer holds ``output_buffer`` bytes the client is not read from until
    they drain, so a client that pipelines without reading its answers stays bounded."""

    def __init__(self, factory):
        self.router = factory.router
        self.factory = factory
        self.reactor = factory.reactor
        self.answers = AnswerQueue(self.reactor, self._deliver, self._observe)
        self.commands: TextCommands | BinaryCommands | None = None  # from the first byte
        # Why this client is not read from, if it is not: too many answers outstanding,
        # it does not read what we send, or other clients' unfinished values fill the
        # listener's input budget while it too is in the middle of one.
        self._paused = self._blocked = self._starved = False
        self._full = False  # the transport said its buffer is full: watch output_buffer
        self._drained: list = []  # streamed answers waiting for the buffer to empty
        self._reading = True
        self.held = 0  # bytes of an unfinished command its parser holds (factory.hold)
        self.quitting = False  # answer what was read, then close
        self._read_closed = False
        # For the listener's timeout sweep (shared/connections.py).
        self.last_active = self.reactor.seconds()
        self.partial_since: float | None = None
        self.watching = False  # a watch command made it a sink of log lines

    def connectionMade(self):
        whole_answers(self.transport)
        self.transport.registerProducer(self, True)
        self.factory.total_connections += 1
        self.factory.bounds.opened(self)

    def connectionLost(self, reason):
        if self.watching:
            self.factory.watchers.remove(self)
        self.factory.bounds.closed(self)
        self.factory.hold(self, 0)
        self.answers.close()

    def dataReceived(self, data: bytes):
        if self.watching:
            return  # a watcher is read no more, as in memcached
        commands = self.commands
        if commands is None:
            kind = BinaryCommands if data[:1] == BINARY_MAGIC else TextCommands
            commands = self.commands = kind(self)
        self.last_active = self.answers.read_at = now = self.reactor.seconds()
        commands.received(data)
        self._read_done(commands.parser, now)

    def _read_done(self, parser, now: float) -> None:
        """After a read's commands are dispatched: the bounds (a command left half sent,
        bytes held, answers outstanding) and this turn's answers."""
        if parser.mid_command and not self.quitting and not self.watching:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None
        if parser.buffered != self.held:
            self.factory.hold(self, parser.buffered)
        answers = self.answers
        answers.flush()
        if self.quitting and not answers.slots:
            self.transport.loseConnection()
        elif answers.outstanding > MAX_OUTSTANDING and not self._paused:
            self._paused = True
            self._update_reading()

    # -- a watcher (router/memcache/watch.py) ---------------------------------------------

    def watch(self, flags: frozenset[str]) -> None:
        """What was answered so far is written; from now on the connection is sent log lines."""
        self.answers.flush()
        self.watching = True
        self.partial_since = None
        self.factory.watchers.add(self, flags)

    @property
    def number(self) -> int:
        """This client's number in ``stats conns`` and watch lines: its socket's file
        descriptor, as in memcached."""
        fileno = getattr(self.transport, "fileno", None)
        return fileno() if fileno else id(self) % 100000

    def unsent(self) -> int:
        """Bytes written to the transport that it has not sent yet."""
        transport = self.transport
        return (len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
                + getattr(transport, "_tempDataLen", 0))

    def send_log(self, line: bytes) -> None:
        self.last_active = self.reactor.seconds()
        write_now(self.transport, line)

    def _observe(self, command: str, seconds: float, n: int) -> None:
        self.router.stats.observe("memcache", command, seconds, n)

    def _flush(self) -> None:
        """Write what is ready; once quitting, close when nothing is left to answer."""
        answers = self.answers
        answers.flush()
        if self.quitting and not answers.slots:
            self.transport.loseConnection()

    def _deliver(self, data: bytes) -> None:
        """The answers the queue has ready, in order (router/memcache/order.py)."""
        self.last_active = self.reactor.seconds()
        write_now(self.transport, data)
        if self._full:
            self._check_output()
        answers = self.answers
        if self._paused and answers.outstanding <= MAX_OUTSTANDING // 2:
            self._paused = False
            self._update_reading()
        if self.quitting and not answers.slots:
            self.transport.loseConnection()

    # -- half-close: the client sent everything and shut its side (nc, printf | ...) -----

    def readConnectionLost(self):
        # Every command already received is still answered; then the connection closes.
        self._read_closed = True
        self.partial_since = None
        self.quitting = True
        self._update_reading()
        self._flush()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    # -- the listener's sweep (shared/connections.py) ------------------------------------

    def busy(self) -> bool:
        return bool(self.answers.slots)

    def timed_out(self, why: str) -> None:
        if self.partial_since is not None and self.commands is not None:
            line = self.commands.timed_out_line(why)
            if line:
                self.answers.answer(line)
        self.partial_since = None
        self.quitting = True
        self._flush()

    # -- back-pressure -------------------------------------------------------------------
    # The transport calls pauseProducing once its buffer passes its bufferSize (64 KiB, which
    # is also what it reads at a time: raising it would make every read allocate that much),
    # and resumeProducing once it has sent everything. Reading stops only past
    # limits.output_buffer, checked then and after every write while the buffer is full.

    def pauseProducing(self):
        self._full = True
        self._check_output()

    def resumeProducing(self):
        self._full = False
        self._blocked = False
        self._update_reading()
        drained, self._drained = self._drained, []
        for d in drained:  # answers being streamed (AnswerQueue.stream) go on
            d.callback(None)

    def stopProducing(self):
        pass

    async def drained(self) -> None:
        """Once the transport's buffer is not full (a streamed answer's next piece)."""
        while self._full and self.transport is not None and self.transport.connected:
            d = Deferred()
            self._drained.append(d)
            await d

    def _check_output(self) -> None:
        blocked = self.unsent() > self.factory.limits.output_buffer
        if blocked != self._blocked:
            self._blocked = blocked
            self._update_reading()

    def starve(self, starved: bool) -> None:
        """The listener's input budget is spent (or free again): see MemcacheFactory.hold."""
        self._starved = starved
        self._update_reading()

    def _update_reading(self) -> None:
        reading = not (self._paused or self._blocked or self._starved or self._read_closed)
        if reading != self._reading:
            self._reading = reading
            if reading:
                self.transport.resumeProducing()
            elif not self._read_closed:
                self.transport.pauseProducing()
