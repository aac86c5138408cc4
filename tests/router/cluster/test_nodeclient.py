"""NodeClient on a MemoryReactorClock: batching, CONFIGURE order, id matching, timeouts, backoff."""

from __future__ import annotations

import gc
import random

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from router.cluster import nodeclient
from router.cluster.batcher import FLUSH_BYTES, SAMPLE_EVERY
from router.cluster.errors import NodeUnavailable
from router.cluster.nodeclient import (
    REPORT_AFTER_ATTEMPTS,
    CONNECTING,
    DOWN,
    PROBING,
    STOPPED,
    UP,
    NodeClient,
)
from shared import ringcache_pb2 as pb
from shared.framing import FrameDecoder, decode_payload, encode_batch
from tests.helpers import outcomes

# HostnameEndpoint tries one address per tick of this length and reports a refusal on
# the tick after the last attempt.
ATTEMPT_DELAY = 0.3
GROUPS = [pb.GroupConfig(name="scores", policy="lru", max_bytes=1 << 20)]


class Jitter(random.Random):
    """A Random whose random() answers the given values in turn."""

    def __init__(self, values):
        super().__init__(0)
        self.values = iter(values)

    def random(self):
        return next(self.values)


class Peer:
    """The node's end of one connection the client made: reads its frames, answers them."""

    def __init__(self, reactor: MemoryReactorClock, attempt: int = -1):
        host, port, factory, _, _ = reactor.tcpClients[attempt]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def frames(self) -> list[pb.Frame]:
        decoder = FrameDecoder()
        decoder.receive_data(self.transport.value())
        self.transport.clear()
        return [decode_payload(p) for p in decoder.frames()]

    def answer(self, *responses: pb.Response) -> None:
        self.protocol.dataReceived(encode_batch(responses=responses))

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone("closed by peer")))


def refuse(reactor: MemoryReactorClock, attempt: int = -1) -> None:
    factory = reactor.tcpClients[attempt][2]
    factory.clientConnectionFailed(reactor.connectors[attempt], Failure(ConnectionRefusedError()))
    reactor.advance(ATTEMPT_DELAY)


def make_client(reactor, **kwargs) -> NodeClient:
    kwargs.setdefault("timeout", 0.5)
    client = NodeClient("node-a", "127.0.0.1", 7001, reactor, **kwargs)
    client.start()
    return client


def ops(frame: pb.Frame) -> list[tuple[int, int, bytes]]:
    return [(r.id, r.op, r.key) for r in frame.requests]


@pytest.fixture
def reactor():
    return MemoryReactorClock()


@pytest.fixture
def connected(reactor):
    client = make_client(reactor)
    peer = Peer(reactor)
    assert client.state == UP
    return client, peer


def test_connects_to_the_address_directly(reactor):
    client = make_client(reactor)
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("127.0.0.1", 7001)]
    assert client.state == CONNECTING
    Peer(reactor)
    assert (client.state, client.connects) == (UP, 1)


def test_requests_of_one_turn_go_out_as_one_frame(reactor, connected):
    client, peer = connected
    for key in (b"a", b"b", b"c"):
        client.request(pb.GET, "scores", key)
    assert peer.transport.value() == b""  # nothing before the turn ends
    reactor.advance(0)
    [frame] = peer.frames()
    assert ops(frame) == [(1, pb.GET, b"a"), (2, pb.GET, b"b"), (3, pb.GET, b"c")]
    assert all(r.group == "scores" for r in frame.requests)
    client.request(pb.DELETE, "scores", b"d")
    reactor.advance(0)
    assert [ops(f) for f in peer.frames()] == [[(4, pb.DELETE, b"d")]]
    assert (client.frames_sent, client.requests) == (2, 4)


def test_request_fields_reach_the_wire(reactor, connected):
    client, peer = connected
    client.request(pb.SET, "scores", b"k", b"value", ttl=2.5, flags=7)
    client.request(pb.TOUCH, "scores", b"k", ttl=None)
    reactor.advance(0)
    [frame] = peer.frames()
    first, second = frame.requests
    assert (first.value, first.ttl, first.flags) == (b"value", 2.5, 7)
    assert (second.op, second.ttl) == (pb.TOUCH, 0.0)


def test_configure_leads_the_first_frame(reactor):
    client = make_client(reactor, configure=lambda: GROUPS)
    queued = [client.request(pb.GET, "scores", k) for k in (b"x", b"y")]
    reactor.advance(0)
    peer = Peer(reactor)
    reactor.advance(0)
    [frame] = peer.frames()
    assert ops(frame) == [(3, pb.CONFIGURE, b""), (1, pb.GET, b"x"), (2, pb.GET, b"y")]
    assert list(frame.requests[0].groups) == GROUPS
    got = [outcomes(d) for d in queued]
    peer.answer(pb.Response(id=2, status=pb.NOT_FOUND), pb.Response(id=1, value=b"1"))
    assert [g[0].value for g in got] == [b"1", b""]


def test_configure_is_sent_again_on_every_reconnect(reactor):
    client = make_client(reactor, configure=lambda: GROUPS, rng=Jitter([0.0]),
                         backoff_initial=0.25)
    peer = Peer(reactor)
    reactor.advance(0)
    assert [ops(f) for f in peer.frames()] == [[(1, pb.CONFIGURE, b"")]]
    peer.lose()
    reactor.advance(0.125)
    peer = Peer(reactor)
    reactor.advance(0)
    assert [ops(f) for f in peer.frames()] == [[(2, pb.CONFIGURE, b"")]]
    assert client.connects == 2


@pytest.mark.parametrize("fate, logged", [
    ("ok", []),
    ("refused", ["node node-a: group configuration not applied: policy 'mru' is unknown"]),
    ("lost", ["node node-a (127.0.0.1:7001) is down: connection lost: "
              "Connection was closed cleanly: closed by peer.",
              "node node-a: group configuration not applied: node node-a unavailable: "
              "connection lost: Connection was closed cleanly: closed by peer."]),
])
def test_configure_outcome_is_logged_not_left_unhandled(reactor, fate, logged):
    make_client(reactor, configure=lambda: GROUPS)
    with capturedLogs() as events:
        peer = Peer(reactor)
        reactor.advance(0)
        if fate == "lost":
            peer.lose()
        else:
            status = pb.OK if fate == "ok" else pb.ERROR
            peer.answer(pb.Response(id=1, status=status, error="policy 'mru' is unknown"))
        gc.collect()  # an unhandled failure would be logged when its Deferred is collected
    assert [formatEvent(e) for e in events] == logged


def test_answers_out_of_order_are_matched_by_id(reactor, connected):
    client, peer = connected
    got = [outcomes(client.request(pb.GET, "scores", k)) for k in (b"a", b"b", b"c")]
    reactor.advance(0)
    peer.answer(pb.Response(id=3, value=b"C"))
    peer.answer(pb.Response(id=1, value=b"A"), pb.Response(id=2, status=pb.NOT_FOUND))
    assert [(g[0].id, g[0].status, g[0].value) for g in got] == [
        (1, pb.OK, b"A"), (2, pb.NOT_FOUND, b""), (3, pb.OK, b"C")]
    # An answer for an unknown id is ignored.
    peer.answer(pb.Response(id=99, value=b"?"))


def test_a_batch_answered_in_several_frames_fails_only_what_is_left_at_its_deadline(
        reactor, connected):
    # A node ends an answer frame past 64 KiB and sends the rest in frames of their own:
    # each answer is handed on as its frame arrives, and the batch's deadline fails only
    # the requests still unanswered.
    client, peer = connected
    got = [outcomes(client.request(pb.GET, "scores", k)) for k in (b"a", b"b", b"c")]
    reactor.advance(0)
    assert len(peer.frames()) == 1
    peer.answer(pb.Response(id=1, value=b"A"))
    assert [len(g) for g in got] == [1, 0, 0]
    peer.answer(pb.Response(id=2, value=b"B"))
    reactor.advance(0.5)
    assert got[1][0].value == b"B" and got[2][0].check(NodeUnavailable)
    assert client.timeouts == 1


def test_answers_split_across_reads(reactor, connected):
    client, peer = connected
    got = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0)
    data = encode_batch(responses=[pb.Response(id=1, value=b"hello")])
    for i in range(len(data)):
        peer.protocol.dataReceived(data[i:i + 1])
    assert got[0].value == b"hello"


def test_unanswered_request_fails_exactly_at_the_deadline(reactor, connected):
    client, peer = connected
    got = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0)
    reactor.advance(0.499)
    assert got == []
    reactor.advance(0.001)
    [failure] = got
    assert failure.check(NodeUnavailable)
    assert str(failure.value) == "node node-a unavailable: no answer within 500ms"
    assert client.timeouts == 1
    # The late answer is dropped; the connection stays up for the next request.
    peer.answer(pb.Response(id=1, value=b"late"))
    assert len(got) == 1 and client.state == UP
    later = outcomes(client.request(pb.GET, "scores", b"b"))
    reactor.advance(0)
    peer.answer(pb.Response(id=2, value=b"fresh"))
    assert later[0].value == b"fresh"


def test_each_batch_has_its_own_deadline(reactor, connected):
    client, peer = connected
    first = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0.25)
    second = outcomes(client.request(pb.GET, "scores", b"b"))
    reactor.advance(0.25)
    assert len(first) == 1 and second == []
    reactor.advance(0.25)
    assert len(second) == 1 and client.timeouts == 2


def test_request_queued_while_connecting_times_out(reactor):
    client = make_client(reactor, timeout=0.25)
    first = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0.25)
    assert first[0].check(NodeUnavailable)
    # Still connecting: a request made now gets a deadline of its own.
    second = outcomes(client.request(pb.GET, "scores", b"b"))
    reactor.advance(0.25)
    assert second[0].check(NodeUnavailable)
    assert client.timeouts == 2
    # Requests whose callers were already told "unavailable" are never sent.
    peer = Peer(reactor)
    third = outcomes(client.request(pb.GET, "scores", b"c"))
    reactor.advance(0)
    assert [ops(f) for f in peer.frames()] == [[(3, pb.GET, b"c")]]
    assert third == []


def test_connection_lost_fails_everything_pending(reactor, connected):
    client, peer = connected
    sent = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0)
    unsent = outcomes(client.request(pb.GET, "scores", b"b"))
    peer.lose()
    assert client.state == DOWN
    reason = "connection lost: Connection was closed cleanly: closed by peer."
    assert client.down_reason == reason
    for got in (sent, unsent):
        assert got[0].check(NodeUnavailable)
        assert got[0].value.reason == reason
    # While down, requests fail at once instead of queueing behind a dead node.
    now = outcomes(client.request(pb.GET, "scores", b"c"))
    assert str(now[0].value) == f"node node-a unavailable: {reason}"
    assert client.requests == 2


def test_refused_connection_fails_queued_requests(reactor):
    client = make_client(reactor)
    queued = outcomes(client.request(pb.GET, "scores", b"a"))
    refuse(reactor)
    assert client.state == DOWN
    assert client.down_reason.startswith("connect failed: Connection was refused")
    assert queued[0].check(NodeUnavailable)


def test_a_node_not_reached_since_start_is_logged_down_only_after_a_few_tries(reactor):
    client = make_client(reactor, rng=Jitter([1.0] * REPORT_AFTER_ATTEMPTS))
    with capturedLogs() as events:
        for attempt in range(REPORT_AFTER_ATTEMPTS):
            assert [formatEvent(e) for e in events] == []  # it may be starting beside us
            refuse(reactor)
            reactor.advance(60)
    assert [formatEvent(e) for e in events] == [
        "node node-a (127.0.0.1:7001) is down: connect failed: Connection was refused by "
        "other side."]
    assert client.marked_down == 1


def test_a_node_that_was_up_is_logged_down_at_once_and_not_on_shutdown(reactor, connected):
    client, peer = connected
    with capturedLogs() as events:
        peer.lose()
    assert [formatEvent(e) for e in events] == [
        "node node-a (127.0.0.1:7001) is down: connection lost: Connection was closed "
        "cleanly: closed by peer."]
    reactor.advance(60)
    peer = Peer(reactor)
    [probe] = peer.frames()[0].requests
    peer.answer(pb.Response(id=probe.id))
    with capturedLogs() as events:
        client.stop()
    assert [formatEvent(e) for e in events] == []


def test_reconnect_backoff_grows_capped_with_jitter(reactor):
    client = make_client(reactor, backoff_initial=0.25, backoff_max=1.5,
                         rng=Jitter([0.0, 0.5, 0.0, 0.5, 0.0, 0.5]))
    # delay = min(max, initial * 2**attempt) * (0.5 + random() / 2)
    for delay in (0.125, 0.375, 0.5, 1.125, 0.75):
        refuse(reactor)
        assert client.state == DOWN
        [retry] = [c for c in reactor.getDelayedCalls() if c.func == client._connect]
        assert retry.getTime() == reactor.seconds() + delay
        attempts = len(reactor.tcpClients)
        reactor.advance(delay)
        assert len(reactor.tcpClients) == attempts + 1
        assert client.state == DOWN  # still failing fast while it reconnects
    # A success (connected and the probe answered) resets the backoff: the next loss
    # waits the initial delay again.
    peer = Peer(reactor)
    [probe] = peer.frames()[0].requests
    peer.answer(pb.Response(id=probe.id))
    assert client.state == UP
    peer.lose()
    [retry] = [c for c in reactor.getDelayedCalls() if c.func == client._connect]
    assert retry.getTime() == reactor.seconds() + 0.25 * 0.75


def test_large_values_flush_early(reactor, connected):
    client, peer = connected
    half = b"v" * (FLUSH_BYTES // 2 - 1)
    client.request(pb.SET, "scores", b"1", half)
    assert peer.transport.value() == b""
    client.request(pb.SET, "scores", b"2", half)  # keys and values now reach FLUSH_BYTES
    assert [ops(f) for f in peer.frames()] == [[(1, pb.SET, b"1"), (2, pb.SET, b"2")]]
    client.request(pb.GET, "scores", b"3")
    reactor.advance(0)
    assert [ops(f) for f in peer.frames()] == [[(3, pb.GET, b"3")]]
    assert client.frames_sent == 2


def test_latency_is_sampled_from_flush_to_answer(reactor):
    seen = []
    client = make_client(reactor, observe_latency=seen.append)
    peer = Peer(reactor)
    client.request(pb.GET, "scores", b"a")
    reactor.advance(0)
    client.request(pb.GET, "scores", b"b")  # a second batch while the probe is out
    reactor.advance(0.25)
    peer.answer(pb.Response(id=2))
    assert seen == []
    reactor.advance(0.125)
    peer.answer(pb.Response(id=1))
    assert seen == [0.375]


def test_one_frame_in_sample_every_is_timed(reactor):
    seen = []
    client = make_client(reactor, observe_latency=seen.append)
    peer = Peer(reactor)
    for i in range(1, 2 * SAMPLE_EVERY + 1):
        client.request(pb.GET, "scores", b"k")
        reactor.advance(0)
        peer.answer(pb.Response(id=i))
    assert len(seen) == 2  # frames 1 and SAMPLE_EVERY + 1


def test_undecodable_frame_closes_the_connection(reactor, connected):
    client, peer = connected
    got = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0)
    peer.protocol.dataReceived(b"\xff\xff\xff\xff")  # announces a frame over MAX_FRAME
    assert peer.transport.disconnecting
    peer.lose()
    assert got[0].check(NodeUnavailable) and client.state == DOWN


def test_stop_fails_pending_and_stops_reconnecting(reactor, connected):
    client, peer = connected
    got = outcomes(client.request(pb.GET, "scores", b"a"))
    reactor.advance(0)
    client.stop()
    assert client.state == STOPPED
    assert str(got[0].value) == "node node-a unavailable: router is shutting down"
    assert peer.transport.disconnecting
    peer.lose()  # the transport reports the close it was asked for
    reactor.advance(60)
    assert len(reactor.tcpClients) == 1
    assert outcomes(client.request(pb.GET, "scores", b"b"))[0].check(NodeUnavailable)


def test_stop_while_down_cancels_the_retry(reactor):
    client = make_client(reactor, rng=Jitter([0.0]))
    refuse(reactor)
    assert [c.func for c in reactor.getDelayedCalls()] == [client._connect]
    client.stop()
    assert reactor.getDelayedCalls() == []
    reactor.advance(60)
    assert len(reactor.tcpClients) == 1


def test_connection_made_after_stop_is_closed(reactor):
    client = make_client(reactor)
    client.stop()
    peer = Peer(reactor)
    assert peer.transport.disconnecting
    assert client.state == STOPPED


def lose_and_reconnect(reactor, client, peer) -> Peer:
    """Drop ``peer``'s connection, let the backoff pass, and accept the reconnect."""
    peer.lose()
    assert client.state == DOWN
    [retry] = [c for c in reactor.getDelayedCalls() if c.func == client._connect]
    reactor.advance(retry.getTime() - reactor.seconds())
    return Peer(reactor)


def test_a_returning_node_must_answer_a_probe_before_taking_requests(reactor):
    client = make_client(reactor, configure=lambda: GROUPS)
    peer = Peer(reactor)
    peer.frames()
    peer = lose_and_reconnect(reactor, client, peer)
    # TCP accepted (a SIGSTOPped node's kernel does that too): not up yet.
    assert client.state == PROBING
    [frame] = peer.frames()
    [probe] = frame.requests
    assert probe.op == pb.CONFIGURE and list(probe.groups) == GROUPS
    refused = outcomes(client.request(pb.GET, "scores", b"k"))
    assert refused[0].check(NodeUnavailable)
    peer.answer(pb.Response(id=probe.id))
    assert client.state == UP
    served = outcomes(client.request(pb.GET, "scores", b"k"))
    reactor.advance(0)
    [request] = peer.frames()[0].requests
    peer.answer(pb.Response(id=request.id, status=pb.NOT_FOUND))
    assert served[0].status == pb.NOT_FOUND


def test_an_unanswered_probe_drops_the_connection_and_backs_off(reactor, connected):
    client, peer = connected
    peer.frames()
    peer = lose_and_reconnect(reactor, client, peer)
    assert client.state == PROBING
    [probe] = peer.frames()[0].requests
    assert probe.op == pb.PING  # no groups to configure: a plain PING
    reactor.advance(0.5)  # the probe's deadline
    assert peer.transport.disconnecting or peer.transport.disconnected
    peer.lose()
    assert client.state == DOWN
    assert client.down_reason.startswith("probe failed: node node-a unavailable: no answer")
    assert [c for c in reactor.getDelayedCalls() if c.func == client._connect]


def test_three_timed_out_batches_in_a_row_mark_a_hung_node_down(reactor, connected):
    client, peer = connected
    peer.frames()
    for i in range(nodeclient.FAILURES_TO_MARK_DOWN):
        assert client.state == UP
        outcomes(client.request(pb.GET, "scores", b"k%d" % i))
        reactor.advance(0)
        reactor.advance(0.5)
    assert peer.transport.disconnecting or peer.transport.disconnected
    peer.lose()
    assert client.state == DOWN
    assert client.down_reason == "3 batches in a row timed out"
    assert client.marked_down == 1


def test_an_answer_resets_the_count_of_timeouts_in_a_row(reactor, connected):
    client, peer = connected
    peer.frames()
    for round_ in range(3):
        for i in range(nodeclient.FAILURES_TO_MARK_DOWN - 1):
            outcomes(client.request(pb.GET, "scores", b"k"))
            reactor.advance(0)
            reactor.advance(0.5)
        peer.frames()
        answered = outcomes(client.request(pb.GET, "scores", b"k"))
        reactor.advance(0)
        [request] = peer.frames()[0].requests
        peer.answer(pb.Response(id=request.id, status=pb.NOT_FOUND))
        assert answered[0].status == pb.NOT_FOUND
    assert client.state == UP


def test_a_multi_get_is_one_request_carrying_its_keys(reactor, connected):
    client, peer = connected
    got = outcomes(client.request(pb.GET_MANY, "scores", keys=[b"a", b"b", b"c"]))
    single = outcomes(client.request(pb.GET, "scores", b"d"))
    reactor.advance(0)
    [frame] = peer.frames()
    many, one = frame.requests
    assert (many.op, many.group, list(many.keys)) == (pb.GET_MANY, "scores", [b"a", b"b", b"c"])
    assert (one.op, list(one.keys)) == (pb.GET, [])
    peer.answer(pb.Response(id=many.id, values=[b"\x00A", b"", b"\x00C"]))
    assert [list(r.values) for r in got] == [[b"\x00A", b"", b"\x00C"]]
    assert single == []


class Missed:
    """A returning hook that hands back a fixed list once, and records failed replays."""

    def __init__(self, requests):
        self.requests, self.calls, self.failed = requests, [], []

    def on_return(self, node, seen_up):
        self.calls.append((node, seen_up))
        requests, self.requests = self.requests, []
        return requests

    def replay_failed(self, node, requests):
        self.failed.append((node, requests))


def test_a_returning_node_is_sent_what_it_missed_after_its_probe_before_it_is_up(reactor):
    missed = Missed([(pb.DELETE, "sessions", b"k1"), (pb.FLUSH_GROUP, "carts", b"")])
    client = make_client(reactor, configure=lambda: GROUPS, returning=missed)
    peer = Peer(reactor)
    reactor.advance(0)
    [first] = peer.frames()
    # The first connection is trusted: nothing is replayed.
    assert [r.op for r in first.requests] == [pb.CONFIGURE]
    assert missed.calls == []
    peer = lose_and_reconnect(reactor, client, peer)
    [probe] = peer.frames()
    assert [r.op for r in probe.requests] == [pb.CONFIGURE]
    peer.answer(*(pb.Response(id=r.id) for r in probe.requests))
    assert missed.calls == [("node-a", True)]
    reactor.advance(0)
    [frame] = peer.frames()  # a frame of its own, after the probe's answer
    assert [(r.op, r.group, r.key) for r in frame.requests] == [
        (pb.DELETE, "sessions", b"k1"), (pb.FLUSH_GROUP, "carts", b"")]
    assert client.state == PROBING
    peer.answer(*(pb.Response(id=r.id) for r in frame.requests))
    assert client.state == UP


def test_a_replay_cut_off_is_handed_back_for_the_next_return(reactor):
    missed = Missed([(pb.DELETE, "sessions", b"k1")])
    client = make_client(reactor, configure=lambda: GROUPS, returning=missed)
    peer = Peer(reactor)
    reactor.advance(0)
    peer.frames()
    peer = lose_and_reconnect(reactor, client, peer)
    [probe] = peer.frames()
    peer.answer(*(pb.Response(id=r.id) for r in probe.requests))
    reactor.advance(0)
    peer.frames()
    peer.lose()
    assert missed.failed == [("node-a", [(pb.DELETE, "sessions", b"k1")])]
    assert client.state == DOWN

# -- requests that may wait at the node (leases) ------------------------------------------------


def test_a_request_that_may_wait_has_its_own_deadline_beyond_its_frames(reactor, connected):
    client, peer = connected
    waiting = outcomes(client.request(pb.LEASE_GET, "scores", b"k", lease_ttl=4.0, wait=8.0))
    plain = outcomes(client.request(pb.GET, "scores", b"j"))
    reactor.advance(0)
    [frame] = peer.frames()
    assert (frame.requests[0].op, frame.requests[0].lease_ttl) == (pb.LEASE_GET, 4.0)
    reactor.advance(0.5)
    assert len(plain) == 1 and waiting == []  # the frame's deadline passed: not its own
    reactor.advance(7.5)
    assert waiting == []
    reactor.advance(0.5)
    [failure] = waiting
    assert str(failure.value) == "node node-a unavailable: no answer within 8500ms"
    assert client.timeouts == 2 and client.state == UP


def test_a_waiting_request_answered_in_time_cancels_its_deadline(reactor, connected):
    client, peer = connected
    waiting = outcomes(client.request(pb.LEASE_GET, "scores", b"k", lease_ttl=4.0, wait=8.0))
    reactor.advance(0)
    peer.frames()
    reactor.advance(3)
    peer.answer(pb.Response(id=1, value=b"filled elsewhere"))
    assert waiting[0].value == b"filled elsewhere"
    assert all(c.func.__name__ != "_expire_patient" for c in reactor.getDelayedCalls())
    reactor.advance(10)
    assert client.timeouts == 0


def test_waiting_requests_fail_with_their_connection(reactor, connected):
    client, peer = connected
    waiting = outcomes(client.request(pb.LEASE_GET, "scores", b"k", lease_ttl=4.0, wait=8.0))
    reactor.advance(0)
    peer.lose()
    [failure] = waiting
    assert failure.check(NodeUnavailable)
    assert all(c.func.__name__ != "_expire_patient" for c in reactor.getDelayedCalls())


def test_a_node_without_leases_is_logged_once_and_asked_again_after_a_reconnect(reactor, connected):
    client, peer = connected
    with capturedLogs() as events:
        client.lacks_leases()
        client.lacks_leases()
    [event] = events
    assert "does not know leases" in formatEvent(event)
    assert client.leases is False
    peer.lose()
    reactor.advance(1)
    Peer(reactor)
    assert client.leases is True  # it may have come back upgraded
