"""Binary memcached request packets built by hand, for the parser and protocol tests."""

from __future__ import annotations

import struct


def packet(opcode, key=b"", extras=b"", value=b"", opaque=0xDEADBEEF, cas=0, magic=0x80,
           extlen=None, keylen=None, bodylen=None):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", magic, opcode, len(key) if keylen is None else keylen,
                       len(extras) if extlen is None else extlen, 0, 0,
                       len(body) if bodylen is None else bodylen, opaque, cas) + body


STORE = struct.pack(">II", 7, 60)


ARITH = struct.pack(">QQI", 5, 10, 0)
