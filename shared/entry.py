"""The entry a storage node keeps per key: value, memcached flags and negativity in one string.

Cores store plain bytes, so the flags ride inside the stored string: one byte 0 for "no
flags" (the common case costs one byte), or 1 followed by the 4-byte big-endian flags,
then the value. A lone byte 2 is a negative entry: the source had no value (the
router's negative_ttl). The node stores and (for GET_MANY) answers entries as they are;
the router unpacks them, so this format is part of the wire contract.
"""

from __future__ import annotations

import struct

NO_FLAGS = b"\x00"
NEGATIVE = b"\x02"
_WITH_FLAGS = struct.Struct(">BI")
_FLAGS = struct.Struct(">I")


def pack(value: bytes, flags: int = 0) -> bytes:
    return _WITH_FLAGS.pack(1, flags) + value if flags else NO_FLAGS + value


def unpack(entry: bytes) -> tuple[bytes, int]:
    """(value, flags) of a positive entry."""
    if entry[0] == 0:
        return entry[1:], 0
    return entry[_WITH_FLAGS.size:], _FLAGS.unpack_from(entry, 1)[0]


def present(entry: bytes | None) -> bool:
    """Whether ``entry`` (None for no entry) holds a value, not an absence."""
    return entry is not None and entry != NEGATIVE
