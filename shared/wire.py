"""The router <-> node messages encoded by hand, byte for byte as protobuf does.

`shared/ringcache.proto` stays the schema, and what this writes is what the library writes
for the same message (tests/shared/test_wire.py checks it). Doing it by hand skips a message object
per request on the hot path: a Request to a node is a few concatenations. Encoding follows
the library's choices so that bytes are identical: fields in number order, proto3 defaults
(0, empty, false) left out, every repeated element written, even empty ones.

The compiled shared._codec does the same in C, and decodes too (shared/codec.py).
"""

from __future__ import annotations

import struct

from shared.framing import WireError  # noqa: F401  (what the codecs raise, C one included)

_DOUBLE = struct.Struct("<d")


class Tag:
    """A Request's fields as protobuf tags (field number << 3 | wire type), numbered as in
    shared/ringcache.proto; tests/shared/test_wire.py holds each to the schema."""

    ID, OP, GROUP, KEY, VALUE, TTL, FLAGS = 0x08, 0x10, 0x1A, 0x22, 0x2A, 0x31, 0x38
    GROUPS, NEGATIVE, KEYS, CAS, DELTA = 0x42, 0x48, 0x52, 0x58, 0x60
    LEASE, LEASE_TTL, META = 0x68, 0x71, 0x78


# The tags of Frame.requests and Frame.responses elements.
REQUESTS, RESPONSES = 0x0A, 0x12

_ID, _OP, _TTL, _FLAGS = (bytes((t,)) for t in (Tag.ID, Tag.OP, Tag.TTL, Tag.FLAGS))
_NEGATIVE, _CAS, _DELTA = bytes((Tag.NEGATIVE, 1)), bytes((Tag.CAS,)), bytes((Tag.DELTA,))
_LEASE, _LEASE_TTL, _META = bytes((Tag.LEASE,)), bytes((Tag.LEASE_TTL,)), bytes((Tag.META,))


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def len_field(tag: int, data: bytes) -> bytes:
    """A length-delimited field: its tag, the length, the bytes (a key, a CONFIGURE's
    GroupConfig, a Frame's Request or Response: tags REQUESTS and RESPONSES)."""
    return bytes((tag,)) + varint(len(data)) + data


# -- encoding --------------------------------------------------------------------------


def encode_request(rid: int, op: int, group: bytes = b"", key: bytes = b"", value: bytes = b"",
                   ttl: float = 0.0, flags: int = 0, negative: bool = False, keys=None,
                   groups: bytes = b"", cas: int = 0, delta: int = 0, lease: int = 0,
                   lease_ttl: float = 0.0, meta: int = 0) -> bytes:
    """A Request message. ``groups`` is the GroupConfig field already encoded (CONFIGURE
    only: see encode_groups); ``group`` is the group name as UTF-8."""
    parts = [_ID + varint(rid)] if rid else []
    if op:
        parts.append(_OP + varint(op))
    if group:
        parts.append(len_field(Tag.GROUP, group))
    if key:
        parts.append(len_field(Tag.KEY, key))
    if value:
        parts.append(len_field(Tag.VALUE, value))
    if ttl:
        parts.append(_TTL + _DOUBLE.pack(ttl))
    if flags:
        parts.append(_FLAGS + varint(flags))
    if groups:
        parts.append(groups)
    if negative:
        parts.append(_NEGATIVE)
    if keys:
        parts.extend(len_field(Tag.KEYS, k) for k in keys)
    if cas:
        parts.append(_CAS + varint(cas))
    if delta:
        parts.append(_DELTA + varint(delta))
    if lease:
        parts.append(_LEASE + varint(lease))
    if lease_ttl:
        parts.append(_LEASE_TTL + _DOUBLE.pack(lease_ttl))
    if meta:
        parts.append(_META + varint(meta))
    return b"".join(parts)


def encode_groups(configs) -> bytes:
    """The repeated GroupConfig field (8) of a CONFIGURE Request, from pb.GroupConfig messages."""
    return b"".join(len_field(Tag.GROUPS, c.SerializeToString()) for c in configs)


def request_id(rid: int) -> bytes:
    """A Request's id field, which leads a prepared body (shared/codec.py append_prepared)."""
    return _ID + varint(rid)
