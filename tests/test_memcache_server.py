"""MemcacheProtocol over a StringTransport, against a fake router whose Deferreds the test fires."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from router.core import Item
from router.errors import NodeUnavailable, SourceError, TooLarge, UnknownGroup
from router.memcache_server import (ALREADY_EXPIRED, MAX_OUTSTANDING, VERSION, MemcacheFactory,
                                    cas_token)
from router.stats import RouterStats
from tests.helpers import CountingTransport

NOW = 1_700_000_000.0  # the router's wall clock, for absolute exptimes


class FakeRouter:
    """Records each call as (op, args, Deferred); ``GROUP:KEY`` is in GROUP, others in "default"."""

    item_size_max = 1024

    def __init__(self):
        self.calls: list[tuple[str, tuple, Deferred]] = []
        self.stats = RouterStats()
        self.flight = SimpleNamespace(coalesced=3)
        self.ring = SimpleNamespace(digest="0123456789abcdef")
        self.clients = {"node-a": SimpleNamespace(state="up"),
                        "node-b": SimpleNamespace(state="down")}
        self.clock = lambda: NOW

    def resolve(self, key: bytes) -> tuple[str, bytes]:
        group, sep, rest = key.partition(b":")
        return (group.decode(), rest) if sep else ("default", key)

    def _call(self, op, *args) -> Deferred:
        d = Deferred()
        self.calls.append((op, args, d))
        return d

    def get(self, group, key):
        return self._call("get", group, key)

    def get_many(self, pairs):
        return gatherResults([self.get(g, k) for g, k in pairs], consumeErrors=True)

    def read_many(self, pairs):
        # The core's contract: each key's Item, None or Failure, in order.
        ds = [self.get(g, k) for g, k in pairs]
        return DeferredList(ds, consumeErrors=True).addCallback(
            lambda results: [result for _, result in results])

    def set(self, group, key, value, ttl=None, flags=0):
        return self._call("set", group, key, value, ttl, flags)

    def add(self, group, key, value, ttl=None, flags=0):
        return self._call("add", group, key, value, ttl, flags)

    def replace(self, group, key, value, ttl=None, flags=0):
        return self._call("replace", group, key, value, ttl, flags)

    def delete(self, group, key):
        return self._call("delete", group, key)

    def touch(self, group, key, ttl):
        return self._call("touch", group, key, ttl)

    def ops(self):
        return [(op, args) for op, args, _ in self.calls]

    def deferreds(self):
        return [d for _, _, d in self.calls]


class Conn:
    def __init__(self):
        self.clock = Clock()
        self.router = FakeRouter()
        self.factory = MemcacheFactory(self.router, self.clock)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = CountingTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def turn(self) -> bytes:
        """End the reactor turn; what was written since the last call."""
        self.clock.advance(0)
        out = self.transport.value()
        self.transport.clear()
        return out


@pytest.fixture
def conn():
    return Conn()


def test_pipelined_answers_keep_request_order(conn):
    conn.send(b"get a\r\nget b\r\nget c\r\n")
    assert conn.router.ops() == [("get", ("default", k)) for k in (b"a", b"b", b"c")]
    a, b, c = conn.router.deferreds()
    c.callback(Item(b"C"))
    conn.turn()
    b.callback(None)
    assert conn.turn() == b""  # a still blocks the head of the queue
    a.callback(Item(b"A", 3))
    assert conn.turn() == b"VALUE a 3 1\r\nA\r\nEND\r\nEND\r\nVALUE c 0 1\r\nC\r\nEND\r\n"
    assert conn.transport.writes == 1


def test_one_write_per_turn(conn):
    conn.send(b"version\r\nget a\r\nbogus\r\nget b\r\n")
    # The answer ready at the head goes out at once; the unknown command waits behind a.
    assert conn.turn() == b"VERSION %b\r\n" % VERSION.encode()
    assert conn.transport.writes == 1
    a, b = conn.router.deferreds()
    a.callback(None)
    b.callback(Item(b"B"))
    assert conn.turn() == b"END\r\nERROR\r\nVALUE b 0 1\r\nB\r\nEND\r\n"
    assert conn.transport.writes == 2


def test_immediate_answers_are_written_at_the_end_of_the_read(conn):
    conn.send(b"version\r\nversion\r\nnope\r\n")
    assert conn.transport.value() == b"VERSION %b\r\n" % VERSION.encode() * 2 + b"ERROR\r\n"
    assert conn.transport.writes == 1


def test_answers_ready_in_one_turn_share_one_write(conn):
    conn.send(b"get a\r\nget b\r\nget c\r\n")
    for d in conn.router.deferreds():
        d.callback(None)
    assert conn.turn() == b"END\r\n" * 3
    assert conn.transport.writes == 1


def test_value_line_uses_the_client_key(conn):
    conn.send(b"get sessions:u1\r\n")
    [(op, args, d)] = conn.router.calls
    assert (op, args) == ("get", ("sessions", b"u1"))
    d.callback(Item(b"hello", 9))
    assert conn.turn() == b"VALUE sessions:u1 9 5\r\nhello\r\nEND\r\n"


def test_multi_get_answers_only_hits(conn):
    conn.send(b"get a b c\r\n")
    assert [args for _, args in conn.router.ops()] == [("default", b"a"), ("default", b"b"),
                                                       ("default", b"c")]
    a, b, c = conn.router.deferreds()
    c.callback(Item(b"3"))
    b.callback(None)
    a.callback(Item(b"1", 1))
    assert conn.turn() == b"VALUE a 1 1\r\n1\r\nVALUE c 0 1\r\n3\r\nEND\r\n"
    requests = conn.router.stats.requests
    assert requests[("memcache", "get", "hit")] == 2
    assert requests[("memcache", "get", "miss")] == 1


def test_multi_get_failure_answers_the_first_error(conn):
    conn.send(b"get a b\r\n")
    a, b = conn.router.deferreds()
    a.callback(Item(b"1"))
    b.errback(SourceError("python:m:f", "database is on fire"))
    assert conn.turn() == b"SERVER_ERROR source python:m:f failed: database is on fire\r\n"


def test_gets_includes_a_cas_token(conn):
    conn.send(b"gets k\r\n")
    conn.router.deferreds()[0].callback(Item(b"v"))
    token = cas_token(b"v")
    assert conn.turn() == b"VALUE k 0 1 %d\r\nv\r\nEND\r\n" % token
    assert token > 0 and token != cas_token(b"w")


def test_noreply_writes_nothing(conn):
    conn.send(b"set a 0 0 1 noreply\r\nx\r\ndelete b noreply\r\ntouch c 10 noreply\r\n"
              b"add d 0 0 1 noreply\r\ny\r\nget e\r\n")
    assert [op for op, _ in conn.router.ops()] == ["set", "delete", "touch", "add", "get"]
    stored, deleted, touched, added, got = conn.router.deferreds()
    stored.callback(True)
    deleted.callback(False)
    touched.errback(NodeUnavailable("node-a", "down"))
    added.callback(False)
    got.callback(None)
    assert conn.turn() == b"END\r\n"


@pytest.mark.parametrize("error, line", [
    (NodeUnavailable("node-a", "connection lost:\nreset by peer"),
     b"SERVER_ERROR node node-a unavailable: connection lost: reset by peer\r\n"),
    (SourceError("python:m:f", "ValueError: bad"),
     b"SERVER_ERROR source python:m:f failed: ValueError: bad\r\n"),
    (UnknownGroup("nope"), b"SERVER_ERROR unknown group 'nope'\r\n"),
    (TooLarge("value of 2000 bytes is over the item limit of 1024"),
     b"SERVER_ERROR object too large for cache\r\n"),
])
def test_errors_are_one_server_error_line(conn, error, line):
    conn.send(b"get a\r\n")
    conn.router.deferreds()[0].errback(error)
    assert conn.turn() == line


def test_unexpected_error_is_logged_and_answered_generically(conn):
    conn.send(b"get a\r\n")
    with capturedLogs() as events:
        conn.router.deferreds()[0].errback(KeyError("bug"))
    assert conn.turn() == b"SERVER_ERROR internal error\r\n"
    assert [e["log_failure"].type for e in events] == [KeyError]


def test_too_large_store_is_refused_by_the_parser_and_by_the_router(conn):
    value = b"x" * 2000
    conn.send(b"set big 0 0 2000\r\n" + value + b"\r\n")
    # The old value goes first, as memcached drops it; then the refusal is answered.
    assert conn.router.ops() == [("delete", ("default", b"big"))]
    assert conn.turn() == b""
    conn.router.deferreds()[0].callback(True)
    assert conn.turn() == b"SERVER_ERROR object too large for cache\r\n"
    conn.send(b"set k 0 0 1\r\nx\r\n")
    conn.router.deferreds()[1].errback(TooLarge("over the node's budget"))
    assert conn.turn() == b"SERVER_ERROR object too large for cache\r\n"


def test_unknown_command_and_client_errors(conn):
    conn.send(b"frobnicate\r\nset k 0 0 abc\r\nget\r\n")
    assert conn.turn() == b"ERROR\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n"
    assert conn.router.calls == []


@pytest.mark.parametrize("command", ["cas", "append", "prepend"])
def test_unsupported_storage_commands(conn, command):
    extra = b" 1" if command == "cas" else b""
    conn.send(b"%b k 0 0 1%b\r\nx\r\n" % (command.encode(), extra))
    assert conn.turn() == b"SERVER_ERROR %b is not supported by ringcache\r\n" % command.encode()
    conn.send(b"%b k 0 0 1%b noreply\r\nx\r\nversion\r\n" % (command.encode(), extra))
    assert conn.turn() == b"VERSION %b\r\n" % VERSION.encode()
    assert conn.router.calls == []


@pytest.mark.parametrize("command, result, line", [
    ("set", True, b"STORED\r\n"),
    ("add", True, b"STORED\r\n"),
    ("add", False, b"NOT_STORED\r\n"),
    ("replace", False, b"NOT_STORED\r\n"),
])
def test_store_answers(conn, command, result, line):
    conn.send(b"%b sessions:k 42 100 5\r\nhello\r\n" % command.encode())
    [(op, args, d)] = conn.router.calls
    assert (op, args) == (command, ("sessions", b"k", b"hello", 100.0, 42))
    d.callback(result)
    assert conn.turn() == line


@pytest.mark.parametrize("exptime, ttl", [
    (0, None),                                  # never expires
    (1, 1.0),                                   # relative seconds ...
    (60 * 60 * 24 * 30, 2592000.0),             # ... up to 30 days
    (int(NOW) + 50, 50.0),                      # beyond that, an absolute unix time
])
def test_exptime_to_ttl(conn, exptime, ttl):
    conn.send(b"set k 0 %d 1\r\nx\r\ntouch k %d\r\n" % (exptime, exptime))
    assert conn.router.ops() == [("set", ("default", b"k", b"x", ttl, 0)),
                                 ("touch", ("default", b"k", ttl))]


@pytest.mark.parametrize("exptime", [-1, int(NOW), int(NOW) - 10])
@pytest.mark.parametrize("found", [True, False])
def test_expired_exptime_on_set_deletes(conn, exptime, found):
    conn.send(b"set k 0 %d 1\r\nx\r\n" % exptime)
    [(op, args, d)] = conn.router.calls
    assert (op, args) == ("delete", ("default", b"k"))
    d.callback(found)
    assert conn.turn() == b"STORED\r\n"


@pytest.mark.parametrize("found, line", [(True, b"STORED\r\n"), (False, b"NOT_STORED\r\n")])
def test_expired_exptime_on_replace_deletes_only_what_exists(conn, found, line):
    conn.send(b"replace k 0 -1 1\r\nx\r\n")
    [(op, args, d)] = conn.router.calls
    assert (op, args) == ("delete", ("default", b"k"))
    d.callback(found)
    assert conn.turn() == line


@pytest.mark.parametrize("stored, line", [(True, b"STORED\r\n"), (False, b"NOT_STORED\r\n")])
def test_expired_exptime_on_add_stays_conditional(conn, stored, line):
    conn.send(b"add k 5 -1 1\r\nx\r\n")
    [(op, args, d)] = conn.router.calls
    assert (op, args) == ("add", ("default", b"k", b"x", ALREADY_EXPIRED, 5))
    d.callback(stored)
    assert conn.turn() == line


def test_expired_exptime_on_touch_deletes(conn):
    conn.send(b"touch k -1\r\ntouch j -1\r\n")
    assert conn.router.ops() == [("delete", ("default", b"k")), ("delete", ("default", b"j"))]
    k, j = conn.router.deferreds()
    k.callback(True)
    j.callback(False)
    assert conn.turn() == b"TOUCHED\r\nNOT_FOUND\r\n"


def test_delete_and_touch_answers(conn):
    conn.send(b"delete a\r\ndelete b\r\ntouch c 10\r\ntouch d 10\r\n")
    for d, result in zip(conn.router.deferreds(), (True, False, True, False)):
        d.callback(result)
    assert conn.turn() == b"DELETED\r\nNOT_FOUND\r\nTOUCHED\r\nNOT_FOUND\r\n"


def test_quit_closes_after_earlier_answers(conn):
    conn.send(b"get a\r\nquit\r\nget b\r\n")
    assert len(conn.router.calls) == 1  # nothing after quit is run
    assert not conn.transport.disconnecting
    conn.router.deferreds()[0].callback(Item(b"A"))
    assert conn.turn() == b"VALUE a 0 1\r\nA\r\nEND\r\n"
    assert conn.transport.disconnecting


def test_quit_alone_closes_at_once(conn):
    conn.send(b"quit\r\n")
    assert conn.transport.disconnecting
    assert conn.transport.value() == b""


def test_stats(conn):
    conn.send(b"get a\r\n")
    conn.router.deferreds()[0].callback(Item(b"1"))
    conn.turn()
    conn.clock.advance(7)
    conn.send(b"stats\r\n")
    lines = conn.turn().split(b"\r\n")
    stats = dict(line.split(b" ", 2)[1:] for line in lines[:-2])
    assert lines[-2:] == [b"END", b""]
    assert stats[b"version"] == VERSION.encode()
    assert stats[b"uptime"] == b"7"
    assert stats[b"time"] == str(int(NOW)).encode()
    assert stats[b"curr_connections"] == stats[b"total_connections"] == b"1"
    assert (stats[b"cmd_get"], stats[b"get_hits"], stats[b"get_misses"]) == (b"1", b"1", b"0")
    assert stats[b"coalesced"] == b"3"
    assert stats[b"ring_digest"] == b"0123456789abcdef"
    assert (stats[b"nodes"], stats[b"nodes_up"]) == (b"2", b"1")
    conn.send(b"stats slabs\r\n")
    assert conn.turn() == b"END\r\n"


def test_many_outstanding_answers_pause_the_client(conn):
    # One get per read, so each is its own router call and can be answered alone.
    for _ in range(MAX_OUTSTANDING):
        conn.send(b"get k\r\n")
    assert conn.transport.producerState == "producing"
    conn.send(b"get k\r\n")
    assert conn.transport.producerState == "paused"
    pending = conn.router.deferreds()
    assert len(pending) == MAX_OUTSTANDING + 1
    # Resumes once no more than half the limit is left.
    keep = MAX_OUTSTANDING // 2
    for d in pending[:-keep - 1]:
        d.callback(None)
    conn.turn()
    assert conn.transport.producerState == "paused"
    pending[-keep - 1].callback(None)
    conn.turn()
    assert conn.transport.producerState == "producing"


def test_exactly_max_outstanding_does_not_pause(conn):
    conn.send(b"get k\r\n" * MAX_OUTSTANDING)
    assert conn.transport.producerState == "producing"


def test_answers_after_the_connection_closed_are_dropped(conn):
    conn.send(b"get a\r\n")
    conn.protocol.connectionLost(None)
    assert conn.factory.connections == 0
    conn.router.deferreds()[0].callback(Item(b"A"))
    assert conn.turn() == b""


def test_gets_pipelined_in_one_read_share_one_router_read(conn):
    calls = []
    conn.router.read_many = lambda pairs: calls.append(pairs) or succeed(
        [Item(b"A"), None, Failure(NodeUnavailable("node-b", "down")), Item(b"Y"), Item(b"D", 2)])
    conn.send(b"get a\r\nget b\r\nget x y\r\ngets d\r\n")
    assert calls == [[("default", b"a"), ("default", b"b"), ("default", b"x"),
                      ("default", b"y"), ("default", b"d")]]
    # Each command is answered alone: the failed key fails only its own command.
    assert conn.turn() == (b"VALUE a 0 1\r\nA\r\nEND\r\n" b"END\r\n"
                           b"SERVER_ERROR node node-b unavailable: down\r\n"
                           b"VALUE d 2 1 %d\r\nD\r\nEND\r\n" % cas_token(b"D"))
