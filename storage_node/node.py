"""The storage node's logic: one eviction core per group, answering protobuf requests (no I/O)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from shared import entry
from shared import ringcache_pb2 as pb
from shared.codec import append_get_many, append_response, decode_requests
from shared.framing import _HEADER, HEADER_SIZE, MAX_FRAME
from shared.wire import RESPONSES, len_field
from storage_node.cores import PolicyError, load_core

# A group seen in a request before any CONFIGURE gets this policy and (at most) this
# budget, so a node started by hand answers at once; the router always configures.
DEFAULT_POLICY = "adaptive"  # the best built-in core on bench/eviction.py's traces
DEFAULT_GROUP_BYTES = 64 * 1024 * 1024



class ConfigError(ValueError):
    """A CONFIGURE the node refuses; the configuration in force is unchanged."""


@dataclass(frozen=True)
class GroupSpec:
    """One group as configured: its name, policy and budget on this node."""

    name: str
    policy: str
    max_bytes: int


class _Group:
    """A live group: its core, its effective budget and the counters the core does not keep."""

    __slots__ = ("spec", "budget", "core", "touch", "ttl_left", "flush_at", "hits", "misses",
                 "sets")

    def __init__(self, spec: GroupSpec, budget: int, core):
        self.spec = spec
        self.budget = budget  # may be below spec.max_bytes when max_memory is short
        self.core = core
        # User cores may lack touch(); re-storing the value with the new ttl is the
        # same thing seen from outside.
        self.touch = getattr(core, "touch", None) or self._touch_by_set
        # Seconds an entry has left (None: no expiry), for the writes that keep an entry's
        # ttl (incr, append). A core that cannot tell gives its entries no expiry then.
        self.ttl_left = getattr(core, "ttl_left", None) or _no_expiry
        self.flush_at: float | None = None  # a delayed flush_all, on the node's clock
        self.hits = self.misses = self.sets = 0

    def _touch_by_set(self, key: bytes, ttl: float | None) -> bool:
        stored = self.core.get(key)
        if stored is None:
            return False
        self.core.set(key, stored, ttl)
        return True


class Node:
    """Every group this node holds, under one memory cap; ``handle`` answers one request."""

    def __init__(
        self,
        max_memory: int,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = logging.getLogger(__name__).warning,
        allowed_policies: Collection[str] = (),
    ):
        self.max_memory = max_memory
        self.clock = clock
        self.log = log
        # The python:module:Class policies this node may import: from its own command
        # line, never from a peer (a CONFIGURE naming any other is refused).
        self.allowed_policies = frozenset(allowed_policies)
        self.configured = False  # after the first CONFIGURE, unknown groups are errors
        self.connections = 0  # open connections, kept by the protocol
        self.frames = 0
        self.requests = 0
        self._started = clock()
        self._cas = 0  # the last CAS unique given out: every store gets the next one
        self._groups: dict[str, _Group] = {}
        self._group_ops = {
            pb.GET: self._get,
            pb.GET_MANY: self._get_many,
            pb.SET: self._set,
            pb.ADD: self._add,
            pb.REPLACE: self._replace,
            pb.DELETE: self._delete,
            pb.TOUCH: self._touch,
            pb.FLUSH_GROUP: self._flush_group,
            pb.GAT: self._gat,
            pb.INCR: self._incr,
            pb.DECR: self._incr,
            pb.CAS: self._cas_store,
            pb.APPEND: self._concat,
            pb.PREPEND: self._concat,
        }
        self._node_ops = {
            pb.PING: lambda request: pb.Response(id=request.id),
            pb.STATS: self._stats,
            pb.CONFIGURE: self._configure,
        }

    def handle_payload(self, payload: bytes, max_frame: int = MAX_FRAME) -> bytearray:
        """One request frame's payload in, its answer frame out (length prefix first).

        Requests are handled in order and each is answered once. The answers' values may
        fill the frame up to ``max_frame``; a GET or GET_MANY past that is answered
        TOO_LARGE instead, before any of its values is copied, so a peer asking for a
        gigabyte in one frame costs the node what fits in one frame. Raises WireError
        (the peer's fault) for a payload that is not a Frame.
        """
        requests = decode_requests(payload)
        self.frames += 1
        return self._answer(requests, max_frame)

    def handle(self, request: pb.Request) -> pb.Response:
        """Answer one request (for tests and tools; the wire path is handle_payload)."""
        out = self._answer([request], MAX_FRAME)
        (response,) = pb.Frame.FromString(bytes(out[HEADER_SIZE:])).responses
        return response

    def _answer(self, requests: list, max_frame: int) -> bytearray:
        out = bytearray(HEADER_SIZE)
        # A generous bound on each answer's own fields (id, status, an error text).
        self._room = max_frame - HEADER_SIZE - _ANSWER_OVERHEAD * len(requests)
        for request in requests:
            self._handle(request, out)
        _HEADER.pack_into(out, 0, len(out) - HEADER_SIZE)
        return out

    def _handle(self, request, out: bytearray) -> None:
        self.requests += 1
        op = request.op
        start = len(out)
        try:
            group_op = self._group_ops.get(op)
            if group_op is not None:
                name = request.group
                group = self._groups.get(name) or self._default_group(name)
                if group is None:
                    response = _error(request, pb.UNKNOWN_GROUP, _unknown_group(name))
                else:
                    if group.flush_at is not None and self.clock() >= group.flush_at:
                        group.flush_at = None
                        group.core.clear()
                    response = group_op(group, request, out)
            else:
                node_op = self._node_ops.get(op)
                if node_op is not None:
                    response = node_op(request)
                else:
                    response = _error(request, pb.UNKNOWN_OP, f"unknown op {op}")
        except Exception as exc:
            # A broken user core must cost one answer, not the connection and with it
            # every other request of the frame.
            del out[start:]
            self.log(f"{_op_name(op)} on group {request.group!r} failed: {exc!r}")
            response = _error(request, pb.ERROR, f"internal error: {exc!r}")
        # The hot ops append their answer themselves and return None; the rest answer a
        # message, serialized here.
        if response is not None:
            message = response.SerializeToString()
            out += len_field(RESPONSES, message)

    def configure(self, specs: list[GroupSpec]) -> None:
        """Hold exactly ``specs``; raises ConfigError, changing nothing, if any is invalid.

        A group whose policy and effective budget are unchanged keeps its core and data.
        Any other group gets a fresh core: its entries are dropped, since the core
        interface has no way to list them for moving.  Groups not in ``specs`` go.
        Whatever is dropped is logged.  An empty ``specs`` is refused: the router always
        sends its topology's groups, and a topology has at least its default group.
        """
        if not specs:
            raise ConfigError("no group named (a topology always has its default group)")
        names = set()
        for spec in specs:
            if not spec.name:
                raise ConfigError("a group has no name")
            if spec.name in names:
                raise ConfigError(f"group {spec.name!r} is listed twice")
            if spec.max_bytes <= 0:
                raise ConfigError(f"group {spec.name!r}: max_bytes must be positive")
            names.add(spec.name)
        total = sum(spec.max_bytes for spec in specs)
        groups = {}
        # Every new core is built before any is swapped in, so a bad policy late in the
        # list leaves the configuration in force untouched.
        for spec in specs:
            budget = self._budget(spec, total)
            old = self._groups.get(spec.name)
            if old is not None and old.spec.policy == spec.policy and old.budget == budget:
                old.spec = spec
                groups[spec.name] = old
            else:
                groups[spec.name] = _Group(spec, budget, self._new_core(spec, budget))
        self._log_dropped(groups)
        self._groups = groups
        if total > self.max_memory:
            self.log(
                f"group budgets sum to {total} bytes, above max_memory {self.max_memory}: "
                f"scaling every group to {self.max_memory / total:.1%} of its max_bytes"
            )

    def _log_dropped(self, new: dict[str, _Group]) -> None:
        for name, old in self._groups.items():
            kept = new.get(name)
            if kept is old:
                continue
            items = len(old.core)
            held = f"it held {items} {'entry' if items == 1 else 'entries'}, {old.core.nbytes} bytes"
            if kept is None:
                self.log(f"dropping group {name!r} ({held}): it is not in the new configuration")
            else:
                self.log(f"emptying group {name!r} ({held}): policy {old.spec.policy} -> "
                         f"{kept.spec.policy}, budget {old.budget} -> {kept.budget} bytes")

    def _budget(self, spec: GroupSpec, total: int) -> int:
        """The bytes the group's core may hold: its max_bytes, scaled down if all
        groups' sum ``total`` exceeds max_memory."""
        if total <= self.max_memory:
            return spec.max_bytes
        # One factor for every group keeps their proportions, and rounding down keeps
        # the sum of budgets (so of bytes held) within max_memory.
        return spec.max_bytes * self.max_memory // total

    def _new_core(self, spec: GroupSpec, budget: int):
        try:
            core_class = load_core(spec.policy, self.allowed_policies)
            # The measured memory an entry takes beyond its bytes, charged per entry so that
            # the node's RSS follows max_memory (built-in cores; a user core that takes the
            # keyword gets its own ENTRY_OVERHEAD, if it has one).
            overhead = getattr(core_class, "ENTRY_OVERHEAD", 0)
            if overhead and _takes_entry_overhead(core_class):
                return core_class(budget, self.clock, entry_overhead=overhead)
            return core_class(budget, self.clock)
        except PolicyError as exc:  # its text names the policy already
            raise ConfigError(f"group {spec.name!r}: {exc}") from None
        except Exception as exc:  # whatever a user core's module or constructor raises
            raise ConfigError(f"group {spec.name!r}: policy {spec.policy!r}: {exc!r}") from None

    def _default_group(self, name: str) -> _Group | None:
        """A new group with the default policy and budget, only until the first CONFIGURE."""
        if self.configured or not name:
            return None
        specs = [g.spec for g in self._groups.values()]
        self.configure([*specs, GroupSpec(name, DEFAULT_POLICY, min(DEFAULT_GROUP_BYTES, self.max_memory))])
        return self._groups[name]

    def _wrap(self, request, value: bytes | None = None, flags: int | None = None) -> bytes:
        """What a store keeps (shared/entry.py), stamped with a fresh CAS unique (then in
        ``self._cas``); the entry's extra bytes count in the core's budget."""
        if request.negative:
            return entry.NEGATIVE
        self._cas += 1
        return entry.pack(request.value if value is None else value,
                          request.flags if flags is None else flags, self._cas)

    # Group ops: each takes the group and the request and returns the response, or
    # appends it to ``out`` itself and returns None (the hot ones).

    def _get(self, group: _Group, request, out: bytearray) -> None:
        stored = group.core.get(request.key)
        if stored is None:
            group.misses += 1
            append_response(out, request.id, pb.NOT_FOUND)
            return
        group.hits += 1
        if stored == entry.NEGATIVE:
            append_response(out, request.id, pb.NOT_FOUND, negative=True)
            return
        value, flags, cas = entry.unpack_cas(stored)
        if len(value) > self._room:
            append_response(out, request.id, pb.TOO_LARGE, error=_TOO_BIG)
            return
        self._room -= len(value)
        append_response(out, request.id, value=value, flags=flags, cas=cas)

    def _gat(self, group: _Group, request, out: bytearray) -> None:
        # memcached's gat: a hit gets the new ttl; a miss is a miss (cached absences too).
        if entry.present(group.core.get(request.key)):
            group.touch(request.key, _ttl(request))
        self._get(group, request, out)

    def _get_many(self, group: _Group, request, out: bytearray) -> None:
        # The multi-get hot path: entries go back as stored (never empty), b"" for a
        # miss, so the loop is the core's get and nothing else.
        keys = request.keys
        answered = append_get_many(out, request.id, group.core.get, keys, self._room)
        if answered is None:
            append_response(out, request.id, pb.TOO_LARGE, error=_TOO_BIG)
            return
        hits, size = answered
        self._room -= size
        group.hits += hits
        group.misses += len(keys) - hits

    def _set(self, group: _Group, request, out: bytearray | None = None,
             value: bytes | None = None, flags: int | None = None,
             ttl: float | None | bool = False) -> pb.Response | None:
        """Store the request's value (or ``value``/``flags``/``ttl`` where given) and
        answer OK with its CAS unique."""
        try:
            group.core.set(request.key, self._wrap(request, value, flags),
                           _ttl(request) if ttl is False else ttl)
        except ValueError:
            # As memcached does: a refused store must not leave the old value readable,
            # or a client that overwrote the key would read what it replaced.
            group.core.delete(request.key)
            size = len(request.key) + len(request.value if value is None else value)
            overhead = getattr(group.core, "entry_overhead", 0)
            charged = f" (+{overhead} charged per entry)" if overhead else ""
            return _error(
                request,
                pb.TOO_LARGE,
                f"key and value of {size} bytes{charged} do not fit group {group.spec.name!r} "
                f"(budget {group.budget} bytes)",
            )
        group.sets += 1
        cas = 0 if request.negative else self._cas
        if out is None:
            return pb.Response(id=request.id, cas=cas)
        append_response(out, request.id, cas=cas)
        return None

    def _add(self, group: _Group, request, out: bytearray) -> pb.Response | None:
        if entry.present(group.core.get(request.key)):
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return self._set(group, request, out)

    def _replace(self, group: _Group, request, out: bytearray) -> pb.Response | None:
        if not entry.present(group.core.get(request.key)):
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return self._set(group, request, out)

    def _cas_store(self, group: _Group, request, out: bytearray) -> pb.Response | None:
        stored = group.core.get(request.key)
        if not entry.present(stored):
            return pb.Response(id=request.id, status=pb.NOT_FOUND)
        if entry.unpack_cas(stored)[2] != request.cas:
            return pb.Response(id=request.id, status=pb.NOT_STORED)  # memcached's EXISTS
        return self._set(group, request, out)

    def _concat(self, group: _Group, request, out: bytearray) -> pb.Response | None:
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
        return self._set(group, request, out, value, flags, group.ttl_left(request.key))

    def _incr(self, group: _Group, request, out: bytearray) -> pb.Response | None:
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
            answer = self._set(group, request)
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
        answer = self._set(group, request, None, stored, flags, group.ttl_left(request.key))
        if answer.status == pb.OK:
            answer.value = digits
        return answer

    def _delete(self, group: _Group, request, out: bytearray) -> pb.Response | None:
        if request.cas:  # only the version it names (memcached's delete with a CAS unique)
            stored = group.core.get(request.key)
            if entry.present(stored) and entry.unpack_cas(stored)[2] != request.cas:
                return pb.Response(id=request.id, status=pb.NOT_STORED)
        found = group.core.delete(request.key)
        return pb.Response(id=request.id, status=pb.OK if found else pb.NOT_FOUND)

    def _touch(self, group: _Group, request, out: bytearray) -> pb.Response | None:
        # A negative entry is an absence: touching it must answer NOT_FOUND.
        found = (entry.present(group.core.get(request.key))
                 and group.touch(request.key, _ttl(request)))
        return pb.Response(id=request.id, status=pb.OK if found else pb.NOT_FOUND)

    def _flush_group(self, group: _Group, request, out: bytearray) -> pb.Response | None:
        """Drop every entry now, or (Request.ttl seconds) later: memcached's
        ``flush_all <delay>`` drops what is stored until then and nothing stored after.
        A flush now cancels one pending, as in memcached."""
        if request.ttl > 0:
            group.flush_at = self.clock() + request.ttl
        else:
            group.flush_at = None
            group.core.clear()
        return pb.Response(id=request.id)

    # Node ops.

    def _configure(self, request: pb.Request) -> pb.Response:
        specs = [GroupSpec(g.name, g.policy, g.max_bytes) for g in request.groups]
        try:
            self.configure(specs)
        except ConfigError as exc:
            return _error(request, pb.ERROR, f"CONFIGURE refused: {exc}")
        self.configured = True
        return pb.Response(id=request.id)

    def _stats(self, request: pb.Request) -> pb.Response:
        stats = pb.NodeStats(
            max_memory=self.max_memory,
            uptime=self.clock() - self._started,
            connections=self.connections,
            frames=self.frames,
            requests=self.requests,
            configured=self.configured,
        )
        for group in self._groups.values():
            core = group.core
            if group.flush_at is not None and self.clock() >= group.flush_at:
                group.flush_at = None
                core.clear()
            stats.groups.add(
                name=group.spec.name,
                policy=group.spec.policy,
                items=len(core),
                bytes=core.nbytes,
                max_bytes=group.budget,  # what the core enforces, after any scaling
                hits=group.hits,
                misses=group.misses,
                evictions=getattr(core, "evictions", 0),
                expirations=getattr(core, "expirations", 0),
                sets=group.sets,
            )
            stats.bytes += core.nbytes
        return pb.Response(id=request.id, stats=stats)


# Bytes an answer may take beyond its values: the frame field's tag and length, the id,
# the status and an error text such as _TOO_BIG (error texts are cut to _ERROR_MAX).
_ANSWER_OVERHEAD = 256
_ERROR_MAX = 200
_TOO_BIG = "the answers of this frame exceed one frame; ask for fewer keys at once"


_UINT64_MAX = (1 << 64) - 1


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


def _no_expiry(key: bytes) -> None:
    return None


def _op_name(op: int) -> str:
    try:
        return pb.Op.Name(op)
    except ValueError:
        return f"op {op}"


def _takes_entry_overhead(core_class) -> bool:
    try:
        return "entry_overhead" in inspect.signature(core_class).parameters
    except (TypeError, ValueError):  # a callable whose signature cannot be read
        return False


def _ttl(request: pb.Request) -> float | None:
    return request.ttl if request.ttl > 0 else None


def _unknown_group(name: str) -> str:
    return f"unknown group {name!r}" if name else "the request names no group"


def _error(request: pb.Request, status: int, text: str) -> pb.Response:
    if len(text) > _ERROR_MAX:
        text = text[:_ERROR_MAX - 3] + "..."
    return pb.Response(id=request.id, status=status, error=text)
