"""The data plane (router/dataplane/serve.py) behind the real memcached front end and Router, on
fake node clients: what each node answer, failure or absence becomes in the client's
answer, and what goes to the slow path."""

from __future__ import annotations

import pytest

from router.cluster.errors import NodeTimeout
from shared import entry
from shared import ringcache_pb2 as pb
from tests.fakes import SCORES, PlaneConn


def store(values: dict):
    """A node holding ``values`` ({key: entry}) answering GET_MANYs from them."""
    return lambda request: pb.Response(id=1, values=[values.get(k, b"") for k in request.keys])


def test_hits_are_served_from_one_get_many_per_node_and_group():
    client = PlaneConn()
    client.send(b"get a\r\nget sessions:s a\r\n")
    [(scores, _), (sessions, _)] = client.node().prepared
    assert (scores.op, scores.group, list(scores.keys)) == (pb.GET_MANY, "scores", [b"a"])
    assert (sessions.group, list(sessions.keys)) == ("sessions", [b"s"])
    client.node().answer_prepared(store({b"a": entry.pack(b"A", 3, 9),
                                         b"s": entry.pack(b"S")}))
    assert client.turn() == (b"VALUE a 3 1\r\nA\r\nEND\r\n"
                               b"VALUE sessions:s 0 1\r\nS\r\nVALUE a 3 1\r\nA\r\nEND\r\n")
    assert client.router.stats.hits == 2
    assert client.router.stats.group_hits == {"scores": 1, "sessions": 1}
    assert client.node().sent == []  # nothing went the slow way


def test_flags_and_negative_entries_are_unpacked():
    client = PlaneConn()
    client.send(b"get sessions:a sessions:b sessions:c\r\n")
    client.node().answer_prepared(lambda r: pb.Response(
        values=[entry.pack(b"A", 7), entry.NEGATIVE, entry.pack(b"")]))
    assert client.turn() == b"VALUE sessions:a 7 1\r\nA\r\nVALUE sessions:c 0 0\r\n\r\nEND\r\n"
    stats = client.router.stats
    assert (stats.hits, stats.misses, stats.negative_hits) == (2, 1, 1)


def test_one_get_many_per_node_holding_exactly_the_keys_it_owns():
    client = PlaneConn(nodes=("node-a", "node-b"))
    keys = [b"k%d" % i for i in range(12)]
    client.send(b"get sessions:" + b" sessions:".join(keys) + b"\r\n")
    for name in ("node-a", "node-b"):
        [(request, _)] = client.node(name).prepared
        assert list(request.keys) == [k for k in keys
                                      if client.router.owner("sessions", k) == name]
        assert request.keys  # both nodes got a share
        client.node(name).answer_prepared(
            lambda r: pb.Response(values=[entry.pack(b"v-" + k) for k in r.keys]))
    assert client.turn() == b"".join(b"VALUE sessions:%b 0 %d\r\nv-%b\r\n" % (k, len(k) + 2, k)
                                       for k in keys) + b"END\r\n"


def test_a_miss_reads_through_the_source_and_a_plain_miss_is_end():
    client = PlaneConn()
    client.send(b"get missing sessions:none\r\n")
    client.node().answer_prepared(store({}))
    # The read-through key is looked at again inside its flight, then loaded.
    [recheck] = client.node().take()
    assert (recheck.op, recheck.key) == (pb.GET, b"missing")
    recheck.answer(pb.NOT_FOUND)
    [(key, load)] = client.router.groups["scores"].source.loads
    load.callback(b"loaded")
    [fill] = client.node().take()
    fill.answer(cas=7)
    assert client.turn() == b"VALUE missing 0 6\r\nloaded\r\nEND\r\n"
    assert (client.router.stats.misses, client.router.stats.loads) == (2, 1)
    stats = client.router.stats
    assert (stats.group_misses, stats.group_loads) == ({"scores": 1, "sessions": 1}, {"scores": 1})
    # Two keys asked, neither cached: the loaded one is a miss too.
    assert stats.requests == {("memcache", "get", "miss"): 2}


def test_a_run_is_timed_from_its_read_to_its_answer():
    client = PlaneConn()
    client.send(b"get a\r\nget b\r\n")
    client.router.reactor.advance(0.002)
    client.node().answer_prepared(store({b"a": entry.pack(b"A"), b"b": entry.pack(b"B")}))
    client.turn()
    [(labels, (counts, seconds))] = client.router.stats.latency.series.items()
    assert labels == ("memcache", "get")
    assert (sum(counts), seconds) == (2, pytest.approx(0.004))
    assert counts[client.router.stats.latency.bounds.index(0.0025)] == 2


def test_a_node_without_get_many_is_asked_key_by_key():
    client = PlaneConn()
    client.send(b"get a b\r\n")
    client.node().answer_prepared(lambda r: pb.Response(id=1, status=pb.UNKNOWN_OP))
    gets = client.node().take()
    assert [(s.op, s.key) for s in gets] == [(pb.GET, b"a"), (pb.GET, b"b")]
    gets[0].answer(value=b"A")
    gets[1].answer(pb.NOT_FOUND, negative=True)
    assert client.turn() == b"VALUE a 0 1\r\nA\r\nEND\r\n"


def test_answers_past_a_frame_are_refused_in_memcacheds_words():
    client = PlaneConn()
    client.send(b"get a\r\nget sessions:s\r\n")
    client.node().answer_prepared(lambda r: pb.Response(
        id=1, status=pb.TOO_LARGE, error="too big") if r.group == "scores"
        else pb.Response(id=1, values=[entry.pack(b"S")]))
    assert client.turn() == (b"SERVER_ERROR out of memory writing get response\r\n"
                               b"VALUE sessions:s 0 1\r\nS\r\nEND\r\n")


def test_a_node_error_fails_only_the_commands_naming_its_keys():
    client = PlaneConn()
    client.send(b"get a\r\nget sessions:s\r\n")
    client.node().answer_prepared(lambda r: pb.Response(
        id=1, status=pb.ERROR, error="disk on fire") if r.group == "sessions"
        else pb.Response(id=1, values=[entry.pack(b"A")]))
    assert client.turn() == (b"VALUE a 0 1\r\nA\r\nEND\r\n"
                               b"SERVER_ERROR disk on fire\r\n")


def test_a_wrong_count_of_answers_is_asked_again_key_by_key():
    client = PlaneConn()
    client.send(b"get a b\r\n")
    client.node().answer_prepared(lambda r: pb.Response(id=1, values=[entry.pack(b"A")]))
    gets = client.node().take()
    assert [s.key for s in gets] == [b"a", b"b"]
    for sent in gets:
        sent.answer(value=b"v-" + sent.key)
    assert client.turn() == b"VALUE a 0 3\r\nv-a\r\nVALUE b 0 3\r\nv-b\r\nEND\r\n"


def test_a_node_that_fails_a_batch_fails_over_to_the_source_or_says_unavailable():
    client = PlaneConn()
    client.send(b"get k\r\nget sessions:s\r\n")
    for _, waiter in client.node().prepared:
        waiter.errback(NodeTimeout("node-a", 0.5))
    [(key, load)] = client.router.groups["scores"].source.loads
    load.callback(b"from source")  # not cached: the node is not answering
    assert client.turn() == (b"VALUE k 0 11\r\nfrom source\r\nEND\r\n"
                               b"SERVER_ERROR node node-a timed out: no answer within 500ms\r\n")
    assert client.node().sent == []
    assert client.router.stats.failovers == 1


def test_a_node_down_before_sending_answers_at_once():
    client = PlaneConn()
    client.node().state = "down"
    client.node().down_reason = "connection refused"
    client.send(b"get sessions:s\r\n")
    assert client.node().prepared == []
    assert client.turn() == b"SERVER_ERROR node node-a unavailable: connection refused\r\n"


def test_a_group_with_replicas_is_read_copy_by_copy():
    client = PlaneConn(nodes=("node-a", "node-b"),
                    groups={"scores": SCORES, "sessions": {}, "both": {"replicas": 2}})
    client.send(b"get both:x\r\n")
    assert all(c.prepared == [] for c in client.router.clients.values())
    [(first, sent)] = [(c, s) for c in client.router.clients.values() for s in c.take()]
    assert (sent.op, sent.group, sent.key) == (pb.GET, "both", b"x")
    sent.fail()  # the first copy is down: the other one answers
    [second] = [s for c in client.router.clients.values() if c is not first for s in c.take()]
    second.answer(value=b"X")
    assert client.turn() == b"VALUE both:x 0 1\r\nX\r\nEND\r\n"


def test_a_key_in_several_commands_is_fetched_once_and_answered_in_each():
    client = PlaneConn()
    client.send(b"get sessions:a\r\nget sessions:a sessions:b\r\nget k\r\n")
    sessions = [r for r, _ in client.node().prepared if r.group == "sessions"]
    assert [list(r.keys) for r in sessions] == [[b"a", b"b"]]
    client.node().answer_prepared(lambda r: pb.Response(
        id=1, values=[entry.pack(b"A") if k == b"a" else b"" for k in r.keys])
        if r.group == "sessions" else pb.Response(id=1, values=[entry.pack(b"K")]))
    assert client.turn() == (b"VALUE sessions:a 0 1\r\nA\r\nEND\r\n"
                               b"VALUE sessions:a 0 1\r\nA\r\nEND\r\n"
                               b"VALUE k 0 1\r\nK\r\nEND\r\n")
