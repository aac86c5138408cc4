"""memcached's read-modify-write ops, done atomically on the owning node: cas, append and
prepend, incr and decr. Each reads the stored entry and stores through GroupOps.store."""

from __future__ import annotations

from collections.abc import Callable

from shared import entry
from shared import ringcache_pb2 as pb
from storage_node.groups import Group
from storage_node.ops import GroupOps

_UINT64_MAX = (1 << 64) - 1


class ReadModifyWrite:
    def __init__(self, ops: GroupOps):
        self.ops = ops

    def table(self) -> dict[int, Callable]:
        return {
            pb.INCR: self.incr,
            pb.DECR: self.incr,
            pb.CAS: self.cas_store,
            pb.APPEND: self.concat,
            pb.PREPEND: self.concat,
        }

    def cas_store(self, group: Group, request, out: bytearray) -> pb.Response | None:
        stored = group.core.get(request.key)
        if not entry.present(stored):
            return pb.Response(id=request.id, status=pb.NOT_FOUND)
        if entry.unpack_cas(stored)[2] != request.cas:
            return pb.Response(id=request.id, status=pb.NOT_STORED)  # memcached's EXISTS
        return self.ops.store(group, request, out)

    def concat(self, group: Group, request, out: bytearray) -> pb.Response | None:
        """APPEND/PREPEND: the stored value grows; its flags and ttl stay (memcached
        ignores the request's). NOT_FOUND without an entry; a Request.cas other than 0
        must match, else NOT_STORED, as for CAS."""
        stored = group.core.get(request.key)
        if not entry.present(stored):
            return pb.Response(id=request.id, status=pb.NOT_FOUND)
        value, flags, cas = entry.unpack_cas(stored)
        if request.cas and request.cas != cas:
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        value = value + request.value if request.op == pb.APPEND else request.value + value
        return self.ops.store(group, request, out, value, flags, group.ttl_left(request.key))

    def incr(self, group: Group, request, out: bytearray) -> pb.Response | None:
        """INCR/DECR with memcached's rules: the value is a decimal unsigned 64-bit
        number; incr wraps, decr stops at 0. Answers the new value; NOT_FOUND for no
        entry (unless Request.value holds an initial value to create it with),
        NOT_STORED for a value that is not such a number."""
        stored = group.core.get(request.key)
        if not entry.present(stored):
            if not request.value:
                return pb.Response(id=request.id, status=pb.NOT_FOUND)
            # Created from the initial value the request carries (binary incr, meta ma
            # N): here, in one step, so no command the client sent later can overtake it.
            answer = self.ops.store(group, request)
            if answer.status == pb.OK:
                answer.value = request.value
            return answer
        value, flags, _ = entry.unpack_cas(stored)
        number = parse_counter(value)
        if number is None:
            return pb.Response(id=request.id, status=pb.NOT_STORED,
                               error="cannot increment or decrement non-numeric value")
        if request.op == pb.INCR:
            number = (number + request.delta) & _UINT64_MAX
        else:
            number = max(0, number - request.delta)
        digits = b"%d" % number
        # memcached rewrites a shorter number in place, padded with spaces to the old
        # length (clients are told to expect it); its answer is the bare number.
        stored = digits.ljust(len(value)) if len(digits) < len(value) else digits
        answer = self.ops.store(group, request, None, stored, flags, group.ttl_left(request.key))
        if answer.status == pb.OK:
            answer.value = digits
        return answer


def parse_counter(value: bytes) -> int | None:
    """A stored value as incr/decr read it (memcached's strtoull): optional blanks and a
    plus sign, digits, then the end or a blank; None if it is not that or exceeds 64 bits."""
    digits = value.lstrip(b" \t\n\r\v\f")
    if digits[:1] == b"+":
        digits = digits[1:]
    end = len(digits)
    for i, byte in enumerate(digits):
        if not 0x30 <= byte <= 0x39:
            end = i
            break
    if end == 0 or (end < len(digits) and digits[end] not in b" \t\n\r\v\f"):
        return None
    number = int(digits[:end])
    return number if number <= _UINT64_MAX else None
