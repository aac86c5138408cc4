"""MemcacheProtocol over a StringTransport, against a fake router whose Deferreds the test fires."""

from __future__ import annotations

import pytest
from twisted.internet.defer import succeed
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from router.cluster.errors import NodeUnavailable, SourceError, TooLarge, UnknownGroup
from router.cluster.router import Item
from router.cluster.writes import (
    EXISTS,
    MISSING,
    NON_NUMERIC,
    NOT_STORED_,
    STORED,
    Written,
)
from router.memcache.commands import ALREADY_EXPIRED
from router.memcache.server import MAX_OUTSTANDING, VERSION
from tests.fakes import NOW, MemcacheConn


@pytest.fixture
def conn():
    return MemcacheConn()


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


def test_a_get_answered_by_a_load_counts_as_a_miss(conn):
    conn.send(b"get a b\r\nget c\r\n")
    a, b, c = conn.router.deferreds()
    a.callback(Item(b"1"))
    b.callback(Item(b"2", hit=False))  # read through the source
    c.callback(Item(b"3", hit=False))
    conn.turn()
    requests = conn.router.stats.requests
    assert (requests[("memcache", "get", "hit")], requests[("memcache", "get", "miss")]) == (1, 2)


def test_a_get_after_another_command_is_timed_as_a_get(conn):
    conn.send(b"delete b\r\n")
    conn.router.deferreds()[0].callback(True)
    conn.turn()
    conn.send(b"get a\r\n")
    conn.router.deferreds()[-1].callback(None)
    conn.turn()
    counts = {labels: sum(c) for labels, (c, _) in conn.router.stats.latency.series.items()}
    assert counts == {("memcache", "delete"): 1, ("memcache", "get"): 1}


def test_requests_are_timed_by_command_from_read_to_answer(conn):
    conn.send(b"get a\r\ndelete b\r\nversion\r\n")
    get, delete = conn.router.deferreds()
    conn.clock.advance(0.02)
    delete.callback(True)
    get.callback(None)
    conn.turn()
    latency = conn.router.stats.latency
    assert sorted(latency.series) == [("memcache", "delete"), ("memcache", "get"),
                                      ("memcache", "version")]
    buckets, count, seconds = latency.cumulative(("memcache", "delete"))
    assert (count, seconds) == (1, pytest.approx(0.02))
    assert dict(buckets)["0.01"] == 0 and dict(buckets)["0.025"] == 1


def test_multi_get_failure_answers_the_first_error(conn):
    conn.send(b"get a b\r\n")
    a, b = conn.router.deferreds()
    a.callback(Item(b"1"))
    b.errback(SourceError("python:m:f", "database is on fire"))
    assert conn.turn() == b"SERVER_ERROR source python:m:f failed: database is on fire\r\n"


def test_gets_answers_the_items_cas_unique(conn):
    conn.send(b"gets k\r\n")
    conn.router.deferreds()[0].callback(Item(b"v", 0, 77))
    assert conn.turn() == b"VALUE k 0 1 77\r\nv\r\nEND\r\n"


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


@pytest.mark.parametrize("command, args, call, outcome, line", [
    ("cas", b" 9", ("cas", ("default", b"k", b"x", None, 0, 9)), STORED, b"STORED\r\n"),
    ("cas", b" 9", ("cas", ("default", b"k", b"x", None, 0, 9)), EXISTS, b"EXISTS\r\n"),
    ("cas", b" 9", ("cas", ("default", b"k", b"x", None, 0, 9)), MISSING, b"NOT_FOUND\r\n"),
    ("append", b"", ("append", ("default", b"k", b"x", None, 0, 0)), STORED, b"STORED\r\n"),
    ("prepend", b"", ("prepend", ("default", b"k", b"x", None, 0, 0)), NOT_STORED_,
     b"NOT_STORED\r\n"),
])
def test_cas_append_prepend(conn, command, args, call, outcome, line):
    conn.send(b"%b k 0 0 1%b\r\nx\r\n" % (command.encode(), args))
    assert conn.router.ops() == [call]
    conn.router.deferreds()[0].callback(Written(outcome, 3))
    assert conn.turn() == line


@pytest.mark.parametrize("answer, line", [
    (Written(STORED, 4, b"15"), b"15\r\n"),
    (Written(MISSING), b"NOT_FOUND\r\n"),
    (Written(NON_NUMERIC), b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
])
def test_incr_and_decr(conn, answer, line):
    conn.send(b"incr sessions:n 5\r\ndecr n 18446744073709551615\r\n")
    assert conn.router.ops() == [("incr", ("sessions", b"n", 5)),
                                 ("decr", ("default", b"n", 2**64 - 1))]
    for d in conn.router.deferreds():
        d.callback(answer)
    assert conn.turn() == line * 2


def test_gat_and_gats_answer_like_get_and_gets(conn):
    conn.send(b"gat 10 a b a\r\ngats 0 c\r\ngat 5\r\n")
    assert conn.router.ops() == [("gat", ("default", b"a", 10.0)),
                                 ("gat", ("default", b"b", 10.0)),
                                 ("gat", ("default", b"c", None))]
    a, b, c = conn.router.deferreds()
    a.callback(Item(b"A", 1, 7))
    b.callback(None)
    c.callback(Item(b"C", 0, 8))
    assert conn.turn() == (b"VALUE a 1 1\r\nA\r\nVALUE a 1 1\r\nA\r\nEND\r\n"
                           b"VALUE c 0 1 8\r\nC\r\nEND\r\n" b"END\r\n")
    requests = conn.router.stats.requests
    assert (requests[("memcache", "gat", "hit")], requests[("memcache", "gat", "miss")]) == (3, 1)


@pytest.mark.parametrize("line, delay", [
    (b"flush_all", 0.0), (b"flush_all 0", 0.0), (b"flush_all 30", 30.0),
    (b"flush_all %d" % (int(NOW) + 20), 20.0), (b"flush_all -1", 0.0)])
def test_flush_all_flushes_every_node_now_or_later(conn, line, delay):
    conn.send(line + b"\r\n")
    assert conn.router.ops() == [("flush", (delay,))]
    conn.router.deferreds()[0].callback(None)
    assert conn.turn() == b"OK\r\n"


@pytest.mark.parametrize("line, answer", [
    (b"verbosity 1", b"OK\r\n"),
    (b"shutdown", b"ERROR: shutdown not enabled\r\n"),
    (b"cache_memlimit 100", b"SERVER_ERROR cache_memlimit is not supported by ringcache: "
                            b"node budgets are set in topology.yaml\r\n"),
])
def test_server_commands(conn, line, answer):
    conn.send(line + b"\r\n" + line + b" noreply\r\nversion\r\n")
    assert conn.turn() == answer + b"VERSION %b\r\n" % VERSION.encode()
    assert conn.router.calls == []


def test_version_is_one_libmemcached_parses_and_names_ringcache(conn):
    conn.send(b"version\r\n")
    assert conn.turn() == b"VERSION 1.6.21 ringcache-0.1.0\r\n"


def test_noreply_is_honoured_by_every_command_even_refused_ones(conn):
    # Each of these would desynchronise a client that sent noreply if it answered.
    conn.send(b"flush_all noreply\r\nverbosity 1 noreply\r\nincr k 1 noreply\r\n"
              b"incr k x noreply\r\ncache_memlimit 5 noreply\r\nshutdown noreply\r\n"
              b"cache_memlimit x noreply\r\ncas k 0 0 1 5 noreply\r\nx\r\n"
              b"append k 0 0 1 noreply\r\nx\r\ntouch k x noreply\r\nversion\r\n")
    for d in conn.router.deferreds():
        d.callback(Written(MISSING) if d is not conn.router.deferreds()[0] else None)
    assert conn.turn() == b"VERSION %b\r\n" % VERSION.encode()


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


def stat_dict(answer: bytes) -> dict:
    lines = answer.split(b"\r\n")
    assert lines[-2:] == [b"END", b""]
    return dict(line.split(b" ", 2)[1:] for line in lines[:-2])


def test_stats(conn):
    conn.send(b"get a\r\n")
    conn.router.deferreds()[0].callback(Item(b"1"))
    conn.turn()
    conn.clock.advance(7)
    conn.send(b"stats\r\n")
    stats = stat_dict(conn.turn())
    assert stats[b"version"] == b"1.6.21"
    assert stats[b"ringcache_version"] == b"0.1.0"
    assert stats[b"uptime"] == b"7"
    assert stats[b"time"] == str(int(NOW)).encode()
    assert stats[b"curr_connections"] == stats[b"total_connections"] == b"1"
    assert (stats[b"cmd_get"], stats[b"get_hits"], stats[b"get_misses"]) == (b"1", b"1", b"0")
    # From the nodes that answered (node-b did not).
    assert (stats[b"curr_items"], stats[b"bytes"], stats[b"limit_maxbytes"]) == (
        b"2", b"300", b"1000")
    assert (stats[b"evictions"], stats[b"total_items"], stats[b"threads"]) == (b"4", b"9", b"1")
    assert stats[b"coalesced"] == b"3"
    assert stats[b"ring_digest"] == b"0123456789abcdef"
    assert (stats[b"nodes"], stats[b"nodes_up"]) == (b"2", b"1")


def test_stats_items_slabs_and_settings_show_one_class_per_group(conn):
    conn.send(b"stats items\r\n")
    assert stat_dict(conn.turn()) == {
        b"items:1:number": b"2", b"items:1:mem_requested": b"300", b"items:1:evicted": b"4",
        b"items:1:reclaimed": b"1", b"items:2:number": b"0", b"items:2:mem_requested": b"0",
        b"items:2:evicted": b"0", b"items:2:reclaimed": b"0"}
    conn.send(b"stats slabs\r\n")
    slabs = stat_dict(conn.turn())
    assert (slabs[b"1:used_chunks"], slabs[b"1:get_hits"], slabs[b"active_slabs"],
            slabs[b"total_malloced"]) == (b"2", b"5", b"2", b"500")
    conn.send(b"stats settings\r\n")
    settings = stat_dict(conn.turn())
    assert (settings[b"item_size_max"], settings[b"cas_enabled"]) == (b"1024", b"yes")


@pytest.mark.parametrize("line, answer", [
    (b"stats noreply", b"ERROR\r\n"), (b"stats items x", b"ERROR\r\n"),
    (b"stats reset", b"ERROR\r\n"), (b"stats detail dump", b"END\r\n"),
    (b"stats detail on", b"OK\r\n"),
    (b"stats detail", b"CLIENT_ERROR usage: stats detail on|off|dump\r\n")])
def test_stats_with_other_arguments_answers_as_memcached(conn, line, answer):
    conn.send(line + b"\r\n")
    assert conn.turn() == answer


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
    conn.router.read_many = lambda pairs, conn: calls.append(pairs) or succeed(
        [Item(b"A"), None, Failure(NodeUnavailable("node-b", "down")), Item(b"Y"),
         Item(b"D", 2, 5)])
    conn.send(b"get a\r\nget b\r\nget x y\r\ngets d\r\n")
    assert calls == [[("default", b"a"), ("default", b"b"), ("default", b"x"),
                      ("default", b"y"), ("default", b"d")]]
    # Each command is answered alone: the failed key fails only its own command.
    assert conn.turn() == (b"VALUE a 0 1\r\nA\r\nEND\r\n" b"END\r\n"
                           b"SERVER_ERROR node node-b unavailable: down\r\n"
                           b"VALUE d 2 1 5\r\nD\r\nEND\r\n")


def test_a_streamed_answer_goes_out_piece_by_piece_in_its_place(monkeypatch):
    # lru_crawler metadump (router/memcache/metadump.py) writes its lines as the nodes
    # answer; the commands after it wait for its END, and each piece leaves at once.
    from twisted.internet.defer import Deferred

    from router.memcache import server

    more = Deferred()

    async def fake_metadump(router, write):
        await write(b"key=a exp=-1\n")
        await more
        await write(b"key=b exp=-1\n")
        return b"END\r\n"

    monkeypatch.setattr(server, "metadump", fake_metadump)
    conn = MemcacheConn()
    conn.send(b"lru_crawler metadump all\r\nversion\r\n")
    assert conn.turn() == b"key=a exp=-1\n"
    more.callback(None)
    assert conn.turn() == b"key=b exp=-1\nEND\r\nVERSION " + VERSION.encode() + b"\r\n"


def test_every_read_names_its_connection_so_its_loads_queue_apart(conn):
    # router/cluster/loads.py serves a group's waiting loads a connection at a time.
    conn.send(b"get a\r\nget b c\r\nget d\r\ngets e\r\ngat 0 f\r\nmg g v\r\n")
    other = MemcacheConn()
    other.send(b"get h\r\n")
    assert len(conn.router.conns) == 7
    assert set(conn.router.conns) == {conn.protocol}
    assert other.router.conns == [other.protocol]
