"""A persistent, batching connection from the router to one storage node.

Every request made within one reactor turn goes out in one frame; responses are matched
to their Deferreds by request id. Each batch has one timer for the router's timeout, so
a node that hangs costs a client at most ``timeout``. While the connection is down,
requests fail at once (never queue behind a dead node) and the client reconnects with
exponential backoff and jitter.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from router.cluster.errors import NodeTimeout, NodeUnavailable
from shared import ringcache_pb2 as pb
from shared.codec import append_prepared, append_request, decode_responses
from shared.framing import _HEADER, HEADER_SIZE, FrameDecoder, FrameError
from shared.net import cancel_call, whole_answers, write_now
from shared.reactor import end_of_turn
from shared.wire import encode_groups

log = Logger()

CONNECTING, UP, PROBING, DOWN, STOPPED = "connecting", "up", "probing", "down", "stopped"
# Connection attempts that fail before a node never reached since start is logged as down
# (with the default backoff, 1.5 to 3 seconds): nodes started beside the router need that.
REPORT_AFTER_ATTEMPTS = 5

# Batches in a row that time out before a node that still holds its connection open
# (hung, SIGSTOPped, overloaded) is marked down and probed like a dead one.
FAILURES_TO_MARK_DOWN = 3

# Bytes read from a node at a time: Twisted's default, and the most while a large answer
# frame is arriving (reading 1 MiB at a time for small answers made every read allocate
# and map a MiB).
READ_SIZE, READ_MAX = 1 << 16, 1 << 20

# One frame in this many has its round trip timed (a histogram observation takes a lock).
SAMPLE_EVERY = 16

# A frame is flushed early once its values reach this many bytes, so one busy turn
# cannot build a frame near the peer's MAX_FRAME.
FLUSH_BYTES = 4 * 1024 * 1024


class NothingMissed:
    """What a node that comes back is sent when nobody keeps track: nothing (the hook
    Router fills with its hints, router/cluster/hints.py)."""

    def on_return(self, node: str, seen_up: bool) -> list[tuple]:
        return []

    def replay_failed(self, node: str, requests: list[tuple]) -> None:
        return None


class _NodeProtocol(Protocol):
    def __init__(self, client: NodeClient):
        self.client = client
        self.decoder = FrameDecoder()

    def connectionMade(self):
        whole_answers(self.transport)
        self.client._connected(self.transport)

    def dataReceived(self, data: bytes):
        decoder = self.decoder
        decoder.receive_data(data)
        try:
            for payload in decoder.frames():
                self.client._answered(payload)
            # Twisted reads bufferSize bytes at a time, and allocates that much for each
            # read: 64 KiB while answers are small, more while a large one is arriving.
            self.transport.bufferSize = min(max(decoder.missing, READ_SIZE), READ_MAX)
        except FrameError as exc:  # WireError too: a payload that is not a Frame
            log.error("node {node}: {problem}; closing the connection",
                      node=self.client.name, problem=exc)
            self.transport.abortConnection()

    def connectionLost(self, reason):
        self.client._lost(self.transport, reason.getErrorMessage())


class NodeClient:
    """Requests to one node; ``request`` answers a Deferred firing with a pb.Response."""

    # How connections to nodes authenticate: None is plain TCP (the demo on 127.0.0.1,
    # unit tests); else an object whose wrap(endpoint, host) answers the endpoint to
    # connect through, firing only once the node is authenticated. The router's main
    # sets it for every client from topology.security (router.security.NodeCredentials).
    credentials = None

    def __init__(self, name: str, host: str, port: int, reactor, timeout: float,
                 configure: Callable[[], list] | None = None,
                 backoff_initial: float = 0.1, backoff_max: float = 5.0,
                 rng: random.Random | None = None,
                 observe_latency: Callable[[float], None] | None = None,
                 returning=None):
        self.name = name
        self.host, self.port = host, port
        self.reactor = reactor
        self.timeout = timeout
        # Returns the GroupConfig list to send as CONFIGURE on every (re)connect.
        self._configure = configure
        # What the node is sent when it comes back, before it serves again: the writes
        # it missed meanwhile (router/cluster/hints.py).
        self._returning = returning or NothingMissed()
        self._seen_up = False  # whether this client ever had the node up
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self.state = CONNECTING
        self.down_reason = "not connected yet"
        self._transport = None
        self._attempts = 0
        self._unreported = False  # down since start, and not logged yet
        self._retry_call = None
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
        # Counters for stats.
        self.requests = 0
        self.timeouts = 0
        self.frames_sent = 0
        self.connects = 0
        self.marked_down = 0
        self.probes = 0
        self._timeouts_in_a_row = 0
        self._close_reason: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._connect()

    def stop(self) -> None:
        self.state = STOPPED
        cancel_call(self._retry_call)
        self._retry_call = None
        transport, self._transport = self._transport, None
        self._fail_all("router is shutting down")
        if transport is not None:
            transport.loseConnection()

    def _connect(self) -> None:
        self._retry_call = None
        if self.state == STOPPED:
            return
        endpoint = HostnameEndpoint(self.reactor, self.host, self.port,
                                    timeout=max(self.timeout, 1.0))
        if self.credentials is not None:
            endpoint = self.credentials.wrap(endpoint, self.host)
        factory = Factory.forProtocol(lambda: _NodeProtocol(self))
        factory.noisy = False  # a reconnecting client would log every attempt
        d = endpoint.connect(factory)
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure) -> None:
        reason = failure.getErrorMessage()
        if self.state == STOPPED:
            return
        self._mark_down(f"connect failed: {reason}")

    def _mark_down(self, reason: str) -> None:
        if self.state in (UP, CONNECTING):
            self.marked_down += 1
            # A node that was up is news at once; one not reached since start may just
            # be starting beside us (ringcache up): it is news if a few tries fail too.
            self._unreported = self.state == CONNECTING
            if self.state == UP:
                self._log_down(reason)
        self.state = DOWN
        self.down_reason = reason
        self._fail_all(reason)
        delay = min(self._backoff_max, self._backoff_initial * (2 ** self._attempts))
        delay *= 0.5 + self._rng.random() / 2  # jitter: routers must not retry in step
        self._attempts += 1
        if self._unreported and self._attempts >= REPORT_AFTER_ATTEMPTS:
            self._unreported = False
            self._log_down(reason)
        self._retry_call = self.reactor.callLater(delay, self._connect)

    def _log_down(self, reason: str) -> None:
        log.warn("node {node} ({address}) is down: {reason}",
                 node=self.name, address=self.address, reason=reason)

    def _connected(self, transport) -> None:
        if self.state == STOPPED:
            transport.loseConnection()
            return
        self.connects += 1
        self._transport = transport
        self._timeouts_in_a_row = 0
        if self.state == CONNECTING:
            # The first connection is trusted at once, and whatever queued while it
            # was being made goes out right behind CONFIGURE.
            self._up()
            if self._configure is not None:
                queued, self._frame = self._frame, bytearray(HEADER_SIZE)
                self.configure()
                self._frame += memoryview(queued)[HEADER_SIZE:]
            self._schedule_flush()
            return
        # A node coming back must prove it answers: a stopped (SIGSTOP) process still
        # accepts TCP connections through the kernel's backlog. CONFIGURE (PING for a
        # client with no groups to configure) is the probe;
        # requests keep failing fast until it is answered.
        self.state = PROBING
        self.probes += 1
        if self._configure is not None:
            d = self._send(pb.CONFIGURE, groups=self._configure())
        else:
            d = self._send(pb.PING)
        d.addCallbacks(self._probe_answered, self._probe_failed)
        self._flush()

    def _probe_answered(self, response) -> None:
        if self.state != PROBING:
            return
        if response.status != pb.OK:
            log.warn("node {node}: group configuration not applied: {problem}",
                     node=self.name, problem=response.error or pb.Status.Name(response.status))
        # Then what it missed, in a frame of its own sent once the probe is answered: a
        # node that was stopped may still hold frames of the old connection, which it
        # handles as it resumes, so these come after them. Until they are answered
        # requests keep failing fast; once they are, no copy older than them is left.
        missed = self._returning.on_return(self.name, self._seen_up)
        if not missed:
            self._back()
            return
        ds = [self._send(op, group, key) for op, group, key in missed]
        self._flush()
        DeferredList(ds, consumeErrors=True).addCallback(self._caught_up, missed)

    def _caught_up(self, results, missed: list) -> None:
        if self.state != PROBING or not all(ok for ok, _ in results):
            self._returning.replay_failed(self.name, missed)
            if self.state == PROBING and self._transport is not None:
                self._close_reason = "could not replay the writes it missed"
                self._transport.abortConnection()
            return
        self._back()

    def _back(self) -> None:
        log.info("node {node} ({address}) is up", node=self.name, address=self.address)
        self._up()

    def _probe_failed(self, failure) -> None:
        if self.state == PROBING and self._transport is not None:
            self._close_reason = f"probe failed: {failure.getErrorMessage()}"
            self._transport.abortConnection()

    def _up(self) -> None:
        self.state = UP
        self._seen_up = True
        self._attempts = 0
        self.down_reason = ""

    def _lost(self, transport, reason: str) -> None:
        if transport is not self._transport:
            return
        self._transport = None
        if self.state != STOPPED:
            why, self._close_reason = self._close_reason, None
            self._mark_down(why or f"connection lost: {reason}")

    # -- requests ----------------------------------------------------------------------

    def configure(self) -> Deferred:
        """Send CONFIGURE with the current group set (also done on every connect).

        Fires with None. Nobody waits on it (connect, reload), so a refusal or a failure
        is logged here rather than left as an unhandled error in a Deferred.
        """
        d = self.request(pb.CONFIGURE, groups=self._configure())
        d.addBoth(self._configured)
        return d

    def _configured(self, result) -> None:
        if isinstance(result, Failure):
            problem = result.getErrorMessage()
        elif result.status != pb.OK:
            problem = result.error or pb.Status.Name(result.status)
        else:
            return
        log.warn("node {node}: group configuration not applied: {problem}",
                 node=self.name, problem=problem)

    def request(self, op: int, group: str = "", key: bytes = b"", value: bytes = b"",
                ttl: float = 0.0, flags: int = 0, groups=None, negative: bool = False,
                keys=None, cas: int = 0, delta: int = 0) -> Deferred:
        state = self.state
        if state is not UP and state is not CONNECTING:
            return fail(NodeUnavailable(self.name, self.down_reason))
        return self._send(op, group, key, value, ttl, flags, groups, negative, keys, cas, delta)

    def send_prepared(self, body: bytes, waiter) -> bool:
        """Send a request whose fields after the id are already encoded (a GetRun's
        GET_MANY); its answer goes to ``waiter.callback(response)`` or its failure to
        ``waiter.errback(error)``. False, sending nothing, while the node is down."""
        state = self.state
        if state is not UP and state is not CONNECTING:
            return False
        rid = self._begin()
        append_prepared(self._frame, rid, body)
        self._pending[rid] = waiter
        self._queued(state)
        return True

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

    def _send(self, op: int, group: str = "", key: bytes = b"", value: bytes = b"",
              ttl: float = 0.0, flags: int = 0, groups=None, negative: bool = False,
              keys=None, cas: int = 0, delta: int = 0) -> Deferred:
        state = self.state
        rid = self._begin()
        append_request(self._frame, rid, op, group, key, value, ttl, flags, negative, keys,
                       encode_groups(groups) if groups else b"", cas, delta)
        d = Deferred()
        self._pending[rid] = d
        self._queued(state)
        return d

    def _queued(self, state: str) -> None:
        """Requests were added to this turn's frame: flush it now if it is big, else once
        at the end of the turn. While connecting, the frame waits for the connection."""
        if state is UP or state is PROBING:
            if len(self._frame) >= FLUSH_BYTES:
                self._flush()
            else:
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_call is None and self._frame_ids:
            self._flush_call = end_of_turn(self.reactor, self._flush)

    def _flush(self) -> None:
        cancel_call(self._flush_call)
        self._flush_call = None
        frame = self._frame
        if not self._frame_ids or self._transport is None:
            return
        if (self._sample_id is None and self._observe_latency is not None
                and not self.frames_sent % SAMPLE_EVERY):
            self._sample_id = self._frame_ids[0]
            self._sample_sent = self.reactor.seconds()
        self._frame = bytearray(HEADER_SIZE)
        self._frame_ids = []
        self.frames_sent += 1
        _HEADER.pack_into(frame, 0, len(frame) - HEADER_SIZE)
        write_now(self._transport, frame)

    def _answered(self, payload: bytes) -> None:
        pending = self._pending
        for response in decode_responses(payload):
            waiter = pending.pop(response.id, None)
            if waiter is not None:
                waiter.callback(response)
        self._timeouts_in_a_row = 0
        if self._sample_id is not None and self._sample_id not in pending:
            self._sample_id = None
            self._observe_latency(self.reactor.seconds() - self._sample_sent)

    def _expire_due(self) -> None:
        self._expiry_call = None
        deadlines = self._deadlines
        now = self.reactor.seconds()
        while deadlines and deadlines[0][0] <= now:
            self._expire(deadlines.popleft()[1])
        if deadlines and self._expiry_call is None:
            self._expiry_call = self.reactor.callLater(deadlines[0][0] - now, self._expire_due)

    def _expire(self, ids: list[int]) -> None:
        pending = self._pending
        if self._sample_id in ids:
            self._sample_id = None
        if ids is self._frame_ids:
            # The batch never left (still connecting). Drop it: its callers are told
            # "unavailable" now, so it must not be acted on later, and the next
            # request must start a batch with a deadline of its own.
            self._frame = bytearray(HEADER_SIZE)
            self._frame_ids = []
        expired = []
        for rid in ids:
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
        if (self._timeouts_in_a_row >= FAILURES_TO_MARK_DOWN and self.state == UP
                and self._transport is not None):
            self._close_reason = f"{self._timeouts_in_a_row} batches in a row timed out"
            self._transport.abortConnection()

    def _fail_all(self, reason: str) -> None:
        cancel_call(self._flush_call)
        self._flush_call = None
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
