"""Sans-I/O parser and answer encoder for memcached's binary protocol (magic 0x80).

Feed bytes with ``BinaryParser.receive_data`` and take requests from ``next_event`` until it
returns None. A packet is a 24-byte header (magic, opcode, key length, extras length, data
type, vbucket, body length, opaque, CAS), then extras, key and value. A request whose
lengths do not fit its opcode is an ``Invalid`` event (answered "Invalid arguments", the
connection goes on, as in memcached); one with a body over the limit is ``Oversized`` and
its body is skipped as it arrives; a header whose magic is not 0x80 means the stream is
lost: ``next_event`` raises ProtocolError and the connection must close.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from router.memcache.keys import KEY_MAX_LENGTH

HEADER = struct.Struct(">BBHBBHIIQ")
HEADER_SIZE = HEADER.size  # 24
REQUEST, RESPONSE = 0x80, 0x81

# Opcodes.
GET, SET, ADD, REPLACE, DELETE, INCR, DECR, QUIT, FLUSH, GETQ, NOOP, VERSION = range(0x0C)
GETK, GETKQ, APPEND, PREPEND, STAT, SETQ, ADDQ, REPLACEQ, DELETEQ, INCRQ, DECRQ = range(0x0C, 0x17)
QUITQ, FLUSHQ, APPENDQ, PREPENDQ, VERBOSITY, TOUCH, GAT, GATQ = range(0x17, 0x1F)
GATK, GATKQ = 0x23, 0x24

# A quiet opcode and the loud one it is a variant of: a quiet request is not answered
# when it succeeds (getq/getkq/gatq/gatkq: when it misses).
QUIET = {GETQ: GET, GETKQ: GETK, SETQ: SET, ADDQ: ADD, REPLACEQ: REPLACE, DELETEQ: DELETE,
         INCRQ: INCR, DECRQ: DECR, QUITQ: QUIT, FLUSHQ: FLUSH, APPENDQ: APPEND,
         PREPENDQ: PREPEND, GATQ: GAT, GATKQ: GATK}

# Status codes and memcached's words for them (the body of an error answer).
SUCCESS, KEY_ENOENT, KEY_EEXISTS, E2BIG, EINVAL, NOT_STORED, DELTA_BADVAL = range(7)
UNKNOWN_COMMAND, ENOMEM, NOT_SUPPORTED, EINTERNAL, EBUSY, ETMPFAIL = range(0x81, 0x87)
MESSAGES = {
    KEY_ENOENT: b"Not found",
    KEY_EEXISTS: b"Data exists for key.",
    E2BIG: b"Too large.",
    EINVAL: b"Invalid arguments",
    NOT_STORED: b"Not stored.",
    DELTA_BADVAL: b"Non-numeric server-side value for incr or decr",
    UNKNOWN_COMMAND: b"Unknown command",
    ENOMEM: b"Out of memory",
}

# (extras length, key: "required", "none" or "optional", value allowed) per loud opcode.
_SHAPES = {
    GET: ((0,), "required", False), GETK: ((0,), "required", False),
    SET: ((8,), "required", True), ADD: ((8,), "required", True),
    REPLACE: ((8,), "required", True), APPEND: ((0,), "required", True),
    PREPEND: ((0,), "required", True), DELETE: ((0,), "required", False),
    INCR: ((20,), "required", False), DECR: ((20,), "required", False),
    QUIT: ((0,), "none", False), NOOP: ((0,), "none", False), VERSION: ((0,), "none", False),
    FLUSH: ((0, 4), "none", False), STAT: ((0,), "optional", False),
    VERBOSITY: ((4,), "none", False), TOUCH: ((4,), "required", False),
    GAT: ((4,), "required", False), GATK: ((4,), "required", False),
}


@dataclass(frozen=True, slots=True)
class Request:
    """One well-formed request. ``opcode`` is as sent (quiet or not)."""

    opcode: int
    key: bytes
    extras: bytes
    value: bytes
    opaque: int
    cas: int

    @property
    def command(self) -> int:
        """The loud opcode this request is (GETQ -> GET)."""
        return QUIET.get(self.opcode, self.opcode)

    @property
    def quiet(self) -> bool:
        return self.opcode in QUIET


@dataclass(frozen=True, slots=True)
class Invalid:
    """A request the router does not run: ``status`` is UNKNOWN_COMMAND (an opcode it
    does not know), EINVAL (lengths that do not fit the opcode) or E2BIG (a body over
    the limit, skipped)."""

    opcode: int
    opaque: int
    status: int


class ProtocolError(ValueError):
    """Bytes that are not a binary request: the connection cannot go on."""


class BinaryParser:
    """Accumulates one connection's bytes and yields its requests."""

    __slots__ = ("_buf", "_pos", "_skip", "max_body")

    def __init__(self, max_body: int):
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0  # bytes of an oversized body still to discard
        self.max_body = max_body

    def receive_data(self, data: bytes) -> None:
        if self._skip and self._pos == len(self._buf):
            n = min(self._skip, len(data))
            self._skip -= n
            data = memoryview(data)[n:]
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def mid_command(self) -> bool:
        return self.buffered > 0 or self._skip > 0

    def next_event(self) -> Request | Invalid | None:
        buf = self._buf
        if self._skip:
            n = min(self._skip, len(buf) - self._pos)
            self._skip -= n
            self._pos += n
            if self._skip:
                return self._stop()
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return self._stop()
        magic, opcode, keylen, extlen, _, _, bodylen, opaque, cas = HEADER.unpack_from(buf, pos)
        if magic != REQUEST:
            raise ProtocolError(f"bad magic 0x{magic:02x}: not a binary request")
        if bodylen > self.max_body:
            self._pos = pos + HEADER_SIZE
            self._skip = bodylen
            return Invalid(opcode, opaque, E2BIG)
        end = pos + HEADER_SIZE + bodylen
        if len(buf) < end:
            return self._stop()
        self._pos = end
        start = pos + HEADER_SIZE
        shape = _SHAPES.get(QUIET.get(opcode, opcode))
        if shape is None:
            return Invalid(opcode, opaque, UNKNOWN_COMMAND)
        extras_lengths, key_rule, takes_value = shape
        value_len = bodylen - extlen - keylen
        if (extlen not in extras_lengths or value_len < 0 or (value_len and not takes_value)
                or (key_rule == "required" and not keylen) or (key_rule == "none" and keylen)
                or keylen > KEY_MAX_LENGTH):
            return Invalid(opcode, opaque, EINVAL)
        view = memoryview(buf)
        extras = bytes(view[start:start + extlen])
        key = bytes(view[start + extlen:start + extlen + keylen])
        value = bytes(view[start + extlen + keylen:end])
        return Request(opcode, key, extras, value, opaque, cas)

    def _stop(self) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        return None


# -- answers ------------------------------------------------------------------------------


def response(opcode: int, opaque: int, status: int = SUCCESS, key: bytes = b"",
             extras: bytes = b"", value: bytes = b"", cas: int = 0) -> bytes:
    body = len(extras) + len(key) + len(value)
    return HEADER.pack(RESPONSE, opcode, len(key), len(extras), 0, status, body, opaque,
                       cas) + extras + key + value


def error(opcode: int, opaque: int, status: int, message: bytes | None = None) -> bytes:
    """An error answer: no extras, no key, no CAS, memcached's words as the body."""
    return response(opcode, opaque, status, value=MESSAGES.get(status, b"") if message is None
                    else message)


FLAGS = struct.Struct(">I")
STORE_EXTRAS = struct.Struct(">II")  # flags, exptime
ARITH_EXTRAS = struct.Struct(">QQI")  # delta, initial, exptime
COUNTER = struct.Struct(">Q")
# An incr/decr exptime that means "do not create a missing counter".
NO_CREATE = 0xFFFFFFFF
