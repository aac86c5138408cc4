"""The storage node's logic: one eviction core per group, answering protobuf requests (no I/O).

Node ties the pieces together: the group table and CONFIGURE (groups.py), the plain group
ops (ops.py), the read-modify-write ops (rmw.py), DUMP and RESTORE (transfer.py), the
leases (leases.py, lease_ops.py) and the STATS answer (stats.py). A request's op picks
its handler from one table: group ops get the group, node ops the request alone. Every
write of a key, and every flush, voids the key's lease here, after the write is applied.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection

from shared import ringcache_pb2 as pb
from shared.codec import decode_requests
from shared.framing import _HEADER, HEADER_SIZE, MAX_FRAME
from shared.wire import RESPONSES, len_field
from storage_node.groups import DEFAULT_GROUP_BYTES, DEFAULT_POLICY, ConfigError, GroupSpec, GroupTable
from storage_node.lease_ops import LeaseOps
from storage_node.leases import LeaseTable
from storage_node.meta_ops import MetaOps
from storage_node.ops import GroupOps, error
from storage_node.rmw import ReadModifyWrite, parse_counter
from storage_node.stats import NodeCounters, node_stats
from storage_node.transfer import Transfers

__all__ = ["DEFAULT_GROUP_BYTES", "DEFAULT_POLICY", "ConfigError", "GroupSpec", "Node",
           "parse_counter"]

# Bytes an answer may take beyond its values: the frame field's tag and length, the id,
# the status and an error text such as ops.TOO_BIG (error texts are cut to ops.ERROR_MAX).
_ANSWER_OVERHEAD = 256
# An answer frame sent in pieces (one holding large values) is ended after the request
# that brings it to this many bytes, and the frame's other answers follow in frames of
# their own: the first answers need not wait for the last values to cross the socket.
SPLIT_BYTES = 64 << 10

# The writes that void the key's lease, whatever their outcome (a lease is out only while
# the key is missing or stale, so most of them change it); META_GET voids it when it
# creates or touches the entry (_voids). GAT never meets a lease: it misses a missing or
# stale key.
_WRITES = frozenset((pb.SET, pb.ADD, pb.REPLACE, pb.DELETE, pb.TOUCH, pb.CAS, pb.APPEND,
                     pb.PREPEND, pb.INCR, pb.DECR))
_CHANGES_ITEM = pb.MG_VIVIFY | pb.MG_TOUCH


class Node:
    """Every group this node holds, under one memory cap; ``handle`` answers one request."""

    def __init__(
        self,
        max_memory: int,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = logging.getLogger(__name__).warning,
        allowed_policies: Collection[str] = (),
        wall: Callable[[], float] = time.time,
        call_later: Callable | None = None,
        rng: random.Random | None = None,
    ):
        self.max_memory = max_memory
        self.clock = clock
        self.log = log
        self.groups = GroupTable(max_memory, clock, log, allowed_policies)
        self.counters = NodeCounters(started=clock())
        self.ops = GroupOps(clock)
        self.snapshot_stats: pb.SnapshotStats | None = None  # with a data dir (snapshot/)
        # ``call_later`` (the reactor's) times the leases' lapses while readers wait.
        self.leases = LeaseTable(clock, call_later, rng)
        self._leased = self.leases.out  # (group, key) -> Lease: empty, nothing to void
        self.lease_ops = LeaseOps(self.ops, self.groups, self.leases)
        rmw = ReadModifyWrite(self.ops)
        self.group_ops: dict[int, Callable] = {**self.ops.table(), **rmw.table(),
                                               **Transfers(self.ops, clock, wall).table(),
                                               **self.lease_ops.table_ops(),
                                               **MetaOps(self.ops, rmw).table()}
        self.node_ops: dict[int, Callable] = {
            pb.PING: lambda request: pb.Response(id=request.id),
            pb.STATS: self._stats,
            pb.CONFIGURE: self._configure,
        }

    # The counters the protocol and tools read.

    @property
    def configured(self) -> bool:
        return self.groups.configured

    @property
    def connections(self) -> int:
        return self.counters.connections

    @connections.setter
    def connections(self, value: int) -> None:
        self.counters.connections = value

    def handle_payload(self, payload: bytes, max_frame: int = MAX_FRAME,
                       peer=None, pieces: bool = False) -> bytearray | list:
        """One request frame's payload in, its answer frame out (length prefix first).
        ``peer`` (``deliver(frame)``) is the connection it came from: a LEASE_GET that
        waits is answered there later, in a frame of its own (``flush_answers``). With
        ``pieces``, a frame holding large GET_MANY entries comes out as a list of pieces
        (bytes-like, the frame once put together) that leaves those entries uncopied, for
        one sendmsg (shared/net.py write_now).

        Requests are handled in order and each is answered once. The answers' values may
        fill the frame up to ``max_frame``; a GET or GET_MANY past that is answered
        TOO_LARGE instead, before any of its values is copied, so a peer asking for a
        gigabyte in one frame costs the node what fits in one frame. Raises WireError
        (the peer's fault) for a payload that is not a Frame.
        """
        requests = decode_requests(payload)
        self.counters.frames += 1
        self.lease_ops.peer = peer
        if not pieces:
            return self._answer(requests, max_frame)
        ops = self.ops
        ops.pieces = []
        try:
            frames = self._frames(requests, max_frame)
        finally:
            ops.pieces = None
        if len(frames) == 1 and not frames[0][1]:
            return frames[0][0]
        out = []
        for frame, apart in frames:
            view, at = memoryview(frame), 0
            for offset, stored in apart:
                out += (view[at:offset], stored)
                at = offset
            out.append(view[at:])
        return out

    def handle(self, request: pb.Request, peer=None) -> pb.Response | None:
        """Answer one request (for tests and tools; the wire path is handle_payload):
        None for a LEASE_GET that waits (its answer goes to ``peer`` later)."""
        self.lease_ops.peer = peer
        out = self._answer([request], MAX_FRAME)
        responses = pb.Frame.FromString(bytes(out[HEADER_SIZE:])).responses
        self.flush_answers()
        return responses[0] if responses else None

    def flush_answers(self) -> None:
        """Send what readers that waited are owed: after the frame's own answer."""
        self.lease_ops.outbox.flush()

    def peer_gone(self, peer) -> None:
        """``peer``'s connection closed: its readers stop waiting."""
        self.lease_ops.forget(peer)

    def configure(self, specs: list[GroupSpec]) -> None:
        """Hold exactly ``specs`` (GroupTable.configure); raises ConfigError, changing nothing."""
        self.groups.configure(specs)

    def _answer(self, requests: list, max_frame: int) -> bytearray:
        """The answer frame (length prefix first) of ``requests``, in one piece."""
        return self._frames(requests, max_frame, math.inf)[0][0]

    def _frames(self, requests: list, max_frame: int,
                split: float = SPLIT_BYTES) -> list[tuple[bytearray, list]]:
        """The answers as frames, each with the GET_MANY entries left out of it ((offset,
        entry) each, which its length prefix counts; only while ``ops.pieces`` is a list).
        A frame is ended once it holds ``split`` bytes and requests remain, so the router
        can hand on the first answers while the rest cross the socket: answers are matched
        by id, and each request's answer is in one frame."""
        ops = self.ops
        frames = []
        out, apart = bytearray(HEADER_SIZE), ops.pieces
        # A generous bound on each answer's own fields (id, status, an error text).
        ops.room = max_frame - HEADER_SIZE - _ANSWER_OVERHEAD * len(requests)
        last = len(requests) - 1
        for i, request in enumerate(requests):
            self._handle(request, out)
            size = len(out) + _left_out(apart) if apart else len(out)
            if size >= split and i < last:
                frames.append((out, apart))
                out = bytearray(HEADER_SIZE)
                if apart is not None:
                    apart = ops.pieces = []
        ops.journal.sync()  # what the frames changed is on record before any is answered
        frames.append((out, apart))
        for frame, left_out in frames:
            _HEADER.pack_into(frame, 0, len(frame) - HEADER_SIZE + _left_out(left_out))
        return frames

    def _handle(self, request, out: bytearray) -> None:
        self.counters.requests += 1
        op = request.op
        start = len(out)
        try:
            group_op = self.group_ops.get(op)
            if group_op is not None:
                name = request.group
                group = self.groups.get(name)
                if group is None:
                    response = error(request, pb.UNKNOWN_GROUP, _unknown_group(name))
                else:
                    if group.flush_due(self.clock()) and self._leased:
                        self.lease_ops.flushed(name)
                    response = group_op(group, request, out)
                    if self._leased and _voids(op, request):
                        self._void(op, group, request)
            else:
                node_op = self.node_ops.get(op)
                if node_op is not None:
                    response = node_op(request)
                else:
                    response = error(request, pb.UNKNOWN_OP, f"unknown op {op}")
        except Exception as exc:
            # A broken user core must cost one answer, not the connection and with it
            # every other request of the frame.
            del out[start:]
            apart = self.ops.pieces
            if apart and apart[-1][0] > start:  # entries of this answer, left out of it
                apart[:] = [piece for piece in apart if piece[0] <= start]
            self.log(f"{_op_name(op)} on group {request.group!r} failed: {exc!r}")
            response = error(request, pb.ERROR, f"internal error: {exc!r}")
        # The hot ops append their answer themselves and return None; the rest answer a
        # message, serialized here.
        if response is not None:
            message = response.SerializeToString()
            out += len_field(RESPONSES, message)

    # Every write of a key that a lease must not outlive passes here, after the write is
    # applied (and flushes, by group): the one place a node learns a key changed. A cache
    # kept outside the node (a router's near cache of hot keys) that must not outlive a
    # write would be told from here.
    def _void(self, op: int, group, request) -> None:
        if op in (pb.FLUSH_GROUP, pb.RESTORE):
            self.lease_ops.flushed(group.spec.name)
        else:
            self.lease_ops.written(group, request.key)

    # Node ops.

    def _configure(self, request: pb.Request) -> pb.Response:
        specs = [GroupSpec(g.name, g.policy, g.max_bytes, g.stale_while_revalidate,
                           g.stale_if_error) for g in request.groups]
        before = {g.spec.name for g in self.groups}
        try:
            self.configure(specs)
        except ConfigError as exc:
            return error(request, pb.ERROR, f"CONFIGURE refused: {exc}")
        self.groups.configured = True
        for name in before - {spec.name for spec in specs}:
            self.lease_ops.flushed(name)  # its readers are told the group is gone
        return pb.Response(id=request.id)

    def _stats(self, request: pb.Request) -> pb.Response:
        return pb.Response(id=request.id, stats=node_stats(self))


def _voids(op: int, request) -> bool:
    """Whether ``request``, just applied, ends the lease of its key (or of its group)."""
    if op in _WRITES:
        return True
    if op == pb.META_GET:
        return bool(request.meta & _CHANGES_ITEM)
    if op == pb.FLUSH_GROUP:
        return request.ttl <= 0  # a delayed flush voids them when it comes due
    return op == pb.RESTORE


def _op_name(op: int) -> str:
    try:
        return pb.Op.Name(op)
    except ValueError:
        return f"op {op}"


def _unknown_group(name: str) -> str:
    return f"unknown group {name!r}" if name else "the request names no group"


def _left_out(apart) -> int:
    """Bytes of the entries left out of a frame (Node._frames)."""
    return sum([len(stored) for _, stored in apart]) if apart else 0
