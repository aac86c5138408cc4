"""The memcached front end's bounds, over StringTransport with a fake clock: the connection cap,
idle and half-sent-command timeouts, answers a client does not read, half-close, duplicate
and too many keys in one get, answers too big to hold, and writes whose outcome is unknown."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from router.cluster.errors import NodeTimeout, NodeUnavailable
from router.config.topology import LimitsConfig
from router.memcache.server import MemcacheFactory
from router.memcache.keys import MAX_KEYS_PER_GET
from router.memcache.text_commands import MAX_GET_ANSWER
from shared import entry
from shared import ringcache_pb2 as pb
from tests.fakes import FakeMemcacheRouter, PlaneConn
from tests.helpers import CountingTransport


class Listener:
    """A factory with ``limits`` and the connections a test opens on it: on a fake router,
    or (``plane``) on a real Router whose node, a PlaneClient, answers the data plane."""

    def __init__(self, fd_limit=None, plane=False, **limits):
        if plane:
            self.router = PlaneConn(groups={"scores": {}, "sessions": {}}).router
            self.clock = self.router.reactor
        else:
            self.clock = Clock()
            self.router = FakeMemcacheRouter()
        self.factory = MemcacheFactory(self.router, self.clock, LimitsConfig(**limits), fd_limit)

    def node(self):
        return self.router.clients["node-a"]

    def answer(self, **entries) -> None:
        """The node answers every GET_MANY waiting from ``entries`` (key -> entry)."""
        self.node().answer_prepared(lambda request: pb.Response(
            values=[entries.get(k.decode(), b"") for k in request.keys]))

    def requested(self) -> list:
        """The keys of each GET_MANY waiting, as lists."""
        return [list(request.keys) for request, _ in self.node().prepared]

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = CountingTransport()
        protocol.makeConnection(transport)
        return protocol, transport


def test_past_the_connection_cap_a_client_is_told_why_and_closed():
    listener = Listener(max_connections=2)
    kept = [listener.connect() for _ in range(2)]
    with capturedLogs() as events:
        refused = [listener.connect() for _ in range(50)]
    for _, transport in refused:
        assert transport.value() == b"SERVER_ERROR too many connections\r\n"
        assert transport.disconnecting
    assert listener.factory.bounds.refused == 50
    # One log line for the burst, not one per refusal; the next carries the count.
    assert len(events) == 1
    listener.clock.advance(10)
    with capturedLogs() as events:
        listener.connect()
    assert [e["text"] for e in events] == [
        "refused a new connection: 2 memcached clients open, the limit "
        "(49 more like it in the last 10s not logged)"]
    # A slot that frees up is taken again.
    kept[0][0].connectionLost(None)
    protocol, transport = listener.connect()
    assert not transport.disconnecting


def test_the_cap_is_lowered_to_what_the_descriptor_limit_allows():
    with capturedLogs() as events:
        listener = Listener(fd_limit=3, max_connections=4096)
    assert listener.factory.bounds.limit == 3
    assert formatEvent(events[0]).startswith("limits.max_connections 4096 lowered to 3:")


def test_a_half_sent_command_times_out_and_closes():
    listener = Listener(command_timeout=10)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"set k 0 0 1000\r\n" + b"x" * 500)
    listener.clock.advance(9)
    assert not transport.disconnecting
    listener.clock.advance(2)
    assert transport.value() == b"CLIENT_ERROR command not completed within 10s\r\n"
    assert transport.disconnecting
    assert listener.factory.bounds.timed_out == 1


def test_a_refused_value_still_being_discarded_is_mid_command():
    listener = Listener(command_timeout=10)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"set k 0 0 1048576\r\n" + b"x" * 1000)  # over item_size_max
    assert protocol.partial_since is not None
    listener.clock.advance(11)
    assert listener.factory.bounds.timed_out == 1


def test_a_command_line_trickling_in_is_timed_from_its_first_byte():
    listener = Listener(command_timeout=10)
    protocol, transport = listener.connect()
    for _ in range(12):
        protocol.dataReceived(b"g")  # one byte a second never completes a line
        listener.clock.advance(1)
    assert transport.disconnecting


def test_completed_commands_reset_the_command_timer():
    listener = Listener(command_timeout=10)
    protocol, transport = listener.connect()
    for _ in range(30):
        protocol.dataReceived(b"version\r\n")
        listener.clock.advance(1)
    assert not transport.disconnecting


def test_idle_connections_close_only_when_an_idle_timeout_is_set():
    listener = Listener(idle_timeout=60)
    protocol, transport = listener.connect()
    listener.clock.advance(59)
    assert not transport.disconnecting
    listener.clock.advance(2)
    assert transport.disconnecting and transport.value() == b""
    never = Listener()  # the default, as memcached: idle clients stay
    protocol, transport = never.connect()
    never.clock.advance(86400)
    assert not transport.disconnecting


def test_a_connection_waiting_on_its_answers_is_not_idle():
    listener = Listener(idle_timeout=5, plane=True)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"get slow\r\n")
    listener.clock.advance(30)
    assert not transport.disconnecting
    listener.answer(slow=entry.pack(b"v"))
    listener.clock.advance(0)
    assert transport.value() == b"VALUE slow 0 1\r\nv\r\nEND\r\n"
    listener.clock.advance(6)
    assert transport.disconnecting


def test_a_client_that_does_not_read_is_not_read_from():
    listener = Listener(output_buffer=1000, plane=True)
    protocol, transport = listener.connect()
    assert transport.producer is protocol and transport.streaming
    # The transport says its buffer is full (past its 64 KiB): with less than
    # output_buffer queued, reading goes on ...
    transport._tempDataLen = 600  # what Twisted's transports keep unsent
    protocol.pauseProducing()
    assert transport.producerState == "producing"
    # ... and stops once an answer takes what is queued past output_buffer.
    protocol.dataReceived(b"get k\r\n")
    transport._tempDataLen = 1200
    listener.answer(k=entry.pack(b"v"))
    assert transport.producerState == "paused"
    # Everything sent: reading resumes.
    transport._tempDataLen = 0
    protocol.resumeProducing()
    assert transport.producerState == "producing"


def test_half_close_still_answers_everything_received():
    listener = Listener(plane=True)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"set sessions:x 0 0 1\r\na\r\nget sessions:x\r\n")
    protocol.readConnectionLost()
    assert not transport.disconnecting
    [store] = listener.node().take()
    store.answer(cas=1)
    listener.answer(x=entry.pack(b"a"))
    listener.clock.advance(0)
    assert transport.value() == b"STORED\r\nVALUE sessions:x 0 1\r\na\r\nEND\r\n"
    assert transport.disconnecting


def test_half_close_with_nothing_pending_closes_at_once():
    listener = Listener()
    protocol, transport = listener.connect()
    protocol.readConnectionLost()
    assert transport.disconnecting


def test_a_key_named_many_times_is_fetched_once_and_answered_each_time():
    listener = Listener(plane=True)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"get big" + b" big" * 999 + b" other\r\n")
    assert listener.requested() == [[b"big", b"other"]]
    listener.answer(big=entry.pack(b"B"))
    listener.clock.advance(0)
    assert transport.value() == b"VALUE big 0 1\r\nB\r\n" * 1000 + b"END\r\n"


def test_duplicates_across_pipelined_gets_are_fetched_once():
    listener = Listener(plane=True)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"get a\r\nget a b\r\nget b\r\n")
    assert listener.requested() == [[b"a", b"b"]]
    listener.answer(a=entry.pack(b"A"), b=entry.pack(b"B"))
    listener.clock.advance(0)
    assert transport.value() == (b"VALUE a 0 1\r\nA\r\nEND\r\n"
                                 b"VALUE a 0 1\r\nA\r\nVALUE b 0 1\r\nB\r\nEND\r\n"
                                 b"VALUE b 0 1\r\nB\r\nEND\r\n")


def test_too_many_distinct_keys_in_one_get_are_refused():
    listener = Listener(plane=True)
    protocol, transport = listener.connect()
    keys = b" ".join(b"k%d" % i for i in range(MAX_KEYS_PER_GET + 1))
    many = b" ".join([b"same"] * (MAX_KEYS_PER_GET + 1))  # many keys, but one distinct
    protocol.dataReceived(b"get " + keys + b"\r\nget a\r\nget " + many + b"\r\n")
    assert listener.requested() == [[b"a", b"same"]]  # not the first command's keys
    listener.answer()
    listener.clock.advance(0)
    assert transport.value() == (b"CLIENT_ERROR too many keys in one get (at most 4096)\r\n"
                                 b"END\r\nEND\r\n")
    assert listener.router.stats.requests[("memcache", "get", "error")] == 1


def test_an_answer_too_big_to_hold_is_refused_with_memcacheds_words():
    listener = Listener(plane=True)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"get a b\r\n")
    half = entry.pack(b"x" * (MAX_GET_ANSWER // 2 + 1))
    listener.answer(a=half, b=half)
    listener.clock.advance(0)
    assert transport.value() == b"SERVER_ERROR out of memory writing get response\r\n"


def test_a_write_that_timed_out_says_its_outcome_is_unknown():
    listener = Listener(plane=True)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"set k 0 0 1\r\nv\r\ndelete k\r\nset k 0 0 1\r\nv\r\nget k\r\n")
    stored, deleted, refused = listener.node().take()
    stored.d.errback(NodeTimeout("node-a", 0.5))
    deleted.d.errback(NodeTimeout("node-a", 0.5))
    refused.d.errback(NodeUnavailable("node-a", "connection refused"))
    [(_, got)] = listener.node().prepared
    got.errback(NodeTimeout("node-a", 0.5))
    listener.clock.advance(0)
    unknown = (b"SERVER_ERROR node node-a timed out (no answer within 500ms): the outcome is "
               b"unknown, the write may yet be applied\r\n")
    assert transport.value().split(b"\r\n")[:-1] == [
        unknown[:-2], unknown[:-2],
        b"SERVER_ERROR node node-a unavailable: connection refused",
        b"SERVER_ERROR node node-a timed out: no answer within 500ms"]


def test_unfinished_values_past_the_input_budget_wait_while_others_are_served():
    listener = Listener(input_buffer=1000, command_timeout=30)
    holders = [listener.connect() for _ in range(3)]
    for protocol, _ in holders:
        protocol.dataReceived(b"set k 0 0 1000\r\n" + b"x" * 400)
    # The third pushed the total past the budget: it waits; the first two still read.
    states = [transport.producerState for _, transport in holders]
    assert states == ["producing", "producing", "paused"]
    assert listener.factory.held == 1200
    # A client sending whole commands is not held back.
    protocol, transport = listener.connect()
    protocol.dataReceived(b"version\r\n")
    assert transport.value().startswith(b"VERSION ")
    # Once the first finishes its value the total is under 3/4 of the budget again.
    holders[0][0].dataReceived(b"x" * 600 + b"\r\n")
    assert listener.factory.held == 800
    assert holders[2][1].producerState == "paused"
    holders[1][0].connectionLost(None)
    assert listener.factory.held == 400
    assert holders[2][1].producerState == "producing"


def test_one_value_alone_may_exceed_the_input_budget():
    listener = Listener(input_buffer=100)
    protocol, transport = listener.connect()
    protocol.dataReceived(b"set k 0 0 1000\r\n" + b"x" * 500)
    assert transport.producerState == "producing"


def test_reloaded_limits_apply_to_new_connections():
    listener = Listener(max_connections=1)
    listener.connect()
    listener.factory.apply_limits(LimitsConfig(max_connections=2, idle_timeout=5))
    protocol, transport = listener.connect()
    assert not transport.disconnecting
    listener.clock.advance(6)
    assert transport.disconnecting  # the idle timeout came with the reload
