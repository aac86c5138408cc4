"""The storage node's logic: one eviction core per group, answering protobuf requests (no I/O)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared import entry
from shared import ringcache_pb2 as pb
from storage_node.cores import PolicyError, load_core

# A group seen in a request before any CONFIGURE gets this policy and (at most) this
# budget, so a node started by hand answers at once; the router always configures.
DEFAULT_POLICY = "adaptive"  # the best built-in core on bench/eviction.py's traces
DEFAULT_GROUP_BYTES = 64 * 1024 * 1024


# What a store keeps (shared/entry.py); the entry's extra byte(s) count in the core's budget.
def _wrap(request: pb.Request) -> bytes:
    return entry.NEGATIVE if request.negative else entry.pack(request.value, request.flags)


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

    __slots__ = ("spec", "budget", "core", "touch", "hits", "misses", "sets")

    def __init__(self, spec: GroupSpec, budget: int, core):
        self.spec = spec
        self.budget = budget  # may be below spec.max_bytes when max_memory is short
        self.core = core
        # User cores may lack touch(); re-storing the value with the new ttl is the
        # same thing seen from outside.
        self.touch = getattr(core, "touch", None) or self._touch_by_set
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
    ):
        self.max_memory = max_memory
        self.clock = clock
        self.log = log
        self.configured = False  # after the first CONFIGURE, unknown groups are errors
        self.connections = 0  # open connections, kept by the protocol
        self.frames = 0
        self.requests = 0
        self._started = clock()
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
        }
        self._node_ops = {
            pb.PING: lambda request: pb.Response(id=request.id),
            pb.STATS: self._stats,
            pb.CONFIGURE: self._configure,
        }

    def handle_frame(self, frame: pb.Frame) -> list[pb.Response]:
        """Answers to every request of one frame, handled in order."""
        self.frames += 1
        return [self.handle(request) for request in frame.requests]

    def handle(self, request: pb.Request) -> pb.Response:
        self.requests += 1
        op = request.op
        try:
            group_op = self._group_ops.get(op)
            if group_op is not None:
                name = request.group
                group = self._groups.get(name) or self._default_group(name)
                if group is None:
                    return _error(request, pb.UNKNOWN_GROUP, _unknown_group(name))
                return group_op(group, request)
            node_op = self._node_ops.get(op)
            if node_op is not None:
                return node_op(request)
        except Exception as exc:
            # A broken user core must cost one answer, not the connection and with it
            # every other request of the frame.
            self.log(f"{pb.Op.Name(op)} on group {request.group!r} failed: {exc!r}")
            return _error(request, pb.ERROR, f"internal error: {exc!r}")
        return _error(request, pb.UNKNOWN_OP, f"unknown op {op}")

    def configure(self, specs: list[GroupSpec]) -> None:
        """Hold exactly ``specs``; raises ConfigError, changing nothing, if any is invalid.

        A group whose policy and effective budget are unchanged keeps its core and data.
        Any other group gets a fresh core: its entries are dropped, since the core
        interface has no way to list them for moving.  Groups not in ``specs`` go.
        """
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
        self._groups = groups
        if total > self.max_memory:
            self.log(
                f"group budgets sum to {total} bytes, above max_memory {self.max_memory}: "
                f"scaling every group to {self.max_memory / total:.1%} of its max_bytes"
            )

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
            core_class = load_core(spec.policy)
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

    # Group ops: each takes the group and the request and returns the response.

    def _get(self, group: _Group, request: pb.Request) -> pb.Response:
        stored = group.core.get(request.key)
        if stored is None:
            group.misses += 1
            return pb.Response(id=request.id, status=pb.NOT_FOUND)
        group.hits += 1
        if stored == entry.NEGATIVE:
            return pb.Response(id=request.id, status=pb.NOT_FOUND, negative=True)
        value, flags = entry.unpack(stored)
        if flags:
            return pb.Response(id=request.id, value=value, flags=flags)
        return pb.Response(id=request.id, value=value)  # a field less to set: the hot path

    def _get_many(self, group: _Group, request: pb.Request) -> pb.Response:
        # The multi-get hot path: entries go back as stored (never empty), b"" for a
        # miss, so the loop is the core's get and nothing else.
        get = group.core.get
        values = [get(key) or b"" for key in request.keys]
        misses = values.count(b"")
        group.misses += misses
        group.hits += len(values) - misses
        return pb.Response(id=request.id, values=values)

    def _set(self, group: _Group, request: pb.Request) -> pb.Response:
        try:
            group.core.set(request.key, _wrap(request), _ttl(request))
        except ValueError:
            # As memcached does: a refused store must not leave the old value readable,
            # or a client that overwrote the key would read what it replaced.
            group.core.delete(request.key)
            size = len(request.key) + len(request.value)
            overhead = getattr(group.core, "entry_overhead", 0)
            charged = f" (+{overhead} charged per entry)" if overhead else ""
            return _error(
                request,
                pb.TOO_LARGE,
                f"key and value of {size} bytes{charged} do not fit group {group.spec.name!r} "
                f"(budget {group.budget} bytes)",
            )
        group.sets += 1
        return pb.Response(id=request.id)

    def _add(self, group: _Group, request: pb.Request) -> pb.Response:
        if entry.present(group.core.get(request.key)):
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return self._set(group, request)

    def _replace(self, group: _Group, request: pb.Request) -> pb.Response:
        if not entry.present(group.core.get(request.key)):
            return pb.Response(id=request.id, status=pb.NOT_STORED)
        return self._set(group, request)

    def _delete(self, group: _Group, request: pb.Request) -> pb.Response:
        found = group.core.delete(request.key)
        return pb.Response(id=request.id, status=pb.OK if found else pb.NOT_FOUND)

    def _touch(self, group: _Group, request: pb.Request) -> pb.Response:
        # A negative entry is an absence: touching it must answer NOT_FOUND.
        found = (entry.present(group.core.get(request.key))
                 and group.touch(request.key, _ttl(request)))
        return pb.Response(id=request.id, status=pb.OK if found else pb.NOT_FOUND)

    def _flush_group(self, group: _Group, request: pb.Request) -> pb.Response:
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
    return pb.Response(id=request.id, status=status, error=text)
