"""Requests to one node, batched: every request made within one reactor turn goes out in
one frame, and each answer is matched to what waits for it by request id.

Each frame has one deadline, the router's timeout, and one timer serves every frame's
deadline (they come in order). A request that may wait at the node (a LEASE_GET waits for
another router's fill) says how long, and has a deadline of its own: that long plus the
timeout; its running out is a timeout of that request alone, not of its node. What a NodeClient (router/cluster/nodeclient.py) decides
-- whether the node takes requests, where frames are written -- it sets here: ``open``,
``refusal`` and ``transport``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail

from router.cluster.errors import NodeTimeout, NodeUnavailable
from shared.codec import append_prepared, append_request, decode_responses
from shared.framing import _HEADER, HEADER_SIZE
from shared.net import cancel_call, write_now
from shared.reactor import end_of_turn
from shared.wire import encode_groups

# One frame in this many has its round trip timed (a histogram observation takes a lock).
SAMPLE_EVERY = 16

# A frame is flushed early once its values reach this many bytes, so one busy turn
# cannot build a frame near the peer's MAX_FRAME.
FLUSH_BYTES = 4 * 1024 * 1024


class RequestBatcher:
    """This turn's frame of requests to node ``name``, and everything waiting on an answer.

    ``request`` and ``send_prepared`` take requests while ``open``; otherwise they fail at
    once with ``refusal`` (never queue behind a dead node). Frames wait while ``transport``
    is None (still connecting). ``on_timeout(batches_in_a_row)`` is told each time a frame's
    requests time out, with how many frames in a row have.
    """

    def __init__(self, name: str, reactor, timeout: float,
                 on_timeout: Callable[[int], None],
                 observe_latency: Callable[[float], None] | None = None):
        self.name = name
        self.reactor = reactor
        self.timeout = timeout
        self._on_timeout = on_timeout
        self.open = True
        self.refusal = "not connected yet"
        self.transport = None
        self._next_id = 0
        # Request id -> what waits for its answer: a Deferred, or a fast-path waiter with
        # the same callback(response) / errback(error) methods.
        self._pending: dict[int, Deferred] = {}
        # This turn's frame, encoded as requests are made: a length prefix to fill in,
        # then Frame.requests elements (shared/codec.py).
        self._frame = bytearray(HEADER_SIZE)
        self._frame_ids: list[int] = []
        # Each frame's deadline, in the order frames were begun (so in deadline order);
        # one timer for the earliest rather than one per frame.
        self._deadlines: deque[tuple[float, list[int]]] = deque()
        self._expiry_call = None
        self._flush_call = None
        # Latency is sampled: one request id at a time is timed from flush to answer.
        self._observe_latency = observe_latency
        self._sample_id = None
        self._sample_sent = 0.0
        self.requests = self.timeouts = self.frames_sent = 0
        self._timeouts_in_a_row = 0
        # Request id -> the deadline timer of a request that may wait at the node.
        self._patient: dict[int, object] = {}

    def request(self, op: int, group: str = "", key: bytes = b"", value: bytes = b"",
                ttl: float = 0.0, flags: int = 0, groups=None, negative: bool = False,
                keys=None, cas: int = 0, delta: int = 0, lease: int = 0,
                lease_ttl: float = 0.0, meta: int = 0, wait: float = 0.0) -> Deferred:
        """A Deferred firing with the node's pb.Response. ``wait``: the seconds the node
        may hold the request before it answers, beyond the timeout."""
        if not self.open:
            return fail(NodeUnavailable(self.name, self.refusal))
        return self.send(op, group, key, value, ttl, flags, groups, negative, keys, cas, delta,
                         lease, lease_ttl, meta, wait)

    def send_prepared(self, body: bytes, waiter) -> bool:
        """Send a request whose fields after the id are already encoded (a GetRun's
        GET_MANY); its answer goes to ``waiter.callback(response)`` or its failure to
        ``waiter.errback(error)``. False, sending nothing, while not open."""
        if not self.open:
            return False
        rid = self._begin()
        append_prepared(self._frame, rid, body)
        self._pending[rid] = waiter
        self._queued()
        return True

    def send(self, op: int, group: str = "", key: bytes = b"", value: bytes = b"",
             ttl: float = 0.0, flags: int = 0, groups=None, negative: bool = False,
             keys=None, cas: int = 0, delta: int = 0, lease: int = 0, lease_ttl: float = 0.0,
             meta: int = 0, wait: float = 0.0) -> Deferred:
        """``request``, open or not: what the client itself sends (its probe)."""
        rid = self._begin()
        append_request(self._frame, rid, op, group, key, value, ttl, flags, negative, keys,
                       encode_groups(groups) if groups else b"", cas, delta, lease, lease_ttl,
                       meta)
        d = Deferred()
        self._pending[rid] = d
        if wait:
            self._patient[rid] = self.reactor.callLater(wait + self.timeout,
                                                        self._expire_patient, rid, wait)
        self._queued()
        return d

    def first(self, send: Callable[[], object]) -> None:
        """What ``send()`` requests goes ahead of what this turn's frame already holds
        (CONFIGURE, on a first connection, before what queued while connecting)."""
        queued, self._frame = self._frame, bytearray(HEADER_SIZE)
        send()
        self._frame += memoryview(queued)[HEADER_SIZE:]
        self.schedule_flush()

    def _begin(self) -> int:
        """A new request id in this turn's frame (whose deadline starts with its first)."""
        self._next_id += 1
        rid = self._next_id
        frame_ids = self._frame_ids
        if not frame_ids:
            # One deadline per batch rather than per request: the batch's requests share
            # it, and every batch's timeout is the same, so deadlines come in order.
            self._deadlines.append((self.reactor.seconds() + self.timeout, frame_ids))
            if self._expiry_call is None:
                self._expiry_call = self.reactor.callLater(self.timeout, self._expire_due)
        frame_ids.append(rid)
        self.requests += 1
        return rid

    def _queued(self) -> None:
        """Requests were added to this turn's frame: flush it now if it is big, else once
        at the end of the turn. While connecting, the frame waits for the connection."""
        if self.transport is not None:
            if len(self._frame) >= FLUSH_BYTES:
                self.flush()
            else:
                self.schedule_flush()

    def schedule_flush(self) -> None:
        if self._flush_call is None and self._frame_ids:
            self._flush_call = end_of_turn(self.reactor, self.flush)

    def flush(self) -> None:
        cancel_call(self._flush_call)
        self._flush_call = None
        frame = self._frame
        if not self._frame_ids or self.transport is None:
            return
        if (self._sample_id is None and self._observe_latency is not None
                and not self.frames_sent % SAMPLE_EVERY):
            self._sample_id = self._frame_ids[0]
            self._sample_sent = self.reactor.seconds()
        self._frame = bytearray(HEADER_SIZE)
        self._frame_ids = []
        self.frames_sent += 1
        _HEADER.pack_into(frame, 0, len(frame) - HEADER_SIZE)
        write_now(self.transport, frame)

    def answered(self, payload: bytes) -> None:
        """A frame of responses from the node."""
        pending, patient = self._pending, self._patient
        for response in decode_responses(payload):
            waiter = pending.pop(response.id, None)
            if waiter is not None:
                if patient and response.id in patient:
                    patient.pop(response.id).cancel()
                waiter.callback(response)
        self._timeouts_in_a_row = 0
        if self._sample_id is not None and self._sample_id not in pending:
            self._sample_id = None
            self._observe_latency(self.reactor.seconds() - self._sample_sent)

    def connected(self) -> None:
        """A new connection: what comes back now answers only what it is sent."""
        self._timeouts_in_a_row = 0

    def _expire_due(self) -> None:
        self._expiry_call = None
        deadlines = self._deadlines
        now = self.reactor.seconds()
        while deadlines and deadlines[0][0] <= now:
            self._expire(deadlines.popleft()[1])
        if deadlines and self._expiry_call is None:
            self._expiry_call = self.reactor.callLater(deadlines[0][0] - now, self._expire_due)

    def _expire(self, ids: list[int]) -> None:
        pending, patient = self._pending, self._patient
        if self._sample_id in ids:
            self._sample_id = None
        sent = ids is not self._frame_ids
        if not sent:
            # The batch never left (still connecting). Drop it: its callers are told
            # "unavailable" now, so it must not be acted on later, and the next
            # request must start a batch with a deadline of its own.
            self._frame = bytearray(HEADER_SIZE)
            self._frame_ids = []
        expired = []
        for rid in ids:
            if patient and rid in patient:
                if sent:
                    continue  # it may wait at the node: its own deadline is later
                patient.pop(rid).cancel()
            waiter = pending.pop(rid, None)
            if waiter is not None:
                expired.append(waiter)
        if not expired:
            return
        self.timeouts += len(expired)
        error = NodeTimeout(self.name, self.timeout)
        for waiter in expired:
            waiter.errback(error)
        self._timeouts_in_a_row += 1
        self._on_timeout(self._timeouts_in_a_row)

    def _expire_patient(self, rid: int, wait: float) -> None:
        del self._patient[rid]
        waiter = self._pending.pop(rid, None)
        if waiter is not None:
            self.timeouts += 1
            waiter.errback(NodeTimeout(self.name, wait + self.timeout))

    def fail_all(self, reason: str) -> None:
        """Everything waiting or queued fails: the connection is gone."""
        cancel_call(self._flush_call)
        self._flush_call = None
        patient, self._patient = self._patient, {}
        for timer in patient.values():
            timer.cancel()
        cancel_call(self._expiry_call)
        self._expiry_call = None
        self._deadlines.clear()
        self._frame = bytearray(HEADER_SIZE)
        self._frame_ids = []
        pending, self._pending = self._pending, {}
        self._sample_id = None
        error = NodeUnavailable(self.name, reason)
        for waiter in pending.values():
            waiter.errback(error)
