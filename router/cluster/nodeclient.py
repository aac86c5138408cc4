"""A persistent connection from the router to one storage node, and its health.

Requests are batched by a RequestBatcher (router/cluster/batcher.py: one frame per
reactor turn, answers matched by id, one deadline per frame, so a node that hangs costs a
client at most ``timeout``). This module keeps the connection: while it is down, requests
fail at once (never queue behind a dead node) and the client reconnects with exponential
backoff and jitter; a node that comes back is probed before it is trusted, and one whose
batches keep timing out is marked down.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from router.cluster.batcher import RequestBatcher
from shared import ringcache_pb2 as pb
from shared.framing import HEADER_SIZE, FrameDecoder, FrameError
from shared.net import cancel_call, whole_answers

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
        self.recent = 0  # bytes of the recent large answers, decaying by 1/8 a read

    def connectionMade(self):
        whole_answers(self.transport)
        self.client._connected(self.transport)

    def dataReceived(self, data: bytes):
        decoder = self.decoder
        decoder.receive_data(data)
        try:
            answered = self.client.batcher.answered
            biggest = 0
            for payload in decoder.frames():
                answered(payload)
                if len(payload) > biggest:
                    biggest = len(payload)
            # Twisted reads bufferSize bytes at a time, and allocates that much for each
            # read: 64 KiB while answers are small, more while a large one is arriving,
            # and as much as the recent large answers while they keep coming (a 100 KB
            # value then arrives in one read, handed on without being gathered first).
            self.recent = max(biggest + HEADER_SIZE, self.recent - (self.recent >> 3))
            self.transport.bufferSize = min(max(decoder.missing, READ_SIZE, self.recent),
                                            READ_MAX)
        except FrameError as exc:  # WireError too: a payload that is not a Frame
            log.error("node {node}: {problem}; closing the connection",
                      node=self.client.name, problem=exc)
            self.transport.abortConnection()

    def connectionLost(self, reason):
        self.client._lost(self.transport, reason.getErrorMessage())


class NodeClient:
    """Requests to one node; ``request`` answers a Deferred firing with a pb.Response, and
    ``send_prepared`` takes the data plane's GET_MANYs (both RequestBatcher's)."""

    # How connections to nodes authenticate: None is plain TCP (the demo on 127.0.0.1,
    # unit tests); else an object whose wrap(endpoint, host) answers the endpoint to
    # connect through, firing only once the node is authenticated. The router's main
    # sets it for every client from topology.security (router.process.security.NodeCredentials).
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
        self.batcher = RequestBatcher(name, reactor, timeout, self._timed_out, observe_latency)
        # The hot path calls these straight: no state check of ours in between, since the
        # batcher is told (``open``) whether the node takes requests.
        self.request = self.batcher.request
        self.send_prepared = self.batcher.send_prepared
        # Returns the GroupConfig list to send as CONFIGURE on every (re)connect.
        self._configure = configure
        # What the node is sent when it comes back, before it serves again: the writes
        # it missed meanwhile (router/cluster/hints.py).
        self._returning = returning or NothingMissed()
        self._seen_up = False  # whether this client ever had the node up
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._state = CONNECTING
        self._transport = None
        self._attempts = 0
        self._unreported = False  # down since start, and not logged yet
        self._retry_call = None
        # Whether the node answers leases (LEASE_GET): a node of an older release does not,
        # and its keys are read through the way it knows (router/cluster/leases.py).
        self.leases = True
        self._told_no_leases = False
        # Counters for stats.
        self.connects = 0
        self.marked_down = 0
        self.probes = 0
        self._close_reason: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def lacks_leases(self) -> None:
        """The node answered a LEASE_GET UNKNOWN_OP: read through it as before leases
        until it reconnects (it may come back upgraded). Logged once."""
        self.leases = False
        if not self._told_no_leases:
            self._told_no_leases = True
            log.warn("node {node} ({address}) does not know leases (an older release): its "
                     "keys' loads are coalesced per router process only, and a write during "
                     "a load may be overwritten by the load, until it is upgraded",
                     node=self.name, address=self.address)

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        # Requests are taken while the node is up, and queue while the first connection
        # is made; in any other state they fail at once.
        self._state = state
        self.batcher.open = state == UP or state == CONNECTING

    @property
    def down_reason(self) -> str:
        return self.batcher.refusal

    @down_reason.setter
    def down_reason(self, reason: str) -> None:
        self.batcher.refusal = reason

    @property
    def timeout(self) -> float:
        return self.batcher.timeout

    @timeout.setter
    def timeout(self, timeout: float) -> None:  # a reload may change it
        self.batcher.timeout = timeout

    # The batcher's counters, for stats.
    requests = property(lambda self: self.batcher.requests)
    timeouts = property(lambda self: self.batcher.timeouts)
    frames_sent = property(lambda self: self.batcher.frames_sent)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._connect()

    def stop(self) -> None:
        self.state = STOPPED
        cancel_call(self._retry_call)
        self._retry_call = None
        transport, self._transport = self._transport, None
        self.batcher.transport = None
        self.batcher.fail_all("router is shutting down")
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
        self.batcher.fail_all(reason)
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
        self.leases = True
        self._transport = self.batcher.transport = transport
        self.batcher.connected()
        if self.state == CONNECTING:
            # The first connection is trusted at once, and whatever queued while it
            # was being made goes out right behind CONFIGURE.
            self._up()
            self.batcher.first(self.configure if self._configure is not None else _nothing)
            return
        # A node coming back must prove it answers: a stopped (SIGSTOP) process still
        # accepts TCP connections through the kernel's backlog. CONFIGURE (PING for a
        # client with no groups to configure) is the probe;
        # requests keep failing fast until it is answered.
        self.state = PROBING
        self.probes += 1
        send = self.batcher.send
        if self._configure is not None:
            d = send(pb.CONFIGURE, groups=self._configure())
        else:
            d = send(pb.PING)
        d.addCallbacks(self._probe_answered, self._probe_failed)
        self.batcher.flush()

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
        ds = [self.batcher.send(op, group, key) for op, group, key in missed]
        self.batcher.flush()
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
        self._transport = self.batcher.transport = None
        if self.state != STOPPED:
            why, self._close_reason = self._close_reason, None
            self._mark_down(why or f"connection lost: {reason}")

    def _timed_out(self, in_a_row: int) -> None:
        """A batch timed out (RequestBatcher): a node that holds its connection open but
        does not answer (hung, SIGSTOPped, overloaded) is marked down after a few."""
        if (in_a_row >= FAILURES_TO_MARK_DOWN and self.state == UP
                and self._transport is not None):
            self._close_reason = f"{in_a_row} batches in a row timed out"
            self._transport.abortConnection()

    # -- groups ------------------------------------------------------------------------

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


def _nothing() -> None:
    pass
