"""The storage node's logic: one eviction core per group, answering protobuf requests (no I/O).

Node ties the pieces together: the group table and CONFIGURE (groups.py), the plain group
ops (ops.py), the read-modify-write ops (rmw.py), DUMP and RESTORE (transfer.py) and the
STATS answer (stats.py). A
request's op picks its handler from one table: group ops get the group, node ops the
request alone; a new kind of op (leases, say) adds its handlers to the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from shared import ringcache_pb2 as pb
from shared.codec import decode_requests
from shared.framing import _HEADER, HEADER_SIZE, MAX_FRAME
from shared.wire import RESPONSES, len_field
from storage_node.groups import DEFAULT_GROUP_BYTES, DEFAULT_POLICY, ConfigError, GroupSpec, GroupTable
from storage_node.ops import GroupOps, error
from storage_node.rmw import ReadModifyWrite, parse_counter
from storage_node.stats import NodeCounters, node_stats
from storage_node.transfer import Transfers

__all__ = ["DEFAULT_GROUP_BYTES", "DEFAULT_POLICY", "ConfigError", "GroupSpec", "Node",
           "parse_counter"]

# Bytes an answer may take beyond its values: the frame field's tag and length, the id,
# the status and an error text such as ops.TOO_BIG (error texts are cut to ops.ERROR_MAX).
_ANSWER_OVERHEAD = 256


class Node:
    """Every group this node holds, under one memory cap; ``handle`` answers one request."""

    def __init__(
        self,
        max_memory: int,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = logging.getLogger(__name__).warning,
        allowed_policies: Collection[str] = (),
        wall: Callable[[], float] = time.time,
    ):
        self.max_memory = max_memory
        self.clock = clock
        self.log = log
        self.groups = GroupTable(max_memory, clock, log, allowed_policies)
        self.counters = NodeCounters(started=clock())
        self.ops = GroupOps(clock)
        self.snapshot_stats: pb.SnapshotStats | None = None  # with a data dir (snapshot/)
        self.group_ops: dict[int, Callable] = {**self.ops.table(),
                                               **ReadModifyWrite(self.ops).table(),
                                               **Transfers(self.ops, clock, wall).table()}
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

    def handle_payload(self, payload: bytes, max_frame: int = MAX_FRAME) -> bytearray:
        """One request frame's payload in, its answer frame out (length prefix first).

        Requests are handled in order and each is answered once. The answers' values may
        fill the frame up to ``max_frame``; a GET or GET_MANY past that is answered
        TOO_LARGE instead, before any of its values is copied, so a peer asking for a
        gigabyte in one frame costs the node what fits in one frame. Raises WireError
        (the peer's fault) for a payload that is not a Frame.
        """
        requests = decode_requests(payload)
        self.counters.frames += 1
        return self._answer(requests, max_frame)

    def handle(self, request: pb.Request) -> pb.Response:
        """Answer one request (for tests and tools; the wire path is handle_payload)."""
        out = self._answer([request], MAX_FRAME)
        (response,) = pb.Frame.FromString(bytes(out[HEADER_SIZE:])).responses
        return response

    def configure(self, specs: list[GroupSpec]) -> None:
        """Hold exactly ``specs`` (GroupTable.configure); raises ConfigError, changing nothing."""
        self.groups.configure(specs)

    def _answer(self, requests: list, max_frame: int) -> bytearray:
        out = bytearray(HEADER_SIZE)
        # A generous bound on each answer's own fields (id, status, an error text).
        self.ops.room = max_frame - HEADER_SIZE - _ANSWER_OVERHEAD * len(requests)
        for request in requests:
            self._handle(request, out)
        self.ops.journal.sync()  # what the frame changed is on record before it is answered
        _HEADER.pack_into(out, 0, len(out) - HEADER_SIZE)
        return out

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
                    group.flush_due(self.clock())
                    response = group_op(group, request, out)
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
            self.log(f"{_op_name(op)} on group {request.group!r} failed: {exc!r}")
            response = error(request, pb.ERROR, f"internal error: {exc!r}")
        # The hot ops append their answer themselves and return None; the rest answer a
        # message, serialized here.
        if response is not None:
            message = response.SerializeToString()
            out += len_field(RESPONSES, message)

    # Node ops.

    def _configure(self, request: pb.Request) -> pb.Response:
        specs = [GroupSpec(g.name, g.policy, g.max_bytes) for g in request.groups]
        try:
            self.configure(specs)
        except ConfigError as exc:
            return error(request, pb.ERROR, f"CONFIGURE refused: {exc}")
        self.groups.configured = True
        return pb.Response(id=request.id)

    def _stats(self, request: pb.Request) -> pb.Response:
        return pb.Response(id=request.id, stats=node_stats(self))


def _op_name(op: int) -> str:
    try:
        return pb.Op.Name(op)
    except ValueError:
        return f"op {op}"


def _unknown_group(name: str) -> str:
    return f"unknown group {name!r}" if name else "the request names no group"
