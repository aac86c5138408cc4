"""The router <-> node messages encoded by hand, byte for byte as protobuf does.

`shared/ringcache.proto` stays the schema, and what this writes is what the library writes
for the same message (tests/test_wire.py checks it). Doing it by hand skips a message object
per request on the hot path: a Request to a node is a few concatenations. Encoding follows
the library's choices so that bytes are identical: fields in number order, proto3 defaults
(0, empty, false) left out, every repeated element written, even empty ones.

The compiled shared._codec does the same in C, and decodes too (shared/codec.py).
"""

from __future__ import annotations

import struct


class WireError(ValueError):
    """Bytes that are not a well-formed message: the peer's fault."""


_DOUBLE = struct.Struct("<d")


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
