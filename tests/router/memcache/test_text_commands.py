"""The memcached text protocol over a StringTransport: gets on a real Router whose nodes are
fakes answering the data plane's GET_MANYs (PlaneConn), every other command against a fake
router whose Deferreds the test fires (MemcacheConn)."""

from __future__ import annotations

import pytest
from twisted.logger import capturedLogs

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
from router.memcache.connection import MAX_OUTSTANDING
from router.memcache.stats import VERSION
from shared import entry
from shared import ringcache_pb2 as pb
from tests.fakes import NOW, MemcacheConn, PlaneConn

# Two groups without a source: a miss is a miss. Keys without a prefix are in "scores".
PLAIN = {"scores": {}, "sessions": {}}


@pytest.fixture
def conn():
    return MemcacheConn()


@pytest.fixture
def plane():
    return PlaneConn(groups=PLAIN)


def values(**entries) -> pb.Response:
    """A GET_MANY's answer from ``entries`` (key name -> entry), b"" for the other keys."""
    return lambda request: pb.Response(values=[entries.get(k.decode(), b"") for k in request.keys])


def answer_each(plane, *answers):
    """Answer the GET_MANYs waiting on node-a, in the order given by index, each with its
    entry for every key (b"" a miss)."""
    prepared = plane.node().prepared
    plane.node().prepared = []
    for i, stored in answers:
        request, waiter = prepared[i]
        waiter.callback(pb.Response(values=[stored] * len(request.keys)))


def test_pipelined_answers_keep_request_order(plane):
    # One get per read: three runs of the data plane, whose node answers come back in any
    # order (one run per read is the data plane's batch).
    for key in (b"a", b"b", b"c"):
        plane.send(b"get %b\r\n" % key)
    assert [list(r.keys) for r, _ in plane.node().prepared] == [[b"a"], [b"b"], [b"c"]]
    prepared = list(plane.node().prepared)
    plane.node().prepared = []
    prepared[2][1].callback(pb.Response(values=[entry.pack(b"C")]))
    plane.turn()
    prepared[1][1].callback(pb.Response(values=[b""]))
    assert plane.turn() == b""  # a still blocks the head of the queue
    prepared[0][1].callback(pb.Response(values=[entry.pack(b"A", 3)]))
    assert plane.turn() == b"VALUE a 3 1\r\nA\r\nEND\r\nEND\r\nVALUE c 0 1\r\nC\r\nEND\r\n"
    assert plane.transport.writes == 1


def test_one_write_per_turn(plane):
    plane.send(b"version\r\nget a\r\nbogus\r\nget b\r\n")
    # The answer ready at the head goes out at once; the unknown command waits behind a.
    assert plane.turn() == b"VERSION %b\r\n" % VERSION.encode()
    assert plane.transport.writes == 1
    answer_each(plane, (0, b""), (1, entry.pack(b"B")))
    assert plane.turn() == b"END\r\nERROR\r\nVALUE b 0 1\r\nB\r\nEND\r\n"
    assert plane.transport.writes == 2


def test_immediate_answers_are_written_at_the_end_of_the_read(conn):
    conn.send(b"version\r\nversion\r\nnope\r\n")
    assert conn.transport.value() == b"VERSION %b\r\n" % VERSION.encode() * 2 + b"ERROR\r\n"
    assert conn.transport.writes == 1


def test_answers_ready_in_one_turn_share_one_write(plane):
    for key in (b"a", b"b", b"c"):
        plane.send(b"get %b\r\n" % key)
    answer_each(plane, (0, b""), (1, b""), (2, b""))
    assert plane.turn() == b"END\r\n" * 3
    assert plane.transport.writes == 1


def test_value_line_uses_the_client_key(plane):
    plane.send(b"get sessions:u1\r\n")
    [(request, _)] = plane.node().prepared
    assert (request.op, request.group, list(request.keys)) == (pb.GET_MANY, "sessions", [b"u1"])
    plane.node().answer_prepared(values(u1=entry.pack(b"hello", 9)))
    assert plane.turn() == b"VALUE sessions:u1 9 5\r\nhello\r\nEND\r\n"


def test_multi_get_answers_only_hits(plane):
    plane.send(b"get a b c\r\n")
    [(request, _)] = plane.node().prepared
    assert (request.group, list(request.keys)) == ("scores", [b"a", b"b", b"c"])
    plane.node().answer_prepared(values(a=entry.pack(b"1", 1), c=entry.pack(b"3")))
    assert plane.turn() == b"VALUE a 1 1\r\n1\r\nVALUE c 0 1\r\n3\r\nEND\r\n"
    requests = plane.router.stats.requests
    assert requests[("memcache", "get", "hit")] == 2
    assert requests[("memcache", "get", "miss")] == 1


def test_a_get_answered_by_a_load_counts_as_a_miss():
    plane = PlaneConn()  # "scores" reads through its source on a miss
    plane.send(b"get a b\r\nget c\r\n")
    plane.node().answer_prepared(values(a=entry.pack(b"1")))
    for recheck in plane.node().take():  # b and c looked at again inside their flights
        recheck.answer(pb.NOT_FOUND)
    for _, load in plane.router.groups["scores"].source.loads:
        load.callback(b"loaded")
    for fill in plane.node().take():
        fill.answer()
    assert plane.turn() == (b"VALUE a 0 1\r\n1\r\nVALUE b 0 6\r\nloaded\r\nEND\r\n"
                            b"VALUE c 0 6\r\nloaded\r\nEND\r\n")
    requests = plane.router.stats.requests
    assert (requests[("memcache", "get", "hit")], requests[("memcache", "get", "miss")]) == (1, 2)


def test_a_get_after_another_command_is_timed_as_a_get(plane):
    plane.send(b"delete b\r\n")
    plane.node().take()[0].answer(pb.OK)
    plane.turn()
    plane.send(b"get a\r\n")
    plane.node().answer_prepared(values())
    plane.turn()
    counts = {labels: sum(c) for labels, (c, _) in plane.router.stats.latency.series.items()}
    assert counts == {("memcache", "delete"): 1, ("memcache", "get"): 1}


def test_requests_are_timed_by_command_from_read_to_answer(plane):
    plane.send(b"get a\r\ndelete b\r\nversion\r\n")
    [delete] = plane.node().take()
    plane.clock.advance(0.02)
    delete.answer(pb.OK)
    plane.node().answer_prepared(values())
    plane.turn()
    latency = plane.router.stats.latency
    assert sorted(latency.series) == [("memcache", "delete"), ("memcache", "get"),
                                      ("memcache", "version")]
    buckets, count, seconds = latency.cumulative(("memcache", "delete"))
    assert (count, seconds) == (1, pytest.approx(0.02))
    assert dict(buckets)["0.01"] == 0 and dict(buckets)["0.025"] == 1


def test_multi_get_failure_answers_the_first_error():
    plane = PlaneConn()  # "scores" reads through its source on a miss
    plane.send(b"get a b\r\n")
    plane.node().answer_prepared(values(a=entry.pack(b"1")))
    [recheck] = plane.node().take()  # b is looked at again inside its flight, then loaded
    recheck.answer(pb.NOT_FOUND)
    [(key, load)] = plane.router.groups["scores"].source.loads
    load.errback(SourceError("python:m:f", "database is on fire"))
    assert plane.turn() == b"SERVER_ERROR source python:m:f failed: database is on fire\r\n"


def test_gets_answers_the_items_cas_unique(plane):
    plane.send(b"gets k\r\n")
    plane.node().answer_prepared(values(k=entry.pack(b"v", 0, 77)))
    assert plane.turn() == b"VALUE k 0 1 77\r\nv\r\nEND\r\n"


def test_gets_the_parser_splits_itself_are_one_data_plane_run_too(plane):
    # Odd spacing is not a plain line: the parser reads it, and its keys are routed as one
    # run with the gets that follow, one GET_MANY per node and group.
    plane.send(b"get  a\r\ngets b   c \r\nget sessions:s\r\nget a\r\n")
    requests = sorted((r.group, list(r.keys)) for r, _ in plane.node().prepared)
    assert requests == [("scores", [b"a", b"b", b"c"]), ("sessions", [b"s"])]
    plane.node().answer_prepared(values(a=entry.pack(b"A"), b=entry.pack(b"B", 0, 5),
                                        s=entry.pack(b"S")))
    assert plane.turn() == (b"VALUE a 0 1\r\nA\r\nEND\r\n"
                            b"VALUE b 0 1 5\r\nB\r\nEND\r\n"
                            b"VALUE sessions:s 0 1\r\nS\r\nEND\r\n"
                            b"VALUE a 0 1\r\nA\r\nEND\r\n")
    assert plane.node().sent == []  # nothing went the slow way


def test_noreply_writes_nothing(conn):
    conn.send(b"set a 0 0 1 noreply\r\nx\r\ndelete b noreply\r\ntouch c 10 noreply\r\n"
              b"add d 0 0 1 noreply\r\ny\r\nversion\r\n")
    assert [op for op, _ in conn.router.ops()] == ["set", "delete", "touch", "add"]
    stored, deleted, touched, added = conn.router.deferreds()
    stored.callback(True)
    deleted.callback(False)
    touched.errback(NodeUnavailable("node-a", "down"))
    added.callback(False)
    assert conn.turn() == b"VERSION %b\r\n" % VERSION.encode()


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
    conn.send(b"mg a v\r\n")  # a meta get: the router's own get
    conn.router.deferreds()[0].errback(error)
    assert conn.turn() == line


def test_a_get_from_a_node_that_is_gone_is_one_server_error_line(plane):
    plane.send(b"get a\r\n")
    for _, waiter in plane.node().prepared:
        waiter.errback(NodeUnavailable("node-a", "connection lost:\nreset by peer"))
    assert plane.turn() == (b"SERVER_ERROR node node-a unavailable: connection lost: "
                            b"reset by peer\r\n")


def test_unexpected_error_is_logged_and_answered_generically(plane):
    plane.send(b"get a\r\n")
    with capturedLogs() as events:
        for _, waiter in plane.node().prepared:
            waiter.errback(KeyError("bug"))
    assert plane.turn() == b"SERVER_ERROR internal error\r\n"
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
    # The router cannot change a budget the topology owns; it answers as memcached does.
    (b"cache_memlimit 100", b"OK\r\n"),
    (b"cache_memlimit 7", b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"),
    (b"cache_memlimit 1000000001",
     b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"),
    (b"cache_memlimit x", b"ERROR\r\n"),
    (b"slabs automove 1", b"OK\r\n"),
])
def test_server_commands(conn, line, answer):
    conn.send(line + b"\r\n" + line + b" noreply\r\nversion\r\n")
    assert conn.turn() == answer + b"VERSION %b\r\n" % VERSION.encode()
    assert conn.router.calls == []


def test_slabs_reassign_is_refused_as_memcached_without_slab_reassign(conn):
    # With noreply it has a word too many: memcached's ERROR.
    conn.send(b"slabs reassign 1 2\r\nslabs reassign 1 2 noreply\r\n")
    assert conn.turn() == b"CLIENT_ERROR slab reassignment disabled\r\nERROR\r\n"


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


def test_quit_closes_after_earlier_answers(plane):
    plane.send(b"get a\r\nquit\r\nget b\r\n")
    [(request, _)] = plane.node().prepared  # nothing after quit is run
    assert list(request.keys) == [b"a"]
    assert not plane.transport.disconnecting
    plane.node().answer_prepared(values(a=entry.pack(b"A")))
    assert plane.turn() == b"VALUE a 0 1\r\nA\r\nEND\r\n"
    assert plane.transport.disconnecting


@pytest.mark.parametrize("request_line", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"POST /x HTTP/1.0\r\n",
    b"PUT / HTTP/1.1\r\n", b"DELETE /k HTTP/1.1\r\n"])
def test_a_request_line_of_http_closes_the_connection_unanswered(conn, request_line):
    conn.send(request_line + b"version\r\n")
    assert conn.transport.disconnecting
    assert conn.turn() == b""  # neither the request nor what follows it is answered
    assert conn.router.ops() == []


def test_a_bad_store_line_leaves_its_data_to_be_read_as_a_command(conn):
    conn.send(b"set k 0 x 1\r\nversion\r\n")
    assert conn.turn() == b"CLIENT_ERROR bad command line format\r\n" + b"VERSION " + \
        VERSION.encode() + b"\r\n"


def test_quit_alone_closes_at_once(conn):
    conn.send(b"quit\r\n")
    assert conn.transport.disconnecting
    assert conn.transport.value() == b""


def stat_dict(answer: bytes) -> dict:
    lines = answer.split(b"\r\n")
    assert lines[-2:] == [b"END", b""]
    return dict(line.split(b" ", 2)[1:] for line in lines[:-2])


def test_stats(conn):
    conn.send(b"gat 0 a\r\n")
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
    assert stats[b"cmd_touch"] == b"1"
    # From the nodes that answered (node-b did not).
    assert (stats[b"curr_items"], stats[b"bytes"], stats[b"limit_maxbytes"]) == (
        b"2", b"300", b"1000")
    assert (stats[b"evictions"], stats[b"total_items"], stats[b"threads"]) == (b"4", b"9", b"1")
    assert stats[b"coalesced"] == b"3"
    assert stats[b"ring_digest"] == b"0123456789abcdef"
    assert (stats[b"nodes"], stats[b"nodes_up"]) == (b"2", b"1")


def test_stats_items_slabs_and_settings_show_one_class_per_group(conn):
    conn.send(b"stats items\r\n")
    items = stat_dict(conn.turn())
    # memcached lists only the classes that hold items, each with the same fields.
    assert {name.split(b":")[1] for name in items} == {b"1"}
    assert len(items) == 28
    assert (items[b"items:1:number"], items[b"items:1:mem_requested"],
            items[b"items:1:evicted"], items[b"items:1:reclaimed"],
            items[b"items:1:evicted_unfetched"]) == (b"2", b"300", b"4", b"1", b"0")
    conn.send(b"stats slabs\r\n")
    slabs = stat_dict(conn.turn())
    assert (slabs[b"1:used_chunks"], slabs[b"1:get_hits"], slabs[b"active_slabs"],
            slabs[b"total_malloced"]) == (b"2", b"5", b"2", b"500")
    conn.send(b"stats settings\r\n")
    settings = stat_dict(conn.turn())
    assert (settings[b"item_size_max"], settings[b"cas_enabled"]) == (b"1024", b"yes")


@pytest.mark.parametrize("line, answer", [
    (b"stats noreply", b"ERROR\r\n"), (b"stats foo", b"ERROR\r\n"),
    (b"stats reset", b"RESET\r\n"), (b"stats reset x", b"RESET\r\n"),
    (b"stats detail dump", b"END\r\n"), (b"stats detail on", b"OK\r\n"),
    (b"stats detail off", b"OK\r\n"),
    (b"stats detail", b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"),
    (b"stats detail x", b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"),
    (b"stats sizes", b"STAT sizes_status disabled\r\nEND\r\n"),
    (b"stats cachedump 1", b"CLIENT_ERROR bad command line\r\n"),
    (b"stats cachedump x 1", b"CLIENT_ERROR bad command line format\r\n"),
    (b"stats cachedump 64 1", b"CLIENT_ERROR Illegal slab id\r\n"),
    (b"stats cachedump 9 1", b"END\r\n"),  # a class the topology lacks holds nothing
])
def test_stats_with_other_arguments_answers_as_memcached(conn, line, answer):
    conn.send(line + b"\r\n")
    assert conn.turn() == answer


def test_a_get_counts_in_stats(plane):
    plane.send(b"get a b\r\n")
    plane.node().answer_prepared(values(a=entry.pack(b"1")))
    plane.turn()
    plane.send(b"stats\r\n")
    for sent in plane.node().take():  # the nodes' own counters
        sent.d.callback(pb.Response(stats=pb.NodeStats()))
    stats = stat_dict(plane.turn())
    assert (stats[b"cmd_get"], stats[b"get_hits"], stats[b"get_misses"]) == (b"2", b"1", b"1")


def test_many_outstanding_answers_pause_the_client(plane):
    # One get per read, so each is its own run of the data plane and can be answered alone.
    for _ in range(MAX_OUTSTANDING):
        plane.send(b"get k\r\n")
    assert plane.transport.producerState == "producing"
    plane.send(b"get k\r\n")
    assert plane.transport.producerState == "paused"
    pending = [waiter for _, waiter in plane.node().prepared]
    assert len(pending) == MAX_OUTSTANDING + 1
    # Resumes once no more than half the limit is left.
    keep = MAX_OUTSTANDING // 2
    for waiter in pending[:-keep - 1]:
        waiter.callback(pb.Response(values=[b""]))
    plane.turn()
    assert plane.transport.producerState == "paused"
    pending[-keep - 1].callback(pb.Response(values=[b""]))
    plane.turn()
    assert plane.transport.producerState == "producing"


def test_exactly_max_outstanding_does_not_pause(plane):
    plane.send(b"get k\r\n" * MAX_OUTSTANDING)
    assert plane.transport.producerState == "producing"


def test_answers_after_the_connection_closed_are_dropped(plane):
    plane.send(b"get a\r\n")
    plane.protocol.connectionLost(None)
    assert plane.factory.connections == 0
    plane.node().answer_prepared(values(a=entry.pack(b"A")))
    assert plane.turn() == b""


def test_a_streamed_answer_goes_out_piece_by_piece_in_its_place(monkeypatch):
    # lru_crawler metadump (router/memcache/metadump.py) writes its lines as the nodes
    # answer; the commands after it wait for its END, and each piece leaves at once.
    from twisted.internet.defer import Deferred

    from router.memcache import text_commands

    more = Deferred()

    async def fake_metadump(router, write):
        await write(b"key=a exp=-1\n")
        await more
        await write(b"key=b exp=-1\n")
        return b"END\r\n"

    monkeypatch.setattr(text_commands, "metadump", fake_metadump)
    conn = MemcacheConn()
    conn.send(b"lru_crawler metadump all\r\nversion\r\n")
    assert conn.turn() == b"key=a exp=-1\n"
    more.callback(None)
    assert conn.turn() == b"key=b exp=-1\nEND\r\nVERSION " + VERSION.encode() + b"\r\n"


def test_every_read_names_its_connection_so_its_loads_queue_apart(conn):
    # router/cluster/loads.py serves a group's waiting loads a connection at a time.
    conn.send(b"gat 0 f\r\nmg g v\r\n")
    other = MemcacheConn()
    other.send(b"mg h v\r\n")
    assert conn.router.conns == [conn.protocol, conn.protocol]
    assert other.router.conns == [other.protocol]
    plane = PlaneConn()  # the data plane's misses name it too
    seen, missed = [], plane.router.missed
    plane.router.missed = lambda *args: seen.append(args[-1]) or missed(*args)
    plane.send(b"get a b\r\n")
    plane.answer({})
    assert seen == [plane.protocol] * 2
