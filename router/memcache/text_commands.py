"""memcached's text and meta commands on one connection: what the parser
(router/memcache/text.py) reads, carried out on the router and answered in its words.

Every get, plain or not, goes through the data plane (router/dataplane/): the plain get
lines at the head of the parser's buffer are routed straight from it, and the gets the
parser had to split itself (odd spacing, a line of many keys) are routed the same way from
their keys. The other commands call the router through router/memcache/commands.py.
"""

from __future__ import annotations

from functools import partial

from twisted.internet.defer import gatherResults, succeed
from twisted.logger import Logger

from router.cluster.errors import AnswerTooLarge, NodeTimeout, RingcacheError, TooLarge
from router.cluster.writes import EXISTS, MISSING, NON_NUMERIC, NOT_STORED_, STORED
from router.dataplane.serve import serve
from router.dataplane.getrun import ANSWER_TOO_BIG, route_gets, take_gets
from router.memcache import commands, meta_commands, watch
from router.memcache import stats as memcache_stats
from router.memcache import text as mc
from router.memcache.detail import values_of
from router.memcache.keys import MAX_KEYS_PER_GET
from router.memcache.metadump import metadump
from router.memcache.numbers import strtoul32
from router.memcache.order import Slot
from router.memcache.stats import VERSION

log = Logger()

# One get's answer is built whole before it is written; past this it is refused with
# memcached's own words for an answer it cannot hold (the data plane's).
MAX_GET_ANSWER = 64 * 1024 * 1024

TOO_MANY_KEYS = mc.client_error(f"too many keys in one get (at most {MAX_KEYS_PER_GET})")

# A store's outcome in text-protocol words.
STORE_ANSWERS = {STORED: mc.STORED, NOT_STORED_: mc.NOT_STORED, EXISTS: mc.EXISTS,
                 MISSING: mc.NOT_FOUND}
NON_NUMERIC_ANSWER = mc.client_error("cannot increment or decrement non-numeric value")
OK = b"OK\r\n"
DETAIL_USAGE = mc.client_error("usage: stats detail on|off|dump")
# What the router answers for memcached's commands it will not carry out (README).
SHUTDOWN_REFUSED = b"ERROR: shutdown not enabled\r\n"  # memcached's words without -A
# cache_memlimit: memcached's answers to a limit it would refuse; one it would take is OK,
# though the router changes nothing (node budgets are topology.yaml's: docs/memcached.md).
MEMLIMIT_TOO_SMALL = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
MEMLIMIT_NOT_BYTES = b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"
RESET = b"RESET\r\n"
SLAB_REASSIGN_DISABLED = mc.client_error("slab reassignment disabled")
CACHEDUMP_USAGE = mc.client_error("bad command line")
# A write's outcome as counted in RouterStats (ok, miss, ...), per memcached's stats names.
RESULTS = {STORED: "ok", NOT_STORED_: "not_stored", EXISTS: "exists", MISSING: "miss",
           NON_NUMERIC: "error"}


def error_line(failure) -> bytes:
    """A failed command's answer in text-protocol words."""
    exc = failure.value
    if isinstance(exc, TooLarge):
        return mc.server_error("object too large for cache")
    if isinstance(exc, AnswerTooLarge):
        return ANSWER_TOO_BIG
    if isinstance(exc, NodeTimeout):
        return mc.server_error(f"node {exc.node} timed out: {exc.reason}")
    if isinstance(exc, RingcacheError):
        return mc.server_error(str(exc))
    log.failure("unexpected error answering a memcached command", failure)
    return mc.server_error("internal error")


def write_error_line(failure) -> bytes:
    """A write's error: a timeout is not a failure, since the node may still apply it."""
    exc = failure.value
    if isinstance(exc, NodeTimeout):
        return mc.server_error(f"node {exc.node} timed out ({exc.reason}): the outcome "
                               "is unknown, the write may yet be applied")
    return error_line(failure)


def admin_line(event, notice) -> bytes:
    """verbosity and slabs automove: OK (the router's logging is its own, it has no
    slabs); shutdown refused, as memcached without -A; slabs reassign as memcached with
    slab_reassign off; cache_memlimit in memcached's words, changing nothing (``notice``
    logs that)."""
    if event.command == "shutdown":
        return SHUTDOWN_REFUSED
    if event.command == "slabs_reassign":  # no slabs to move pages between
        return SLAB_REASSIGN_DISABLED
    if event.command != "cache_memlimit":
        return OK
    if event.value < 8:
        return MEMLIMIT_TOO_SMALL
    if event.value > 1_000_000_000:
        return MEMLIMIT_NOT_BYTES
    notice(f"cache_memlimit {event.value} answered OK and ignored: node budgets are set in "
           "topology.yaml")
    return OK


def _spread(results: list, distinct: list, keys) -> list:
    """Results for ``distinct`` keys, placed at every position of ``keys`` they hold."""
    by_key = dict(zip(distinct, results))
    return [by_key[k] for k in keys]


def _first_failure(failure):
    return failure.value.subFailure  # gatherResults' FirstError -> the first key's failure


def _record_gets(connection, keys: list, answer: bytes) -> None:
    """Each key of a run of gets, hit or not by its answer, for ``stats detail`` and the
    watchers of fetches (a key asked twice is answered twice)."""
    sizes: dict[bytes, list[int]] = {}
    for key, nbytes in values_of(answer):
        sizes.setdefault(key, []).append(nbytes)
    factory = connection.factory
    record = factory.prefixes.record_get if factory.prefixes.enabled else None
    watchers = factory.watchers if factory.watchers.fetching else None
    for key in keys:
        found = sizes.get(key)
        size = found.pop(0) if found else None
        if record is not None:
            record(key, size is not None)
        if watchers is not None:
            watchers.item_get(key, size is not None, watch.class_of(connection.router, key),
                              connection.number, size or 0)


class TextCommands:
    """The text protocol of one MemcacheConnection (router/memcache/connection.py)."""

    def __init__(self, connection):
        self.connection = connection
        self.router = connection.router
        self.answers = connection.answers
        self.parser = mc.MemcacheParser(item_size_max=self.router.item_size_max)

    def timed_out_line(self, why: str) -> bytes:
        """What a client is told whose command did not arrive whole in time."""
        return mc.client_error(f"command {why}")

    def received(self, data: bytes) -> None:
        parser = self.parser
        parser.receive_data(data)
        connection = self.connection
        # Taken per read: a reload swaps them, and what was routed finishes on the old.
        routes = self.router.routes
        answers = self.answers
        get = mc.Get
        gets = []  # consecutive gets the parser split itself, served as one run
        # Per-prefix counting and watchers need each get's keys: the parser splits them.
        factory = connection.factory
        while not connection.quitting and not connection.watching:
            if not gets and not factory.reads_each_key:
                # The hot path: every plain get line at the head of the buffer, at once.
                run = parser.lend(take_gets, routes.table, MAX_KEYS_PER_GET, MAX_GET_ANSWER)
                if run is not None:
                    answers.command = "get"
                    slot = Slot(None, run.ncommands)
                    self.answers.queue(slot)
                    serve(self.router, run, routes, self._served, slot, error_line,
                          connection)
                    continue
            event = parser.next_event()
            if event is None:
                break
            if type(event) is get:
                gets.append(event)
                continue
            if gets:
                self._gets(gets, routes)
                gets = []
            answers.command = _command_name(event)
            self._dispatch(event)
        if gets:
            self._gets(gets, routes)

    # -- gets: the data plane ---------------------------------------------------------------

    def _serve(self, run, routes, events) -> None:
        slot = Slot(None, run.ncommands)
        self.answers.queue(slot)
        served = self._served
        if self.connection.factory.reads_each_key:
            served = partial(self._served_detail, [k for event in events for k in event.keys])
        serve(self.router, run, routes, served, slot, error_line, self.connection)

    def _served_detail(self, keys: list, answer: bytes, run, slot: Slot, loaded: int) -> None:
        """_served, counting each key's get and hit for ``stats detail`` and telling the
        watchers of fetches."""
        if type(answer) is list:  # in pieces (large values): read as one
            answer = b"".join(answer)
        _record_gets(self.connection, keys, answer)
        self._served(answer, run, slot, loaded)

    def _served(self, answer: bytes | list, run, slot: Slot, loaded: int) -> None:
        """The data plane's answer to a run of gets (router/dataplane/serve.py: bytes, or
        pieces when its values are large); ``loaded`` of the keys it found were not cached
        (read through): misses."""
        count = self.router.stats.count
        if run.hits > loaded:
            count("memcache", "get", "hit", run.hits - loaded)
        if run.misses + loaded:
            count("memcache", "get", "miss", run.misses + loaded)
        self.answers.fill(answer, slot)

    def _gets(self, events: list, routes) -> None:
        """Gets the parser read into keys itself: one run for all of them, but for a get
        of more distinct keys than MAX_KEYS_PER_GET, which is refused on its own. (A key
        named twice is fetched once and answered twice, as memcached does.)"""
        self.answers.command = "get"
        start = 0
        for i, event in enumerate(events):
            keys = event.keys
            if len(keys) > MAX_KEYS_PER_GET and len(set(keys)) > MAX_KEYS_PER_GET:
                if start < i:
                    self._serve(route_gets(events[start:i], routes.table, MAX_GET_ANSWER),
                                routes, events[start:i])
                self.router.stats.count("memcache", "get", "error")
                self.answers.answer(TOO_MANY_KEYS)
                start = i + 1
        if start < len(events):
            self._serve(route_gets(events[start:], routes.table, MAX_GET_ANSWER), routes,
                        events[start:])

    # -- every other command ----------------------------------------------------------------

    def _later(self, d, on_result, noreply: bool = False, errors=write_error_line) -> None:
        self.answers.later(d, on_result, errors, noreply)

    def _dispatch(self, event) -> None:
        kind = type(event)
        answer = self.answers.answer
        count = self.router.stats.count
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
            self._later(meta_commands.carry_out(self.router, event, self.connection), bytes,
                        errors=error_line if event.command == "mg" else write_error_line)
        elif kind is mc.FlushAll:
            count("memcache", "flush_all", "ok")
            self._later(commands.flush(self.router, event.delay), lambda _: OK, event.noreply)
        elif kind is mc.Admin:
            line = admin_line(event, self.connection.factory.notice)
            if not event.noreply:
                answer(line)
        elif kind is mc.Close:
            count("memcache", "unknown", "error")
            self.connection.factory.notice(
                "closed a memcached connection whose command line looks like HTTP (a "
                "cross-protocol request: memcached closes it too)")
            self.connection.quitting = True
        elif kind is mc.Version:
            answer(mc.version_line(VERSION))
        elif kind is mc.Stats:
            self._later(self._stats(event), bytes, errors=error_line)
        elif kind is mc.Metadump:
            self.answers.stream(lambda write: metadump(self.router, write),
                                self.connection.drained, error_line)
        elif kind is mc.Quit:
            self.connection.quitting = True
        elif kind is mc.Watch:
            if self.answers.slots:  # memcached's refusal too: answers still owed come first
                answer(b"ERROR cannot pipeline other commands before watch\r\n")
            else:
                answer(OK)
                self.connection.watch(event.flags)
        elif kind is mc.Unknown:
            count("memcache", "unknown", "error")
            if not event.noreply:
                answer(mc.ERROR)
        elif kind is mc.ClientError:
            count("memcache", "invalid", "error")
            if not event.noreply:
                answer(mc.client_error(event.message))
        elif kind is mc.ServerError:
            count("memcache", "invalid", "error")
            line = mc.server_error(event.message)
            if event.key is None:
                if not event.noreply:
                    answer(line)
                return
            # A store refused as too large drops the old value first, as memcached does.
            d = self.router.delete(*self.router.resolve(event.key))
            d.addBoth(lambda _: line)
            self._later(d, bytes, event.noreply)

    def _store(self, event) -> None:
        command = event.command
        factory = self.connection.factory
        if factory.prefixes.enabled:
            factory.prefixes.record_set(event.key)
        watchers = factory.watchers
        number = self.connection.number
        looked_up = (watch.look_up(self.router, watchers, event.key, number)
                     if watchers.fetching else None)
        d = commands.store(self.router, command, event.key, event.value, event.flags,
                           event.exptime, event.cas_unique or 0)

        def stored(written) -> bytes:
            self.router.stats.count("memcache", command, RESULTS[written.outcome])
            if watchers.mutating:
                watch.log_store(self.router, watchers, looked_up, event, written.outcome,
                                number)
            return STORE_ANSWERS[written.outcome]

        self._later(d, stored, event.noreply)

    def _delete(self, event) -> None:
        if self.connection.factory.prefixes.enabled:
            self.connection.factory.prefixes.record_delete(event.key)
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
            self.router.stats.count("memcache", op, RESULTS[written.outcome])
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
        slot = self.answers.pending()
        if not keys:
            self.answers.fill(mc.END, slot)
            return
        distinct = list(dict.fromkeys(keys))
        if len(distinct) > MAX_KEYS_PER_GET:
            self.router.stats.count("memcache", "gat", "error")
            self.answers.fill(TOO_MANY_KEYS, slot)
            return
        ds = [commands.gat(self.router, key, event.exptime, self.connection) for key in distinct]
        d = gatherResults(ds, consumeErrors=True).addErrback(_first_failure)
        if len(distinct) < len(keys):
            d.addCallback(_spread, distinct, keys)
        d.addCallbacks(self._gatted, self._failed, (keys, event.with_cas, slot), None, (slot,))

    def _gatted(self, items: list, keys, with_cas: bool, slot: Slot) -> None:
        """Fill ``slot`` with the answer to a gat of ``keys``: an Item or None per key."""
        count = self.router.stats.count
        if sum(len(item.value) for item in items if item is not None) > MAX_GET_ANSWER:
            count("memcache", "gat", "error")
            self.answers.fill(ANSWER_TOO_BIG, slot)
            return
        parts = []
        hits = 0
        for key, item in zip(keys, items):
            if item is not None:
                cas = item.cas if with_cas else None
                parts.append(mc.value_line(key, item.flags, item.value, cas))
                hits += item.hit
        if hits:
            count("memcache", "gat", "hit", hits)
        if hits < len(keys):
            count("memcache", "gat", "miss", len(keys) - hits)
        parts.append(mc.END)
        answer = b"".join(parts)
        if self.connection.factory.reads_each_key:
            _record_gets(self.connection, keys, answer)
        self.answers.fill(answer, slot)

    def _failed(self, failure, slot: Slot) -> None:
        self.answers.fill(error_line(failure), slot)

    def _stats(self, event):
        """A Deferred of the answer to ``stats [SUBCOMMAND ...]`` (router/memcache/stats.py);
        subcommands memcached does not know (and noreply, which stats does not take)
        are memcached's ERROR."""
        args = event.args
        connection = self.connection
        which = args[0] if args else b""
        if which == b"detail":  # per-prefix counters (router/memcache/detail.py)
            prefixes = connection.factory.prefixes
            if args[1:2] in ((b"on",), (b"off",)):
                prefixes.enabled = args[1] == b"on"
                return succeed(OK)
            return succeed(prefixes.dump() if args[1:2] == (b"dump",) else DETAIL_USAGE)
        if which == b"reset":
            memcache_stats.reset(self.router, connection.factory)
            return succeed(RESET)
        if which == b"cachedump":
            if len(args) < 3:
                return succeed(CACHEDUMP_USAGE)
            number, limit = strtoul32(args[1]), strtoul32(args[2])
            if number is None or limit is None:
                return succeed(mc.client_error(mc.BAD_FORMAT))
            if number >= memcache_stats.MAX_CLASSES:
                return succeed(mc.client_error("Illegal slab id"))
            return memcache_stats.cachedump(self.router, number, limit,
                                            connection.reactor.seconds())
        d = memcache_stats.pairs(self.router, connection.factory, args,
                                 connection.reactor.seconds())
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
                  mc.ServerError: "invalid", mc.Get: "get", mc.Close: "unknown"}
