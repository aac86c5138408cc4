"""The memcached text-protocol front end: a thin Twisted wrapper over MemcacheParser.

Pipelined commands are answered in request order even though their node answers come
back in any order: each command takes a slot in a queue, and completed slots at the
head of the queue are written together, once per reactor turn, or at once when every
command the client sent has its answer.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from router.dataplane import serve as dataplane

from router.memcache import meta_commands as memcache_meta_run

from router.memcache import stats as memcache_stats
from router.memcache import commands
from router.memcache.metadump import metadump
from router.memcache import text as mc
from router.cluster.errors import AnswerTooLarge, NodeTimeout, RingcacheError, TooLarge
from router.dataplane.getrun import ANSWER_TOO_BIG
from router.memcache.stats import VERSION
from router.config.topology import LimitsConfig
from router.cluster.writes import EXISTS, MISSING, NON_NUMERIC, NOT_STORED_, STORED
from shared.connections import ConnectionGate, Refusal
from shared.net import cancel_call, whole_answers, write_now
from shared.reactor import end_of_turn

log = Logger()

# Commands read but not yet answered, per connection; past this a pipelining client is
# not read from until the queue drains to half. With the answer bytes bound below
# (limits.output_buffer) this is what keeps one client from filling the router's memory.
MAX_OUTSTANDING = 1024

# One get's answer is built whole before it is written; past this it is refused with
# memcached's own words for an answer it cannot hold (the data plane's, router/getrun).
MAX_GET_ANSWER = 64 * 1024 * 1024
TOO_BIG_ANSWER = ANSWER_TOO_BIG

TOO_MANY_CONNECTIONS = mc.server_error("too many connections")

# Distinct keys one get may name: each is a node read and maybe a source load.
MAX_KEYS_PER_GET = 4096
TOO_MANY_KEYS = mc.client_error(f"too many keys in one get (at most {MAX_KEYS_PER_GET})")

# A store's outcome in text-protocol words.
STORE_ANSWERS = {STORED: mc.STORED, NOT_STORED_: mc.NOT_STORED, EXISTS: mc.EXISTS,
                 MISSING: mc.NOT_FOUND}
NON_NUMERIC_ANSWER = mc.client_error("cannot increment or decrement non-numeric value")
OK = b"OK\r\n"
DETAIL_USAGE = mc.client_error("usage: stats detail on|off|dump")
_DETAIL = {(b"dump",): mc.END, (b"on",): OK, (b"off",): OK}
BINARY_MAGIC = b"\x80"  # a binary request's first byte (router/memcache/binary.py)
# What the router answers for memcached's commands it will not carry out (README).
REFUSED = {
    "shutdown": b"ERROR: shutdown not enabled\r\n",  # memcached's words without -A
    "cache_memlimit": mc.server_error(
        "cache_memlimit is not supported by ringcache: node budgets are set in topology.yaml"),
}


class _Slot:
    """A place in the answer order for one command, or for the ``commands`` of a run the
    data plane serves at once; ``data`` is None until it is answered. ``command`` and
    ``read_at`` time it for the request latency histogram, when it is written."""

    __slots__ = ("data", "commands", "command", "read_at")

    def __init__(self, data: bytes | None = None, commands: int = 1):
        self.data = data
        self.commands = commands


def _spread(results: list, distinct: list, keys) -> list:
    """Results for ``distinct`` keys, placed at every position of ``keys`` they hold."""
    by_key = dict(zip(distinct, results))
    return [by_key[k] for k in keys]


def _first_failure(failure):
    return failure.value.subFailure  # get_many's FirstError -> the first key's own failure


def _error_line(failure) -> bytes:
    exc = failure.value
    if isinstance(exc, TooLarge):
        return mc.server_error("object too large for cache")
    if isinstance(exc, AnswerTooLarge):
        return TOO_BIG_ANSWER
    if isinstance(exc, NodeTimeout):
        return mc.server_error(f"node {exc.node} timed out: {exc.reason}")
    if isinstance(exc, RingcacheError):
        return mc.server_error(str(exc))
    log.failure("unexpected error answering a memcached command", failure)
    return mc.server_error("internal error")


def _write_error_line(failure) -> bytes:
    """A write's error: a timeout is not a failure, since the node may still apply it."""
    exc = failure.value
    if isinstance(exc, NodeTimeout):
        return mc.server_error(f"node {exc.node} timed out ({exc.reason}): the outcome "
                               "is unknown, the write may yet be applied")
    return _error_line(failure)


@implementer(IHalfCloseableProtocol, IPushProducer)
class MemcacheProtocol(Protocol):
    """One client connection. It is also the producer of what the client is sent: when
    the transport's buffer holds ``output_buffer`` bytes the client is not read from until
    they drain, so a client that pipelines without reading its answers stays bounded."""

    def __init__(self, factory: MemcacheFactory):
        self.router = factory.router
        self.factory = factory
        self.reactor = factory.reactor
        self.parser = mc.MemcacheParser(item_size_max=factory.router.item_size_max)
        self.slots: deque[_Slot] = deque()
        self._flush_call = None
        # Why this client is not read from, if it is not: too many answers outstanding,
        # it does not read what we send, or other clients' unfinished values fill the
        # listener's input budget while it too is in the middle of one.
        self._paused = self._blocked = self._starved = False
        self._full = False  # the transport said its buffer is full: watch output_buffer
        self._drained: list = []  # streamed answers waiting for the buffer to empty
        self._reading = True
        self._held = 0  # bytes of an unfinished command its parser holds
        self._outstanding = 0  # commands read and not yet written (one slot may hold many)
        self._quitting = False
        self._read_closed = False
        # The command being dispatched and when its read came in: each slot queued takes
        # them, for ringcache_request_duration_seconds.
        self._command = "get"
        self._read_at = 0.0
        # For the listener's timeout sweep (shared/connections.py).
        self.last_active = self.reactor.seconds()
        self.partial_since: float | None = None
        # The first read tells which protocol the client speaks, as in memcached.
        self.dataReceived = self._first_read

    def _first_read(self, data: bytes):
        del self.dataReceived  # from now on, the class's own
        if data[:1] == BINARY_MAGIC:
            from router.memcache.binary_server import take_over
            take_over(self)
        self.dataReceived(data)

    def connectionMade(self):
        whole_answers(self.transport)
        self.transport.registerProducer(self, True)
        self.factory.total_connections += 1
        self.factory.gate.opened(self)

    def connectionLost(self, reason):
        self.factory.gate.closed(self)
        self.factory.hold(self, 0)
        cancel_call(self._flush_call)
        self._flush_call = None
        self.slots.clear()

    # -- half-close: the client sent everything and shut its side (nc, printf | ...) -----

    def readConnectionLost(self):
        # Every command already received is still answered; then the connection closes.
        self._read_closed = True
        self.partial_since = None
        self._quitting = True
        self._update_reading()
        if not self.slots:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    # -- bounds ------------------------------------------------------------------------

    def busy(self) -> bool:
        return bool(self.slots)

    def timed_out(self, why: str) -> None:
        if self.partial_since is not None:
            self._answer(mc.client_error(f"command {why}"))
        self.partial_since = None
        self._quitting = True
        self._flush()
        if not self.slots:
            self.transport.loseConnection()

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
        for d in drained:  # answers being streamed (_stream) go on
            d.callback(None)

    def _check_output(self) -> None:
        transport = self.transport
        queued = (len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
                  + getattr(transport, "_tempDataLen", 0))
        blocked = queued > self.factory.limits.output_buffer
        if blocked != self._blocked:
            self._blocked = blocked
            self._update_reading()

    def starve(self, starved: bool) -> None:
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

    def stopProducing(self):
        pass

    def dataReceived(self, data: bytes):
        parser = self.parser
        parser.receive_data(data)
        self.last_active = self._read_at = now = self.reactor.seconds()
        # Taken per read: a reload swaps them, and what was routed finishes on the old.
        routes = getattr(self.router, "routes", None)
        get = mc.Get
        run = []  # consecutive gets the fast path did not take, read as one multi-key read
        while not self._quitting:
            if routes is not None and not run:
                # The hot path: every plain get at the head of the buffer, at once.
                batch = parser.take_gets(routes.table, MAX_KEYS_PER_GET, MAX_GET_ANSWER)
                if batch is not None:
                    slot = _Slot(None, batch.ncommands)
                    self._command = "get"
                    self._queue(slot)
                    dataplane.serve(self.router, batch, routes, self._served, slot, _error_line,
                                    self)
                    continue
            event = parser.next_event()
            if event is None:
                break
            if type(event) is get:
                run.append(event)
                continue
            if run:
                self._command = "get"
                self._gets(run)
                run = []
            self._command = _command_name(event)
            self._dispatch(event)
        if run:
            self._command = "get"
            self._gets(run)
        self._read_done(now)

    def _read_done(self, now: float) -> None:
        """After a read's commands are dispatched: the bounds (a command left half sent,
        bytes held, answers outstanding) and this turn's answers."""
        parser = self.parser
        if parser.mid_command and not self._quitting:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None
        if parser.buffered != self._held:
            self.factory.hold(self, parser.buffered)
        self._flush()
        if self._outstanding > MAX_OUTSTANDING and not self._paused:
            self._paused = True
            self._update_reading()

    # -- answer ordering --------------------------------------------------------------

    def _queue(self, slot: _Slot) -> None:
        slot.command, slot.read_at = self._command, self._read_at
        self.slots.append(slot)
        self._outstanding += slot.commands

    def _answer(self, data: bytes) -> None:
        # Even an immediate answer queues: commands ahead of it may still be waiting,
        # and the flush at the end of the turn writes everything ready at once.
        self._queue(_Slot(data))

    def _pending(self) -> _Slot:
        slot = _Slot()
        self._queue(slot)
        return slot

    def _stream(self, produce) -> None:
        """An answer written as it is made: ``produce(write)`` awaits ``write(piece)`` for
        each piece and answers the last one. Each piece takes the answer's place in the
        order and leaves a new place right behind it for the next; a write waits while
        the client is not reading (the transport's buffer is full)."""
        slot = self._pending()

        async def write(piece: bytes) -> None:
            nonlocal slot
            following = _Slot(commands=0)  # the same command's answer, timed with it
            following.command, following.read_at = slot.command, slot.read_at
            try:
                self.slots.insert(self.slots.index(slot) + 1, following)
            except ValueError:  # written already: it was at the head
                self.slots.appendleft(following)
            self._fill(piece, slot)
            slot = following
            while self._full and self.transport is not None and self.transport.connected:
                drained = Deferred()
                self._drained.append(drained)
                await drained

        d = Deferred.fromCoroutine(produce(write))
        d.addErrback(_error_line)
        d.addCallback(lambda last: self._fill(last, slot))

    def _fill(self, data: bytes, slot: _Slot) -> None:
        slot.data = data
        slots = self.slots
        if slots and slots[-1].data is not None:
            # Every command sent so far is answered: waiting for the end of the turn
            # could batch nothing more (the common case of a client awaiting its answers).
            self._flush()
        elif self._flush_call is None and self.transport is not None:
            self._flush_call = end_of_turn(self.reactor, self._flush)

    def _flush(self) -> None:
        cancel_call(self._flush_call)
        self._flush_call = None
        slots = self.slots
        out = []
        now = self.reactor.seconds()
        observe = self.router.stats.observe
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            self._outstanding -= slot.commands
            observe("memcache", slot.command, now - slot.read_at, slot.commands)
            out.append(slot.data)
        if out:
            self.last_active = now
            write_now(self.transport, out[0] if len(out) == 1 else b"".join(out))
            if self._full:
                self._check_output()
        if self._paused and self._outstanding <= MAX_OUTSTANDING // 2:
            self._paused = False
            self._update_reading()
        if self._quitting and not slots:
            self.transport.loseConnection()

    def _later(self, d, on_result, noreply: bool = False, errors=_write_error_line) -> None:
        """Answer from Deferred ``d`` via ``on_result(result) -> bytes`` in this slot."""
        slot = self._pending()
        d.addCallbacks(on_result, errors)
        if noreply:
            d.addBoth(lambda _: b"")
        d.addCallback(self._fill, slot)

    # -- commands ---------------------------------------------------------------------

    def _dispatch(self, event) -> None:
        kind = type(event)
        if kind is mc.Store:
            self._store(event)
        elif kind is mc.Delete:
            self._delete(event)
        elif kind is mc.Touch:
            self._touch(event)
        elif kind is mc.Arith:
            self._arith(event)
        elif kind is mc.GetAndTouch:
            self._gat(event)
        elif kind is mc.Meta:
            self._later(memcache_meta_run.run(self.router, event, self), bytes, errors=(
                _error_line if event.command == "mg" else _write_error_line))
        elif kind is mc.FlushAll:
            self.router.stats.count("memcache", "flush_all", "ok")
            self._later(commands.flush(self.router, event.delay), lambda _: OK, event.noreply)
        elif kind is mc.Admin:
            if not event.noreply:
                self._answer(REFUSED.get(event.command, OK))  # verbosity: OK, as memcached
        elif kind is mc.Version:
            self._answer(mc.version_line(VERSION))
        elif kind is mc.Stats:
            self._later(self._stats(event), bytes, errors=_error_line)
        elif kind is mc.Metadump:
            self._stream(lambda write: metadump(self.router, write))
        elif kind is mc.Quit:
            self._quitting = True
        elif kind is mc.Unknown:
            self.router.stats.count("memcache", "unknown", "error")
            if not event.noreply:
                self._answer(mc.ERROR)
        elif kind is mc.ClientError:
            self.router.stats.count("memcache", "invalid", "error")
            if not event.noreply:
                self._answer(mc.client_error(event.message))
        elif kind is mc.ServerError:
            self.router.stats.count("memcache", "invalid", "error")
            line = mc.server_error(event.message)
            if event.key is None:
                if not event.noreply:
                    self._answer(line)
                return
            # A store refused as too large drops the old value first, as memcached does.
            d = self.router.delete(*self.router.resolve(event.key))
            d.addBoth(lambda _: line)
            self._later(d, bytes, event.noreply)

    def _served(self, answer: bytes, run, slot: _Slot, loaded: int) -> None:
        """The data plane's answer to a run of gets (router/dataplane/serve.py); ``loaded``
        of the keys it found were not cached (read through): misses."""
        count = self.router.stats.count
        if run.hits > loaded:
            count("memcache", "get", "hit", run.hits - loaded)
        if run.misses + loaded:
            count("memcache", "get", "miss", run.misses + loaded)
        self._fill(answer, slot)

    # The general path for gets the data plane does not take (gets, odd spacing): one slot
    # and one pair of callbacks per get, no closures.

    def _get(self, event) -> None:
        router = self.router
        keys = event.keys
        slot = _Slot()
        self._queue(slot)
        if len(keys) == 1:
            d = router.get(*router.resolve(keys[0]), conn=self)
        else:
            distinct = self._distinct(keys, slot, "get")
            if distinct is None:
                return
            resolve = router.resolve
            d = router.get_many([resolve(k) for k in distinct], conn=self)
            d.addErrback(_first_failure)
            if len(distinct) < len(keys):
                d.addCallback(_spread, distinct, keys)
        d.addCallbacks(self._hits, self._failed, (keys, event.with_cas, slot), None, (slot,))

    def _distinct(self, keys, slot: _Slot, op: str) -> list | None:
        """The keys of one get, each once (a key named twice is fetched once and answered
        twice, as memcached does), or None with ``slot`` answered when they are too many."""
        distinct = list(dict.fromkeys(keys))
        if len(distinct) <= MAX_KEYS_PER_GET:
            return distinct
        self.router.stats.count("memcache", op, "error")
        slot.data = TOO_MANY_KEYS
        return None

    def _gets(self, events: list) -> None:
        """Pipelined gets from one read: one router read for all their keys (one Deferred
        per node batch, not per key), each command still answered in its own slot."""
        keys = [k for event in events for k in event.keys]
        if len(events) == 1 or len(keys) > MAX_KEYS_PER_GET:
            for event in events:
                self._get(event)
            return
        slots = []
        for _ in events:
            slot = _Slot()
            self._queue(slot)
            slots.append(slot)
        resolve = self.router.resolve
        distinct = list(dict.fromkeys(keys))
        d = self.router.read_many([resolve(k) for k in distinct], conn=self)
        if len(distinct) < len(keys):
            d.addCallback(_spread, distinct, keys)
        d.addCallbacks(self._run_answered, self._run_failed, (events, slots), None, (slots,))

    def _run_answered(self, results: list, events: list, slots: list) -> None:
        start = 0
        for event, slot in zip(events, slots):
            keys = event.keys
            items = results[start:start + len(keys)]
            start += len(keys)
            failure = next((r for r in items if isinstance(r, Failure)), None)
            if failure is not None:
                self._fill(_error_line(failure), slot)
            else:
                self._hits(items[0] if len(keys) == 1 else items, keys, event.with_cas, slot)

    def _run_failed(self, failure, slots: list) -> None:
        line = _error_line(failure)
        for slot in slots:
            self._fill(line, slot)

    def _hits(self, items, keys, with_cas: bool, slot: _Slot, op: str = "get") -> None:
        """Fill ``slot`` with the answer to a get of ``keys``: ``items`` is one Item or None
        for a single key, else a list of them."""
        count = self.router.stats.count
        if len(keys) == 1:
            if items is None:
                count("memcache", op, "miss")
                self._fill(mc.END, slot)
            else:
                count("memcache", op, "hit" if items.hit else "miss")
                cas = items.cas if with_cas else None
                self._fill(mc.value_line(keys[0], items.flags, items.value, cas) + mc.END, slot)
            return
        if sum(len(item.value) for item in items if item is not None) > MAX_GET_ANSWER:
            count("memcache", op, "error")
            self._fill(TOO_BIG_ANSWER, slot)
            return
        parts = []
        hits = 0
        for key, item in zip(keys, items):
            if item is not None:
                cas = item.cas if with_cas else None
                parts.append(mc.value_line(key, item.flags, item.value, cas))
                hits += item.hit
        if hits:
            count("memcache", op, "hit", hits)
        if hits < len(keys):
            count("memcache", op, "miss", len(keys) - hits)
        parts.append(mc.END)
        self._fill(b"".join(parts), slot)

    def _failed(self, failure, slot: _Slot) -> None:
        self._fill(_error_line(failure), slot)

    def _store(self, event) -> None:
        command = event.command
        d = commands.store(self.router, command, event.key, event.value, event.flags,
                           event.exptime, event.cas_unique or 0)

        def stored(written) -> bytes:
            self.router.stats.count("memcache", command, _RESULTS[written.outcome])
            return STORE_ANSWERS[written.outcome]

        self._later(d, stored, event.noreply)

    def _delete(self, event) -> None:
        group, key = self.router.resolve(event.key)

        def deleted(found: bool) -> bytes:
            self.router.stats.count("memcache", "delete", "ok" if found else "miss")
            return mc.DELETED if found else mc.NOT_FOUND

        self._later(self.router.delete(group, key), deleted, event.noreply)

    def _touch(self, event) -> None:
        def touched(found: bool) -> bytes:
            self.router.stats.count("memcache", "touch", "ok" if found else "miss")
            return mc.TOUCHED if found else mc.NOT_FOUND

        self._later(commands.touch(self.router, event.key, event.exptime), touched,
                    event.noreply)

    def _arith(self, event) -> None:
        op = "incr" if event.incr else "decr"

        def counted(written) -> bytes:
            self.router.stats.count("memcache", op, _RESULTS[written.outcome])
            if written.outcome == NON_NUMERIC:
                return NON_NUMERIC_ANSWER
            if written.outcome == MISSING:
                return mc.NOT_FOUND
            return written.value + b"\r\n"

        d = commands.arith(self.router, event.key, event.incr, event.delta)
        self._later(d, counted, event.noreply)

    def _gat(self, event) -> None:
        """gat/gats: one gat per distinct key, answered together like a multi-get."""
        keys = event.keys
        slot = self._pending()
        if not keys:
            self._fill(mc.END, slot)
            return
        distinct = self._distinct(keys, slot, "gat")
        if distinct is None:
            return
        ds = [commands.gat(self.router, key, event.exptime, self) for key in distinct]
        d = gatherResults(ds, consumeErrors=True).addErrback(_first_failure)
        if len(distinct) < len(keys):
            d.addCallback(_spread, distinct, keys)
        if len(keys) == 1:
            d.addCallback(lambda items: items[0])
        d.addCallbacks(self._hits, self._failed, (keys, event.with_cas, slot, "gat"), None,
                       (slot,))

    def _stats(self, event):
        """A Deferred of the answer to ``stats [items|slabs|settings]``; other arguments
        (and noreply, which stats does not take) are memcached's ERROR."""
        args = event.args
        if args[:1] == (b"detail",):  # per-prefix stats: none kept, as memcached by default
            return succeed(_DETAIL.get(args[1:], DETAIL_USAGE))
        d = memcache_stats.pairs(self.router, self.factory, args, self.reactor.seconds())
        return succeed(mc.ERROR) if d is None else d.addCallback(mc.stat_lines)


def _command_name(event) -> str:
    """The command label of ``event`` in ringcache_request_duration_seconds."""
    kind = type(event)
    name = _COMMAND_NAMES.get(kind)
    if name is not None:
        return name
    if kind is mc.Arith:
        return "incr" if event.incr else "decr"
    return getattr(event, "command", "other")  # stores, meta commands, admin commands


_COMMAND_NAMES = {mc.Delete: "delete", mc.Touch: "touch", mc.GetAndTouch: "gat",
                  mc.FlushAll: "flush_all", mc.Version: "version", mc.Stats: "stats",
                  mc.Quit: "quit", mc.Unknown: "unknown", mc.ClientError: "invalid",
                  mc.ServerError: "invalid", mc.Get: "get"}


# A write's outcome as counted in RouterStats (ok, miss, ...), per memcached's stats names.
_RESULTS = {STORED: "ok", NOT_STORED_: "not_stored", EXISTS: "exists", MISSING: "miss",
            NON_NUMERIC: "error"}


class MemcacheFactory(Factory):
    """Builds a protocol per client, within ``limits``: past ``max_connections`` (lowered
    to what the file descriptor limit allows, when given) a client is told why and closed."""

    noisy = False

    def __init__(self, router, reactor, limits: LimitsConfig = LimitsConfig(),
                 fd_limit: int | None = None):
        self.router = router
        self.reactor = reactor
        self.total_connections = 0
        self.started = reactor.seconds()
        self.fd_limit = fd_limit
        self.held = 0  # bytes of unfinished commands over every connection
        self.starved: set[MemcacheProtocol] = set()
        self.gate = ConnectionGate(reactor, 0, what="memcached clients",
                                   log=lambda text: log.warn("{text}", text=text))
        self.apply_limits(limits)

    @property
    def connections(self) -> int:
        """Client connections open now (the gate counts them for its cap)."""
        return len(self.gate)

    def apply_limits(self, limits: LimitsConfig) -> None:
        """Take ``limits`` (at start and on reload); open connections keep going."""
        self.limits = limits
        cap = limits.max_connections
        if self.fd_limit is not None and self.fd_limit < cap:
            cap = self.fd_limit
            log.warn("limits.max_connections {wanted} lowered to {cap}: the process may open "
                     "only so many files (raise `ulimit -n`)", wanted=limits.max_connections,
                     cap=cap)
        self.gate.reconfigure(cap, limits.idle_timeout, limits.command_timeout)

    def hold(self, protocol: MemcacheProtocol, held: int) -> None:
        """``protocol``'s parser now holds ``held`` bytes of an unfinished command.

        Past the input budget a connection in the middle of a value waits (unless it alone
        holds them all: one value must always be able to finish), and the waiting resume
        once the total is back under three quarters of the budget."""
        self.held += held - protocol._held
        protocol._held = held
        budget = self.limits.input_buffer
        if held and self.held > budget and held < self.held:
            self.starved.add(protocol)
            protocol.starve(True)
        elif self.starved and self.held <= budget * 3 // 4:
            starved, self.starved = self.starved, set()
            for waiting in starved:
                waiting.starve(False)
        if not held and protocol in self.starved:
            self.starved.discard(protocol)
            protocol.starve(False)

    def buildProtocol(self, addr):
        if not self.gate.admit():
            return Refusal(TOO_MANY_CONNECTIONS)
        return MemcacheProtocol(self)

    def stopFactory(self):
        self.gate.stop()
