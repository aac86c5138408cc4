"""The node wire's hot operations in pure Python: the twin of the compiled shared._codec.

shared/codec.py picks the compiled module when it is built and this one otherwise (or when
RINGCACHE_PURE_PYTHON is set); tests/shared/test_codec.py runs every test against both. Requests
are encoded by hand (shared/wire.py: cheaper than a message object per request), the rest
through the protobuf library, whose parser is compiled.
"""

from __future__ import annotations

from shared import ringcache_pb2 as pb
from shared.framing import decode_payload
from shared.wire import REQUESTS, RESPONSES, encode_request, len_field, request_id, varint

_VALUES = 0x42  # Response.values (field 8), length-delimited

COMPILED = False


def append_request(buf: bytearray, rid: int, op: int, group: str = "", key: bytes = b"",
                   value: bytes = b"", ttl: float = 0.0, flags: int = 0, negative: bool = False,
                   keys=None, groups: bytes = b"", cas: int = 0, delta: int = 0,
                   lease: int = 0, lease_ttl: float = 0.0, meta: int = 0) -> None:
    """Add one Request to the Frame being built in ``buf`` (Frame.requests element)."""
    message = encode_request(rid, op, group.encode(), key, value, ttl, flags, negative, keys,
                             groups, cas, delta, lease, lease_ttl, meta)
    buf += len_field(REQUESTS, message)


def append_prepared(buf: bytearray, rid: int, body: bytes) -> None:
    """Add a Request whose fields after the id are already encoded (a GetRun's GET_MANY)."""
    buf += len_field(REQUESTS, request_id(rid) + body)


def append_response(buf: bytearray, rid: int, status: int = 0, value: bytes = b"",
                    error: str = "", flags: int = 0, stats: bytes = b"", negative: bool = False,
                    values=None, cas: int = 0, lease: int = 0, stale: int = 0,
                    meta: int = 0) -> None:
    """Add one Response to the Frame being built in ``buf`` (Frame.responses element)."""
    response = pb.Response(id=rid, status=status, value=value, error=error, flags=flags,
                           negative=negative, values=values, cas=cas, lease=lease,
                           stale=stale, meta=meta)
    if stats:
        response.stats.ParseFromString(stats)
    message = response.SerializeToString()
    buf += len_field(RESPONSES, message)


def append_get_many(buf: bytearray, rid: int, get, keys, room: int, pieces: list | None = None,
                    large: int = 0):
    """Answer a GET_MANY from ``get(key) -> entry | None`` into ``buf``: (hits, bytes
    added), or None, adding nothing, when the entries would take more than ``room``.

    With a list ``pieces`` and ``large`` > 0, an entry of at least ``large`` bytes is left
    out of ``buf`` (its field's tag and length are written) and ``(offset in buf, entry)``
    appended to ``pieces`` instead: the answer is ``buf`` with each such entry put back at
    its offset. Bytes added count them too."""
    values = [get(key) or b"" for key in keys]
    size = sum(map(len, values))
    if size > room:
        return None
    start = len(buf)
    hits = len(values) - values.count(b"")
    if pieces is None or large <= 0 or not any(len(v) >= large for v in values):
        append_response(buf, rid, values=values)
        return hits, len(buf) - start
    # What append_response writes for these fields (the id, then each entry as field 8),
    # by hand so that the large entries can be left out.
    head = request_id(rid) if rid else b""
    size = len(head) + sum(1 + len(varint(len(v))) + len(v) for v in values)
    buf += bytes((RESPONSES,)) + varint(size) + head
    apart = 0
    for v in values:
        if len(v) < large:
            buf += len_field(_VALUES, v)
            continue
        buf += bytes((_VALUES,)) + varint(len(v))
        pieces.append((len(buf), v))
        apart += len(v)
    return hits, len(buf) - start + apart


def decode_requests(payload: bytes) -> list:
    return list(decode_payload(payload).requests)


def decode_responses(payload: bytes) -> list:
    return list(decode_payload(payload).responses)


__all__ = ["COMPILED", "REQUESTS", "RESPONSES", "append_get_many", "append_prepared",
           "append_request", "append_response", "decode_requests", "decode_responses"]
