"""The router <-> node messages encoded and decoded by hand, byte for byte as protobuf does.

`shared/ringcache.proto` stays the schema: whatever the protobuf library writes, this reads,
and what this writes the library reads back to the same message (tests/test_wire.py checks
both ways). Doing it by hand skips a message object per request and per answer on the hot
path: a Request to a node is a few concatenations, and an answer is read into a plain slotted
object, or for GET_MANY, straight into the values a client is sent.

Encoding follows the library's choices so that bytes are identical: fields in number order,
proto3 defaults (0, empty, false) left out, every repeated element written, even empty ones.
Decoding takes fields in any order and skips unknown ones, as protobuf does; anything that
is not a well-formed message raises WireError.
"""

from __future__ import annotations

import struct

from shared import ringcache_pb2 as pb


class WireError(ValueError):
    """Bytes that are not a well-formed message: the peer's fault."""


_DOUBLE = struct.Struct("<d")

# Wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + varint(len(data)) + data


# -- encoding --------------------------------------------------------------------------


def encode_request(rid: int, op: int, group: bytes = b"", key: bytes = b"", value: bytes = b"",
                   ttl: float = 0.0, flags: int = 0, negative: bool = False, keys=None,
                   groups: bytes = b"", cas: int = 0, delta: int = 0) -> bytes:
    """A Request message. ``groups`` is the GroupConfig field already encoded (CONFIGURE
    only: see encode_groups); ``group`` is the group name as UTF-8."""
    parts = [b"\x08" + varint(rid)] if rid else []
    if op:
        parts.append(b"\x10" + varint(op))
    if group:
        parts.append(b"\x1a" + varint(len(group)) + group)
    if key:
        parts.append(b"\x22" + varint(len(key)) + key)
    if value:
        parts.append(b"\x2a" + varint(len(value)) + value)
    if ttl:
        parts.append(b"\x31" + _DOUBLE.pack(ttl))
    if flags:
        parts.append(b"\x38" + varint(flags))
    if groups:
        parts.append(groups)
    if negative:
        parts.append(b"\x48\x01")
    if keys:
        parts.extend(b"\x52" + varint(len(k)) + k for k in keys)
    if cas:
        parts.append(b"\x58" + varint(cas))
    if delta:
        parts.append(b"\x60" + varint(delta))
    return b"".join(parts)


def encode_groups(configs) -> bytes:
    """The repeated GroupConfig field (8) of a CONFIGURE Request, from pb.GroupConfig messages."""
    return b"".join(_len_field(0x42, c.SerializeToString()) for c in configs)


def encode_response(rid: int, status: int = 0, value: bytes = b"", error: str = "",
                    flags: int = 0, stats: bytes = b"", negative: bool = False,
                    values=None, cas: int = 0) -> bytes:
    """A Response message; ``stats`` is a NodeStats message already serialized."""
    parts = [b"\x08" + varint(rid)] if rid else []
    if status:
        parts.append(b"\x10" + varint(status))
    if value:
        parts.append(b"\x1a" + varint(len(value)) + value)
    if error:
        parts.append(_len_field(0x22, error.encode()))
    if flags:
        parts.append(b"\x28" + varint(flags))
    if stats:
        parts.append(_len_field(0x32, stats))
    if negative:
        parts.append(b"\x38\x01")
    if values:
        parts.extend(b"\x42" + varint(len(v)) + v for v in values)
    if cas:
        parts.append(b"\x48" + varint(cas))
    return b"".join(parts)


def frame_field(tag: int, message: bytes) -> bytes:
    """One element of Frame.requests (tag 0x0a) or Frame.responses (0x12)."""
    return bytes((tag,)) + varint(len(message)) + message


REQUESTS, RESPONSES = 0x0A, 0x12


# -- decoding --------------------------------------------------------------------------


def _read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise WireError("varint too long")


def _fields(buf, pos: int, end: int):
    """(field number, wire type, value) of each field of the message in buf[pos:end]:
    an int for varints and fixed fields, a (start, stop) pair for length-delimited ones."""
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        number, kind = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        if kind == _VARINT:
            value, pos = _read_varint(buf, pos, end)
        elif kind == _LEN:
            length, pos = _read_varint(buf, pos, end)
            if length > end - pos:
                raise WireError("length past the end of the message")
            value = (pos, pos + length)
            pos += length
        elif kind == _I64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif kind == _I32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise WireError(f"wire type {kind} is not supported")
        yield number, kind, value


def _u64(value: int) -> int:
    return value & 0xFFFFFFFFFFFFFFFF


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def _enum(value: int) -> int:
    # An enum is an int32 on the wire: values past it wrap, as the library reads them.
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class Request:
    """A decoded Request: the same attribute names as pb.Request."""

    __slots__ = ("id", "op", "group", "key", "value", "ttl", "flags", "negative", "keys",
                 "cas", "delta", "_groups")

    def __init__(self):
        self.id = self.op = self.flags = self.cas = self.delta = 0
        self.group = ""
        self.key = self.value = b""
        self.ttl = 0.0
        self.negative = False
        self.keys = []
        self._groups = []

    @property
    def groups(self) -> list:
        """CONFIGURE's GroupConfig messages (parsed by the library: rare, and nested)."""
        return [pb.GroupConfig.FromString(raw) for raw in self._groups]


class Response:
    """A decoded Response: the same attribute names as pb.Response."""

    __slots__ = ("id", "status", "value", "error", "flags", "negative", "values", "cas",
                 "_stats")

    def __init__(self):
        self.id = self.status = self.flags = self.cas = 0
        self.value = b""
        self.error = ""
        self.negative = False
        self.values = []
        self._stats = b""

    @property
    def stats(self):
        return pb.NodeStats.FromString(self._stats)


def _text(buf, start: int, stop: int) -> str:
    try:
        return bytes(buf[start:stop]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("a string field is not UTF-8") from None


def _check(kind: int, expected: int, what: str) -> None:
    if kind != expected:
        raise WireError(f"{what} has wire type {kind}")


def decode_request(buf, start: int, end: int) -> Request:
    request = Request()
    for number, kind, value in _fields(buf, start, end):
        if number == 1:
            _check(kind, _VARINT, "Request.id")
            request.id = _u64(value)
        elif number == 2:
            _check(kind, _VARINT, "Request.op")
            request.op = _enum(value)
        elif number == 3:
            _check(kind, _LEN, "Request.group")
            request.group = _text(buf, *value)
        elif number == 4:
            _check(kind, _LEN, "Request.key")
            request.key = bytes(buf[value[0]:value[1]])
        elif number == 5:
            _check(kind, _LEN, "Request.value")
            request.value = bytes(buf[value[0]:value[1]])
        elif number == 6:
            _check(kind, _I64, "Request.ttl")
            request.ttl = _DOUBLE.unpack(value.to_bytes(8, "little"))[0]
        elif number == 7:
            _check(kind, _VARINT, "Request.flags")
            request.flags = _u32(value)
        elif number == 8:
            _check(kind, _LEN, "Request.groups")
            request._groups.append(bytes(buf[value[0]:value[1]]))
        elif number == 9:
            _check(kind, _VARINT, "Request.negative")
            request.negative = bool(value)
        elif number == 10:
            _check(kind, _LEN, "Request.keys")
            request.keys.append(bytes(buf[value[0]:value[1]]))
        elif number == 11:
            _check(kind, _VARINT, "Request.cas")
            request.cas = _u64(value)
        elif number == 12:
            _check(kind, _VARINT, "Request.delta")
            request.delta = _u64(value)
    return request


def decode_response(buf, start: int, end: int) -> Response:
    response = Response()
    for number, kind, value in _fields(buf, start, end):
        if number == 1:
            _check(kind, _VARINT, "Response.id")
            response.id = _u64(value)
        elif number == 2:
            _check(kind, _VARINT, "Response.status")
            response.status = _enum(value)
        elif number == 3:
            _check(kind, _LEN, "Response.value")
            response.value = bytes(buf[value[0]:value[1]])
        elif number == 4:
            _check(kind, _LEN, "Response.error")
            response.error = _text(buf, *value)
        elif number == 5:
            _check(kind, _VARINT, "Response.flags")
            response.flags = _u32(value)
        elif number == 6:
            _check(kind, _LEN, "Response.stats")
            response._stats = bytes(buf[value[0]:value[1]])
        elif number == 7:
            _check(kind, _VARINT, "Response.negative")
            response.negative = bool(value)
        elif number == 8:
            _check(kind, _LEN, "Response.values")
            response.values.append(bytes(buf[value[0]:value[1]]))
        elif number == 9:
            _check(kind, _VARINT, "Response.cas")
            response.cas = _u64(value)
    return response


def decode_frame(payload, field: int, decode) -> list:
    """Every message of Frame field ``field`` (1: requests, 2: responses) in ``payload``."""
    out = []
    for number, kind, value in _fields(payload, 0, len(payload)):
        if number == field:
            _check(kind, _LEN, "Frame field")
            out.append(decode(payload, *value))
        elif number in (1, 2) and kind != _LEN:
            raise WireError("Frame field with the wrong wire type")
    return out


def decode_requests(payload) -> list[Request]:
    return decode_frame(payload, 1, decode_request)


def decode_responses(payload) -> list[Response]:
    return decode_frame(payload, 2, decode_response)
