"""memcached's per-prefix statistics (stats detail) and the hits read from a get answer."""

from __future__ import annotations

from router.memcache.detail import PrefixStats, values_of
from router.memcache.text import value_line
from shared import entry
from shared import ringcache_pb2 as pb
from tests.fakes import MemcacheConn, PlaneConn


def test_prefixes_count_gets_hits_sets_and_deletes_in_memcacheds_words():
    stats = PrefixStats()
    stats.record_set(b"foo:1")
    stats.record_get(b"foo:1", True)
    stats.record_get(b"foo:2", False)
    stats.record_delete(b"bar:x:y")
    stats.record_get(b"plain", True)  # no delimiter: not counted, as in memcached
    assert stats.dump() == (b"PREFIX foo get 2 hit 1 set 1 del 0\r\n"
                            b"PREFIX bar get 0 hit 0 set 0 del 1\r\nEND\r\n")
    stats.clear()
    assert stats.dump() == b"END\r\n"


def test_hits_are_read_by_byte_counts():
    answer = (value_line(b"a", 0, b"VALUE b 0 1\r\nx") + value_line(b"c", 5, b"", 9)
              + b"END\r\n")
    assert [key for key, _ in values_of(answer)] == [b"a", b"c"]
    assert values_of(b"END\r\n") == []
    assert values_of(b"SERVER_ERROR node down\r\n") == []


def test_a_run_of_gets_is_read_across_each_get_s_end():
    # "get a\r\nget b c\r\n" answered at once: every get's hits, with their sizes.
    answer = (value_line(b"a", 0, b"xy") + b"END\r\n" + b"END\r\n"
              + value_line(b"c", 1, b"END\r\nVALUE") + b"END\r\n")
    assert values_of(answer) == [(b"a", 2), (b"c", 10)]


def test_stats_detail_on_counts_until_off_and_reset_clears():
    conn = MemcacheConn()
    conn.send(b"stats detail on\r\ndelete foo:1\r\nstats detail dump\r\n")
    conn.router.deferreds()[0].callback(False)
    assert conn.turn() == (b"OK\r\nNOT_FOUND\r\nPREFIX foo get 0 hit 0 set 0 del 1\r\n"
                           b"END\r\n")
    conn.send(b"stats settings\r\n")
    assert b"STAT detail_enabled yes\r\n" in conn.turn()
    conn.send(b"stats detail off\r\ndelete foo:2\r\nstats reset\r\nstats detail dump\r\n")
    conn.router.deferreds()[1].callback(False)
    assert conn.turn() == b"OK\r\nNOT_FOUND\r\nRESET\r\nEND\r\n"


def test_gets_count_per_key_with_their_hits():
    plane = PlaneConn()  # group "sessions" has no source: a miss is a miss
    plane.send(b"stats detail on\r\nget sessions:1 sessions:2 sessions:1\r\n")
    plane.node().answer_prepared(lambda request: pb.Response(
        values=[entry.pack(b"v") if k == b"1" else b"" for k in request.keys]))
    assert plane.turn() == b"OK\r\n" + value_line(b"sessions:1", 0, b"v") * 2 + b"END\r\n"
    plane.send(b"stats detail dump\r\n")
    assert plane.turn() == b"PREFIX sessions get 3 hit 2 set 0 del 0\r\nEND\r\n"
