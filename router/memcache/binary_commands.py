"""memcached's binary protocol on one connection whose first byte was 0x80 (memcached
picks the protocol the same way): what the parser (router/memcache/binary.py) reads,
carried out on the router and answered in binary packets.

The connection (router/memcache/connection.py) keeps what every protocol shares: answers
in request order, one write per turn, the bounds on what a client may hold and leave
unread. What the commands do is router/memcache/commands.py, shared with the text and
meta protocols.
"""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.logger import Logger

from router.cluster.errors import AnswerTooLarge, NodeUnavailable, RingcacheError, TooLarge
from router.memcache import binary as mb
from router.memcache import commands
from router.memcache import stats as memcache_stats
from router.memcache.keys import KEY_MAX_LENGTH
from router.memcache.text_commands import RESULTS
from router.cluster.writes import EXISTS, MISSING, NON_NUMERIC, NOT_STORED_, STORED

log = Logger()

# Extras, key and the largest value: what one request's body may hold.
_OVERHEAD = 20 + KEY_MAX_LENGTH


class BinaryCommands:
    """The binary protocol of one MemcacheConnection (router/memcache/connection.py)."""

    def __init__(self, connection):
        self.connection = connection
        self.router = connection.router
        self.answers = connection.answers
        self.parser = mb.BinaryParser(self.router.item_size_max + _OVERHEAD)

    def timed_out_line(self, why: str) -> None:
        return None  # no text line to tell a binary client why: just close

    def received(self, data: bytes) -> None:
        parser = self.parser
        parser.receive_data(data)
        connection = self.connection
        while not connection.quitting:
            try:
                request = parser.next_event()
            except mb.ProtocolError:
                # As memcached: a stream that is not binary requests cannot be resynced.
                connection.quitting = True
                break
            if request is None:
                break
            if type(request) is mb.Invalid:
                self.answers.answer(mb.error(request.opcode, request.opaque, request.status))
            else:
                self.answers.command = _COMMAND_NAMES[request.command]
                _COMMANDS[request.command](self, request)

    def _reply(self, request: mb.Request, d, on_result) -> None:
        """Answer ``request`` from Deferred ``d`` via ``on_result``; failures become the
        binary error they are."""
        self.answers.later(d, on_result, lambda failure: _failed(request, failure))

    # -- commands -----------------------------------------------------------------------

    def _do_get(self, r: mb.Request) -> None:
        command = r.command
        if command in (mb.GAT, mb.GATK, mb.TOUCH):
            d = commands.gat(self.router, r.key, mb.FLAGS.unpack(r.extras)[0], self.connection)
        else:
            d = self.router.get(*self.router.resolve(r.key), conn=self.connection)
        with_key = command in (mb.GETK, mb.GATK)
        op = "touch" if command == mb.TOUCH else "get"

        def found(item) -> bytes:
            if item is None:
                self.router.stats.count("memcache", op, "miss")
                if r.quiet:
                    return b""
                if with_key:  # memcached answers a getk miss with the key, no message
                    return mb.response(r.opcode, r.opaque, mb.KEY_ENOENT, key=r.key)
                return mb.error(r.opcode, r.opaque, mb.KEY_ENOENT)
            self.router.stats.count("memcache", op,
                                    ("hit" if item.hit else "miss") if op == "get" else "ok")
            value = b"" if command == mb.TOUCH else item.value
            return mb.response(r.opcode, r.opaque, key=r.key if with_key else b"",
                               extras=mb.FLAGS.pack(item.flags), value=value, cas=item.cas)

        self._reply(r, d, found)

    def _do_store(self, r: mb.Request) -> None:
        mode = _MODES[r.command]
        if r.extras:
            flags, exptime = mb.STORE_EXTRAS.unpack(r.extras)
        else:
            flags = exptime = 0  # append/prepend keep the entry's
        d = commands.store(self.router, mode, r.key, r.value, flags, exptime, r.cas)

        def stored(written) -> bytes:
            outcome = written.outcome
            self.router.stats.count("memcache", "cas" if r.cas and r.extras else mode,
                                    RESULTS[outcome])
            if outcome == STORED:
                return b"" if r.quiet else mb.response(r.opcode, r.opaque, cas=written.cas)
            return mb.error(r.opcode, r.opaque, _NOT_STORED_STATUS[mode]
                            if outcome == NOT_STORED_ else _STATUS[outcome])

        self._reply(r, d, stored)

    def _do_delete(self, r: mb.Request) -> None:
        def deleted(written) -> bytes:
            found = written.outcome == STORED
            self.router.stats.count("memcache", "delete", "ok" if found else "miss")
            if found:
                return b"" if r.quiet else mb.response(r.opcode, r.opaque)
            return mb.error(r.opcode, r.opaque, _STATUS[written.outcome])

        self._reply(r, commands.delete(self.router, r.key, r.cas), deleted)

    def _do_arith(self, r: mb.Request) -> None:
        delta, initial, exptime = mb.ARITH_EXTRAS.unpack(r.extras)
        incr = r.command == mb.INCR
        d = commands.arith(self.router, r.key, incr, delta,
                           None if exptime == mb.NO_CREATE else initial, exptime)

        def counted(written) -> bytes:
            self.router.stats.count("memcache", "incr" if incr else "decr",
                                    RESULTS[written.outcome])
            if written.outcome != STORED:
                return mb.error(r.opcode, r.opaque, _STATUS[written.outcome])
            if r.quiet:
                return b""
            return mb.response(r.opcode, r.opaque, value=mb.COUNTER.pack(int(written.value)),
                               cas=written.cas)

        self._reply(r, d, counted)

    def _do_flush(self, r: mb.Request) -> None:
        delay = mb.FLAGS.unpack(r.extras)[0] if r.extras else 0
        self.router.stats.count("memcache", "flush_all", "ok")
        done = b"" if r.quiet else mb.response(r.opcode, r.opaque)
        self._reply(r, commands.flush(self.router, delay), lambda _: done)

    def _do_stat(self, r: mb.Request) -> None:
        """memcached's binary STAT: no key is ``stats``; ``reset``, ``settings`` and
        ``detail on|off|dump`` are read by their prefix, as memcached reads them;
        ``items``, ``slabs`` and ``sizes`` whole; any other key is "Not found"."""
        connection = self.connection
        key = r.key
        pairs = None
        if key.startswith(b"reset"):
            memcache_stats.reset(self.router, connection.factory)
            pairs = succeed([])
        elif key.startswith(b"detail"):
            mode = key[6:]
            prefixes = connection.factory.prefixes
            if mode.startswith(b" dump"):
                pairs = succeed([("detailed", prefixes.dump().decode("latin-1"))])
            elif mode.startswith((b" on", b" off")):
                prefixes.enabled = mode.startswith(b" on")
                pairs = succeed([])
        else:
            args = () if not key else (b"settings",) if key.startswith(b"settings") else (key,)
            if args[:1] not in ((b"conns",),):  # a text-protocol subcommand only
                pairs = memcache_stats.pairs(self.router, connection.factory, args,
                                             connection.reactor.seconds())
        if pairs is None:
            self.answers.answer(mb.error(r.opcode, r.opaque, mb.KEY_ENOENT))
            return

        def packets(pairs) -> bytes:
            out = [mb.response(r.opcode, r.opaque, key=name.encode(), value=str(value).encode())
                   for name, value in pairs]
            return b"".join(out) + mb.response(r.opcode, r.opaque)  # the empty one ends it

        self._reply(r, pairs, packets)

    def _do_simple(self, r: mb.Request) -> None:
        """noop, version, verbosity, quit: answered at once, in order."""
        command = r.command
        if command == mb.VERSION:
            self.answers.answer(mb.response(r.opcode, r.opaque,
                                            value=memcache_stats.VERSION.encode()))
            return
        if not (command == mb.QUIT and r.quiet):
            self.answers.answer(mb.response(r.opcode, r.opaque))
        if command == mb.QUIT:
            self.connection.quitting = True


def _failed(request: mb.Request, failure) -> bytes:
    exc = failure.value
    if isinstance(exc, TooLarge):
        return mb.error(request.opcode, request.opaque, mb.E2BIG)
    if isinstance(exc, AnswerTooLarge):
        return mb.error(request.opcode, request.opaque, mb.ENOMEM)
    if isinstance(exc, NodeUnavailable):
        return mb.error(request.opcode, request.opaque, mb.ETMPFAIL, str(exc).encode())
    if isinstance(exc, RingcacheError):
        return mb.error(request.opcode, request.opaque, mb.EINTERNAL, str(exc).encode())
    log.failure("unexpected error answering a binary memcached request", failure)
    return mb.error(request.opcode, request.opaque, mb.EINTERNAL, b"internal error")


_MODES = {mb.SET: "set", mb.ADD: "add", mb.REPLACE: "replace", mb.APPEND: "append",
          mb.PREPEND: "prepend"}
# A write's outcome as a binary status; NOT_STORED depends on the command, as in memcached.
_STATUS = {EXISTS: mb.KEY_EEXISTS, MISSING: mb.KEY_ENOENT, NON_NUMERIC: mb.DELTA_BADVAL}
_NOT_STORED_STATUS = {"add": mb.KEY_EEXISTS, "replace": mb.KEY_ENOENT, "set": mb.NOT_STORED,
                      "append": mb.NOT_STORED, "prepend": mb.NOT_STORED}
_COMMANDS = {
    **dict.fromkeys((mb.GET, mb.GETK, mb.GAT, mb.GATK, mb.TOUCH), BinaryCommands._do_get),
    **dict.fromkeys((mb.SET, mb.ADD, mb.REPLACE, mb.APPEND, mb.PREPEND),
                    BinaryCommands._do_store),
    mb.DELETE: BinaryCommands._do_delete,
    mb.INCR: BinaryCommands._do_arith, mb.DECR: BinaryCommands._do_arith,
    mb.FLUSH: BinaryCommands._do_flush, mb.STAT: BinaryCommands._do_stat,
    **dict.fromkeys((mb.NOOP, mb.VERSION, mb.VERBOSITY, mb.QUIT), BinaryCommands._do_simple),
}
# The command label of each opcode in ringcache_request_duration_seconds, as the text
# protocol names the command.
_COMMAND_NAMES = {
    **dict.fromkeys((mb.GET, mb.GETK), "get"), **dict.fromkeys((mb.GAT, mb.GATK), "gat"),
    mb.TOUCH: "touch", mb.SET: "set", mb.ADD: "add", mb.REPLACE: "replace",
    mb.APPEND: "append", mb.PREPEND: "prepend", mb.DELETE: "delete", mb.INCR: "incr",
    mb.DECR: "decr", mb.FLUSH: "flush_all", mb.STAT: "stats", mb.NOOP: "noop",
    mb.VERSION: "version", mb.VERBOSITY: "verbosity", mb.QUIT: "quit",
}
