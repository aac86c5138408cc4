"""The entry a storage node keeps per key: value, memcached flags, CAS unique or negativity
in one string.

Cores store plain bytes, so what memcached keeps beside a value rides inside the stored
string, behind one kind byte:

    0  value                      no flags, no CAS unique (written by older nodes)
    1  flags(4) value             flags, no CAS unique (older nodes)
    2                             a negative entry: the source had no value (negative_ttl)
    3  cas(8) value               a CAS unique, no flags
    4  cas(8) flags(4) value      both
    5  bits(1) entry              one of the above with memcached's item bits (STALE: X,
                                  marked by md I or ms I; WIN_SENT: Z, a W handed out)

Numbers are big-endian. A node stamps every store with a fresh CAS unique (kinds 3 and 4);
kinds 0 and 1 are still read, with CAS unique 0. The node stores and (for GET_MANY) answers
entries as they are and the router unpacks them, so this format is part of the wire
contract.
"""

from __future__ import annotations

import struct

NO_FLAGS = b"\x00"
NEGATIVE = b"\x02"
WITH_BITS = 5
# memcached's item bits an entry of kind 5 carries.
STALE, WIN_SENT = 1, 2
_WITH_FLAGS = struct.Struct(">BI")
_FLAGS = struct.Struct(">I")
_CAS = struct.Struct(">BQ")
_CAS_FLAGS = struct.Struct(">BQI")


def pack(value: bytes, flags: int = 0, cas: int = 0) -> bytes:
    if cas:
        return _CAS_FLAGS.pack(4, cas, flags) + value if flags else _CAS.pack(3, cas) + value
    return _WITH_FLAGS.pack(1, flags) + value if flags else NO_FLAGS + value


def unpack(entry: bytes) -> tuple[bytes, int]:
    """(value, flags) of a positive entry."""
    value, flags, _ = unpack_cas(entry)
    return value, flags


def unpack_cas(entry: bytes) -> tuple[bytes, int, int]:
    """(value, flags, CAS unique) of a positive entry; CAS unique 0 when it has none."""
    kind = entry[0]
    if kind == WITH_BITS and len(entry) > 2 and entry[2] != WITH_BITS:
        entry = entry[2:]
        kind = entry[0]
    if kind == 0:
        return entry[1:], 0, 0
    if kind == 1:
        return entry[5:], _FLAGS.unpack_from(entry, 1)[0], 0
    if kind == 3:
        return entry[9:], 0, _CAS.unpack_from(entry)[1]
    if kind == 4:
        _, cas, flags = _CAS_FLAGS.unpack_from(entry)
        return entry[13:], flags, cas
    raise ValueError(f"not a positive entry (kind {kind})")


# Where the value starts in a positive entry, by kind (kind 2 is the negative entry).
_VALUE_AT = {0: 1, 1: 5, 3: 9, 4: 13}


def positive(entry) -> bool:
    """Whether ``entry`` (as a node answered it: b"" for a miss) holds a value: one of the
    value kinds, and long enough for its header."""
    if entry and entry[0] == WITH_BITS:
        entry = entry[2:]
    return bool(entry) and len(entry) >= _VALUE_AT.get(entry[0], len(entry) + 1)


def bits(entry: bytes) -> int:
    """memcached's item bits of a stored entry (0 for one without)."""
    return entry[1] if entry[0] == WITH_BITS and len(entry) > 1 else 0


def with_bits(entry: bytes, item_bits: int) -> bytes:
    """``entry`` (any positive kind) carrying ``item_bits`` instead of the bits it had."""
    if entry[0] == WITH_BITS:
        entry = entry[2:]
    return bytes((WITH_BITS, item_bits)) + entry if item_bits else entry


def present(entry: bytes | None) -> bool:
    """Whether ``entry`` (None for no entry) holds a value, not an absence."""
    return entry is not None and entry != NEGATIVE
