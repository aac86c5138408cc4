"""Sans-I/O parser for the memcached text protocol clients speak to the router, and its answers.

Feed bytes with ``MemcacheParser.receive_data`` and take events from ``next_event`` until it
returns None. Behaviour follows memcached 1.6 (proto_text.c): commands are lowercase, tokens
are separated by spaces, a bad command line is answered and the connection goes on. Where
memcached would lose its place in the stream (a storage command it refuses before reading the
data block) this parser swallows the data block, so the next command still parses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Literal, NamedTuple

from router.memcache import meta as memcache_meta
from router.memcache.keys import KEY_MAX_LENGTH, MAX_KEYS_PER_GET, has_illegal_byte
from router.memcache.meta import Meta, MetaError
from router.memcache.numbers import strtol32, strtoul32, strtoull
from router.memcache.watch import FLAGS as WATCH_FLAGS

ITEM_SIZE_MAX = 1024 * 1024
# A command line longer than this (without its line end) is refused. memcached closes the
# connection instead; we answer and skip the line, which costs the same bounded memory.
MAX_LINE = 2048
# Multigets are the one legitimately long line (memcached grows its buffer for them only):
# as many keys of the longest size as one get may name fit.
MAX_GET_LINE = MAX_KEYS_PER_GET * (KEY_MAX_LENGTH + 1) + len(b"gets")
# Larger exptimes are absolute unix times (memcached's REALTIME_MAXDELTA, 30 days).
REALTIME_MAXDELTA = 60 * 60 * 24 * 30

BAD_FORMAT = "bad command line format"
_DELETE_USAGE = "bad command line format.  Usage: delete <key> [noreply]"
_INT32_MAX = (1 << 31) - 1
_GET_PREFIXES = (b"get ", b"gets ")


@dataclass(frozen=True, slots=True)
class Metadump:
    """lru_crawler metadump all|hash|CLASSES: every key's metadata, streamed."""

    which: bytes


@dataclass(frozen=True, slots=True)
class Get:
    keys: tuple[bytes, ...]
    with_cas: bool


@dataclass(frozen=True, slots=True)
class Store:
    command: str  # set, add, replace, append, prepend or cas
    key: bytes
    flags: int
    exptime: int
    value: bytes
    noreply: bool
    cas_unique: int | None


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    noreply: bool


@dataclass(frozen=True, slots=True)
class Touch:
    key: bytes
    exptime: int
    noreply: bool


@dataclass(frozen=True, slots=True)
class Arith:
    """incr (``incr`` True) or decr by ``delta``."""

    key: bytes
    incr: bool
    delta: int
    noreply: bool


@dataclass(frozen=True, slots=True)
class GetAndTouch:
    """gat/gats: a get that also sets each hit's exptime."""

    exptime: int
    keys: tuple[bytes, ...]
    with_cas: bool


@dataclass(frozen=True, slots=True)
class FlushAll:
    delay: int
    noreply: bool


@dataclass(frozen=True, slots=True)
class Admin:
    """A command that changes the server rather than items (verbosity, cache_memlimit,
    shutdown): ``command`` names it."""

    command: str
    noreply: bool
    value: int = 0  # cache_memlimit's megabytes


@dataclass(frozen=True, slots=True)
class Close:
    """A line that looks like an HTTP request (its last word starts with ``HTTP/``) where
    memcached takes no command: memcached closes the connection unanswered, so that a
    browser tricked into posting to the port cannot drive it (a cross-protocol attack)."""


@dataclass(frozen=True, slots=True)
class Version:
    pass


@dataclass(frozen=True, slots=True)
class Stats:
    args: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Watch:
    """``watch [FLAG ...]``: the connection becomes a sink of log lines (router/memcache/
    watch.py); no flag means fetchers, as in memcached."""

    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Unknown:
    """A command memcached does not know, or a known one with the wrong number of arguments
    (answered ``ERROR``, unless the line ended in noreply where memcached honours it)."""

    command: bytes
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class ClientError:
    """Answer ``client_error(message)`` unless ``noreply``; the connection goes on."""

    message: str
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class ServerError:
    """Answer ``server_error(message)`` unless ``noreply``; the connection goes on.

    ``key`` is set for a store refused as too large: memcached then drops the key's old
    value, so a client that overwrote it never reads what it replaced."""

    message: str
    noreply: bool = False
    key: bytes | None = None


Event = (Get | Store | Delete | Touch | Arith | GetAndTouch | FlushAll | Admin | Version | Stats
         | Quit | Watch | Meta | Metadump | Unknown | ClientError | ServerError | Close)


class _StoreHeader(NamedTuple):
    """A storage command line whose data block has not fully arrived."""

    command: str
    key: bytes
    flags: int
    exptime: int
    nbytes: int
    noreply: bool
    cas_unique: int | None
    meta: Meta | None = None  # an ms: the data block completes this event


class MemcacheParser:
    """Accumulates bytes from one client connection and yields its commands as events."""

    __slots__ = ("_buf", "_pos", "_scanned", "_header", "_swallow", "_skip_line",
                 "item_size_max", "max_line", "max_get_line")

    def __init__(self, item_size_max: int = ITEM_SIZE_MAX, max_line: int = MAX_LINE,
                 max_get_line: int = MAX_GET_LINE):
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._scanned = 0  # bytes after _pos already known to hold no newline
        self._header: _StoreHeader | None = None  # a storage command awaiting its data
        self._swallow = 0  # bytes of a refused data block still to discard
        self._skip_line = False  # discarding up to and including the next newline
        self.item_size_max = item_size_max
        self.max_line = max_line
        self.max_get_line = max_get_line

    def receive_data(self, data: bytes) -> None:
        if self._swallow and self._pos == len(self._buf):
            # Count a refused value down as it arrives instead of buffering it first.
            n = min(self._swallow, len(data))
            self._swallow -= n
            data = memoryview(data)[n:]
        self._buf += data

    def next_event(self) -> Event | None:
        """The next command, or None until more bytes arrive."""
        while True:
            if (self._swallow or self._skip_line) and not self._discard():
                return self._stop()
            if self._header is not None:
                return self._data_block()
            buf, pos = self._buf, self._pos
            nl = buf.find(b"\n", pos + self._scanned)
            if nl < 0:
                return self._unterminated()
            self._pos = nl + 1
            self._scanned = 0
            end = nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl  # memcached takes bare \n
            if end - pos > self.max_line and (
                    end - pos > self.max_get_line or not buf.startswith(_GET_PREFIXES, pos)):
                return ClientError("line too long")
            event = self._command(bytes(buf[pos:end]))
            if event is not None:
                return event
            # None: a storage command line was accepted; its data block follows.

    def lend(self, read, table, max_keys: int, answer_max: int):
        """Let ``read`` read whole command lines from where the next command starts, as the
        data plane's take_gets reads plain gets: ``read(buf, pos, table, max_line, max_keys,
        answer_max) -> (end, result)``, ``max_line`` this parser's limit for a get line.
        When its result is not None the parser goes on from ``end``. The result, or None
        without asking ``read`` in the middle of a command (a data block or a refused line
        still to come). (The arguments are passed through, not as ``*args``: this is
        called twice per client read, and packing them cost 3% of a serial get.)"""
        if self._header is not None or self._swallow or self._skip_line:
            return None
        end, result = read(self._buf, self._pos, table, self.max_get_line, max_keys,
                           answer_max)
        if result is not None:
            self._pos = end
            self._scanned = 0
        return result

    def events(self) -> Iterator[Event]:
        """Every event the bytes received so far complete."""
        while (event := self.next_event()) is not None:
            yield event

    @property
    def mid_command(self) -> bool:
        """Whether a command has begun and not ended: part of a line, a data block still
        to come, or a refused one still being discarded."""
        return (len(self._buf) > self._pos or self._header is not None or self._swallow > 0
                or self._skip_line)

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished command: at most one line or one value, plus a read."""
        return len(self._buf) - self._pos

    def _stop(self) -> None:
        # Drop consumed bytes only when we stop for more data: one memmove per read,
        # not one per command.
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        return None

    def _discard(self) -> bool:
        """Drop a refused data block or the rest of a bad line; True once it is all gone."""
        buf = self._buf
        if self._swallow:
            n = min(self._swallow, len(buf) - self._pos)
            self._swallow -= n
            self._pos += n
            return not self._swallow
        nl = buf.find(b"\n", self._pos)
        if nl < 0:
            self._pos = len(buf)
            return False
        self._pos = nl + 1
        self._skip_line = False
        return True

    def _unterminated(self) -> ClientError | None:
        """A partial command line: wait for its end unless it is already too long."""
        buf, pos = self._buf, self._pos
        pending = len(buf) - pos
        limit = self.max_get_line if buf.startswith(_GET_PREFIXES, pos) else self.max_line
        # +1: a line exactly at the limit may have its \r here and its \n still to come.
        # The same lines are refused whether or not their newline has arrived yet.
        if pending > limit + 1:
            self._pos = len(buf)
            self._scanned = 0
            self._skip_line = True
            self._stop()
            return ClientError("line too long")
        self._scanned = pending
        return self._stop()

    def _data_block(self) -> Store | ClientError | None:
        header, buf, pos = self._header, self._buf, self._pos
        end = pos + header.nbytes
        if len(buf) < end + 2:
            return self._stop()
        self._header = None
        if buf[end] != 0x0D or buf[end + 1] != 0x0A:
            # The client's byte count is wrong. memcached parses on from two bytes past the
            # block, turning the tail into a second error; we drop it up to its newline.
            self._pos = end
            self._skip_line = True
            return ClientError("bad data chunk", header.noreply)
        self._pos = end + 2
        # One copy through a view: bytes(buf[pos:end]) copies twice, which for a 1 MiB
        # value measured 2.3 ms against 0.05 ms.
        value = bytes(memoryview(buf)[pos:end])
        if header.meta is not None:
            return replace(header.meta, value=value)
        return Store(header.command, header.key, header.flags, header.exptime, value,
                     header.noreply, header.cas_unique)

    def _command(self, line: bytes) -> Event | None:
        """The event for one command line, or None for an accepted storage header."""
        tokens = line.split(b" ")
        if b"" in tokens:  # runs of spaces, or an empty line
            tokens = [t for t in tokens if t]
            if not tokens:
                return Unknown(b"")
        handler = _HANDLERS.get(tokens[0])
        if handler is None:
            if tokens[-1].startswith(b"HTTP/") and _takes_http(tokens[0]):
                return Close()
            return Unknown(tokens[0])
        return handler(self, tokens)

    def _get(self, tokens: list[bytes]) -> Event:
        if len(tokens) < 2:
            return Unknown(tokens[0])
        keys = tokens[1:]
        if error := _key_error(keys):
            return ClientError(error)
        return Get(tuple(keys), tokens[0] == b"gets")

    def _store(self, tokens: list[bytes]) -> Event | None:
        """In memcached's order; a too long key or bad number leaves the data block
        unread (read as a command line, as memcached does), the rest swallow it."""
        command = tokens[0].decode()
        is_cas = command == "cas"
        args = 6 if is_cas else 5
        if len(tokens) != args and len(tokens) != args + 1:
            return Unknown(tokens[0])
        # memcached honours noreply in the last place even before it validates the rest.
        noreply = tokens[-1] == b"noreply"
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return ClientError(BAD_FORMAT, noreply)
        flags, exptime, nbytes = strtoul32(tokens[2]), strtol32(tokens[3]), strtol32(tokens[4])
        cas_unique = strtoull(tokens[5]) if is_cas else None
        if (flags is None or exptime is None or nbytes is None or (is_cas and cas_unique is None)
                or not 0 <= nbytes <= _INT32_MAX - 2):
            return ClientError(BAD_FORMAT, noreply)
        if has_illegal_byte(tokens[1]):
            self._swallow = nbytes + 2
            return ClientError("invalid key", noreply)
        if nbytes > self.item_size_max:
            self._swallow = nbytes + 2
            return ServerError("object too large for cache", noreply, tokens[1])
        self._header = _StoreHeader(command, tokens[1], flags, exptime, nbytes, noreply,
                                    cas_unique)
        return None

    def _delete(self, tokens: list[bytes]) -> Event:
        n = len(tokens)
        if not 2 <= n <= 4:
            return Unknown(tokens[0])
        noreply = n > 2 and tokens[-1] == b"noreply"
        if n > 2:
            # The legacy "delete <key> 0" hold time is accepted; anything else is not.
            zero = tokens[2] == b"0"
            if not ((zero or noreply) if n == 3 else (zero and noreply)):
                return ClientError(_DELETE_USAGE, noreply)
        if error := _key_error(tokens[1:2]):
            return ClientError(error, noreply)
        return Delete(tokens[1], noreply)

    def _touch(self, tokens: list[bytes]) -> Event:
        if len(tokens) not in (3, 4):
            return Unknown(tokens[0])
        noreply = tokens[-1] == b"noreply"
        if error := _key_error(tokens[1:2]):
            return ClientError(error, noreply)
        exptime = strtol32(tokens[2])
        if exptime is None:
            return ClientError("invalid exptime argument", noreply)
        return Touch(tokens[1], exptime, noreply)

    def _arith(self, tokens: list[bytes]) -> Event:
        n = len(tokens)
        if n not in (3, 4):
            return Unknown(tokens[0])
        noreply = tokens[-1] == b"noreply"  # a fourth word that is not is ignored
        if error := _key_error(tokens[1:2]):
            return ClientError(error, noreply)
        delta = strtoull(tokens[2])
        if delta is None:
            return ClientError("invalid numeric delta argument", noreply)
        return Arith(tokens[1], tokens[0] == b"incr", delta, noreply)

    def _gat(self, tokens: list[bytes]) -> Event:
        if len(tokens) < 2:
            return Unknown(tokens[0])
        exptime = strtol32(tokens[1])
        if exptime is None:
            return ClientError("invalid exptime argument")
        keys = tokens[2:]
        if keys and (error := _key_error(keys)):
            return ClientError(error)
        return GetAndTouch(exptime, tuple(keys), tokens[0] == b"gats")

    def _flush_all(self, tokens: list[bytes]) -> Event:
        n = len(tokens)
        noreply = tokens[-1] == b"noreply"
        if n > 3:
            return Unknown(tokens[0])
        if n - noreply == 1:
            return FlushAll(0, noreply)
        delay = strtol32(tokens[1])
        if delay is None:
            return ClientError("invalid exptime argument", noreply)
        return FlushAll(delay, noreply)

    def _admin(self, tokens: list[bytes]) -> Event:
        """verbosity and cache_memlimit take one number; shutdown takes none (or
        "graceful"). Each may end in noreply."""
        command = tokens[0].decode()
        noreply = tokens[-1] == b"noreply"
        if command == "shutdown":  # refused whatever its arguments, as memcached does
            return Admin(command, noreply)
        if not 2 <= len(tokens) <= 3:
            return Unknown(tokens[0])
        value = strtoul32(tokens[1])
        if value is None:
            if command == "cache_memlimit":
                return Unknown(tokens[0], noreply)
            return ClientError(BAD_FORMAT, noreply)
        return Admin(command, noreply, value)

    def _meta(self, tokens: list[bytes]) -> Event | None:
        """mg ms md ma mn me (router/memcache/meta.py); an ms waits for its data block."""
        try:
            event, nbytes = memcache_meta.parse(tokens)
        except LookupError:
            return Unknown(tokens[0])
        except MetaError as exc:
            if exc.skip is not None:
                self._swallow = exc.skip + 2
            return ClientError(str(exc))
        if nbytes is None:
            return event
        if nbytes > self.item_size_max:
            self._swallow = nbytes + 2
            return ServerError("object too large for cache", False, event.key)
        self._header = _StoreHeader("ms", event.key, 0, 0, nbytes, False, None, event)
        return None

    def _version(self, tokens: list[bytes]) -> Event:
        return Version()

    def _stats(self, tokens: list[bytes]) -> Event:
        return Stats(tuple(tokens[1:]))

    def _lru_crawler(self, tokens: list[bytes]) -> Event:
        # Only metadump (router/memcache/metadump.py): every key, as memcached lists them.
        if len(tokens) == 3 and tokens[1] == b"metadump":
            return Metadump(tokens[2])
        return Unknown(tokens[0])  # memcached's ERROR for what it does not take either


_HANDLERS = {
    b"get": MemcacheParser._get,
    b"gets": MemcacheParser._get,
    b"set": MemcacheParser._store,
    b"add": MemcacheParser._store,
    b"replace": MemcacheParser._store,
    b"append": MemcacheParser._store,
    b"prepend": MemcacheParser._store,
    b"cas": MemcacheParser._store,
    b"delete": MemcacheParser._delete,
    b"touch": MemcacheParser._touch,
    b"incr": MemcacheParser._arith,
    b"decr": MemcacheParser._arith,
    b"gat": MemcacheParser._gat,
    b"gats": MemcacheParser._gat,
    b"flush_all": MemcacheParser._flush_all,
    b"verbosity": MemcacheParser._admin,
    b"cache_memlimit": MemcacheParser._admin,
    b"shutdown": MemcacheParser._admin,
    b"mg": MemcacheParser._meta,
    b"ms": MemcacheParser._meta,
    b"md": MemcacheParser._meta,
    b"ma": MemcacheParser._meta,
    b"mn": MemcacheParser._meta,
    b"me": MemcacheParser._meta,
    b"version": MemcacheParser._version,
    b"stats": MemcacheParser._stats,
    b"quit": lambda parser, tokens: Quit(),
    b"lru_crawler": MemcacheParser._lru_crawler,
    b"watch": lambda parser, tokens: _watch(tokens),
    b"slabs": lambda parser, tokens: _slabs(tokens),
}


def _watch(tokens: list[bytes]) -> Event:
    names = [t.decode("latin-1") for t in tokens[1:] if t != b"noreply"]
    if any(name not in WATCH_FLAGS for name in names):
        return Unknown(tokens[0])  # memcached's ERROR for a flag it does not know
    return Watch(frozenset(names or ("fetchers",)))


def _slabs(tokens: list[bytes]) -> Event:
    """slabs reassign SRC DST and slabs automove LEVEL|ratio R, read as memcached reads
    them (their Admin names: slabs_reassign, slabs_automove); the router has no slabs."""
    n = len(tokens)
    if n == 4 and tokens[1] == b"reassign":
        return Admin("slabs_reassign", False)
    if n < 3 or tokens[1] != b"automove":
        return Unknown(tokens[0])
    noreply = tokens[-1] == b"noreply"
    if tokens[2] == b"ratio":
        ratio = tokens[3] if n > 3 else b""
        try:
            float(ratio)
        except ValueError:
            return Unknown(tokens[0], noreply)
        return Admin("slabs_automove", noreply)
    level = strtoul32(tokens[2])
    if level is None:
        return ClientError(BAD_FORMAT, noreply)
    return Admin("slabs_automove", noreply, level) if level <= 2 else Unknown(tokens[0], noreply)


def _key_error(keys: list[bytes]) -> str | None:
    """What is wrong with these keys, if anything (checked together: C loops, not Python).
    Too long is memcached's own refusal; a control byte is the router's (README)."""
    if max(map(len, keys)) > KEY_MAX_LENGTH:
        return BAD_FORMAT
    if has_illegal_byte(b"".join(keys)):
        return "invalid key"
    return None


# The commands memcached 1.6.18 dispatches on their first letter (proto_text.c), and the
# others it knows: a line that names none of them and ends in HTTP/... closes the
# connection there (Close); any other unknown line is ERROR.
_LETTERS = frozenset(b"gsacidt")
_KNOWN = frozenset((b"replace", b"prepend", b"bget", b"flush_all", b"version", b"quit",
                    b"lru_crawler", b"watch", b"verbosity", b"lru", b"misbehave",
                    b"extstore", b"refresh_certs", b"debugtime"))


def _takes_http(command: bytes) -> bool:
    return (len(command) >= 2 and command[0] not in _LETTERS and command not in _KNOWN
            and not (command[0] == 0x6D and len(command) == 2))  # m?: a meta command


# Answers. Each is whole bytes, ready for one transport.write per client turn.
END = b"END\r\n"
STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
ERROR = b"ERROR\r\n"


def value_line(key: bytes, flags: int, value: bytes, cas: int | None = None) -> bytes:
    """One hit of a get/gets answer: the VALUE line and its data block."""
    if cas is None:
        return b"VALUE %b %d %d\r\n%b\r\n" % (key, flags, len(value), value)
    return b"VALUE %b %d %d %d\r\n%b\r\n" % (key, flags, len(value), cas, value)


def _one_line(message: str) -> bytes:
    # A message with a line break in it (an exception's text) would desynchronise the client.
    return b" ".join(message.encode("utf-8", "replace").splitlines())


def client_error(message: str) -> bytes:
    return b"CLIENT_ERROR %b\r\n" % _one_line(message)


def server_error(message: str) -> bytes:
    return b"SERVER_ERROR %b\r\n" % _one_line(message)


def version_line(version: str) -> bytes:
    return b"VERSION %b\r\n" % _one_line(version)


def stat_lines(pairs: Iterable[tuple[str, object]]) -> bytes:
    """A stats answer: one ``STAT <name> <value>`` line per pair (values via str()), then END."""
    return "".join(f"STAT {name} {value}\r\n" for name, value in pairs).encode() + END


EXPIRED: Literal["expired"] = "expired"


def exptime_to_ttl(exptime: int, now: float) -> float | None | Literal["expired"]:
    """Seconds to live for a memcached exptime: None never expires, EXPIRED already has.

    0 never expires; 1..30 days are relative seconds; larger values are absolute unix
    times, compared with ``now``; negative values and absolute times not in the future
    are already expired.
    """
    if exptime == 0:
        return None
    if exptime < 0:
        return EXPIRED
    if exptime <= REALTIME_MAXDELTA:
        return float(exptime)
    ttl = exptime - now
    return float(ttl) if ttl > 0 else EXPIRED
