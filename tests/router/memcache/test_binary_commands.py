"""The binary protocol on the memcached port, over a StringTransport against the fake router
of tests/fakes.py: the first byte picks it, and each command's answer."""

from __future__ import annotations

import struct

import pytest

from router.cluster.errors import NodeUnavailable, TooLarge
from router.cluster.router import Item
from router.cluster.writes import (
    EXISTS,
    MISSING,
    NON_NUMERIC,
    NOT_STORED_,
    STORED,
    Written,
)
from router.memcache import binary as mb
from router.memcache.binary_commands import BinaryCommands
from router.memcache.text_commands import TextCommands
from tests.fakes import MemcacheConn
from tests.router.memcache.binary_packets import ARITH, STORE, packet


@pytest.fixture
def conn():
    return MemcacheConn()


def answers(data: bytes) -> list[tuple]:
    """(opcode, status, key, extras, value, opaque, cas) of each answer in ``data``."""
    out = []
    while data:
        magic, opcode, keylen, extlen, _, status, bodylen, opaque, cas = mb.HEADER.unpack_from(data)
        assert magic == 0x81
        body = data[24:24 + bodylen]
        out.append((opcode, status, body[extlen:extlen + keylen], body[:extlen],
                    body[extlen + keylen:], opaque, cas))
        data = data[24 + bodylen:]
    return out


def test_the_first_byte_picks_the_protocol(conn):
    conn.send(packet(mb.GET, b"k", opaque=3))
    assert type(conn.protocol.commands) is BinaryCommands
    assert conn.router.ops() == [("get", ("default", b"k"))]
    conn.router.deferreds()[0].callback(Item(b"val", 7, 42))
    assert answers(conn.turn()) == [(mb.GET, 0, b"", b"\0\0\0\x07", b"val", 3, 42)]
    text = MemcacheConn()
    text.send(b"version\r\n")
    assert type(text.protocol.commands) is TextCommands
    assert text.turn().startswith(b"VERSION ")


def test_gets_of_every_kind(conn):
    conn.send(packet(mb.GETK, b"a", opaque=1) + packet(mb.GETQ, b"b", opaque=2)
              + packet(mb.GETKQ, b"c", opaque=3) + packet(mb.GET, b"d", opaque=4)
              + packet(mb.NOOP, opaque=5))
    a, b, c, d = conn.router.deferreds()
    a.callback(None)
    b.callback(None)  # quiet misses are not answered
    c.callback(Item(b"C", 0, 9))
    d.callback(None)
    assert answers(conn.turn()) == [
        (mb.GETK, mb.KEY_ENOENT, b"a", b"", b"", 1, 0),  # memcached: the key, no message
        (mb.GETKQ, 0, b"c", b"\0\0\0\0", b"C", 3, 9),
        (mb.GET, mb.KEY_ENOENT, b"", b"", b"Not found", 4, 0),
        (mb.NOOP, 0, b"", b"", b"", 5, 0),
    ]


@pytest.mark.parametrize("opcode, cas, call, outcome, status", [
    (mb.SET, 0, "set", STORED, 0),
    (mb.SET, 8, "cas", EXISTS, mb.KEY_EEXISTS),
    (mb.SET, 8, "cas", MISSING, mb.KEY_ENOENT),
    (mb.ADD, 0, "add", NOT_STORED_, mb.KEY_EEXISTS),
    (mb.REPLACE, 0, "replace", NOT_STORED_, mb.KEY_ENOENT),
    (mb.REPLACE, 8, "cas", STORED, 0),
])
def test_stores(conn, opcode, cas, call, outcome, status):
    conn.send(packet(opcode, b"k", STORE, b"v", opaque=6, cas=cas))
    [(op, args)] = conn.router.ops()
    assert (op, args[:5]) == (call, ("default", b"k", b"v", 60.0, 7))
    conn.router.deferreds()[0].callback(Written(outcome, 11 if outcome == STORED else 0))
    [(opcode_, status_, _, extras, value, opaque, answer_cas)] = answers(conn.turn())
    assert (opcode_, status_, extras, opaque) == (opcode, status, b"", 6)
    assert answer_cas == (11 if outcome == STORED else 0)
    assert (value == b"") == (outcome == STORED)


def test_quiet_stores_answer_only_failures(conn):
    conn.send(packet(mb.SETQ, b"a", STORE, b"v") + packet(mb.APPENDQ, b"b", value=b"x")
              + packet(mb.DELETEQ, b"c") + packet(mb.NOOP, opaque=1))
    stored, appended, deleted = conn.router.deferreds()
    stored.callback(True)
    appended.callback(Written(NOT_STORED_))
    deleted.callback(False)
    assert [(a[0], a[1]) for a in answers(conn.turn())] == [
        (mb.APPENDQ, mb.NOT_STORED), (mb.DELETEQ, mb.KEY_ENOENT), (mb.NOOP, 0)]


def test_incr_creates_a_missing_counter_from_its_initial_value(conn):
    conn.send(packet(mb.INCR, b"n", ARITH, opaque=2))
    # The node creates it, in the same step (so nothing sent later overtakes it).
    assert conn.router.ops() == [("incr", ("default", b"n", 5, b"10", None))]
    conn.router.deferreds()[0].callback(Written(STORED, 4, b"10"))
    assert answers(conn.turn()) == [(mb.INCR, 0, b"", b"", struct.pack(">Q", 10), 2, 4)]


@pytest.mark.parametrize("answer, status, value", [
    (Written(STORED, 3, b"7"), 0, struct.pack(">Q", 7)),
    (Written(MISSING), mb.KEY_ENOENT, b"Not found"),
    (Written(NON_NUMERIC), mb.DELTA_BADVAL, b"Non-numeric server-side value for incr or decr"),
])
def test_decr_that_may_not_create(conn, answer, status, value):
    conn.send(packet(mb.DECR, b"n", struct.pack(">QQI", 1, 0, mb.NO_CREATE)))
    conn.router.deferreds()[0].callback(answer)
    assert conn.router.ops() == [("decr", ("default", b"n", 1))]
    [(_, status_, _, _, value_, _, _)] = answers(conn.turn())
    assert (status_, value_) == (status, value)


def test_flush_touch_and_gat(conn):
    conn.send(packet(mb.FLUSH, extras=b"\0\0\0\x1e") + packet(mb.TOUCH, b"t", b"\0\0\0\x05")
              + packet(mb.GATK, b"g", b"\0\0\0\x05"))
    assert conn.router.ops() == [("flush", (30.0,)), ("gat", ("default", b"t", 5.0)),
                                 ("gat", ("default", b"g", 5.0))]
    flushed, touched, gat = conn.router.deferreds()
    flushed.callback(None)
    touched.callback(Item(b"big value", 3, 8))
    gat.callback(Item(b"G", 1, 9))
    assert answers(conn.turn()) == [
        (mb.FLUSH, 0, b"", b"", b"", 0xDEADBEEF, 0),
        (mb.TOUCH, 0, b"", b"\0\0\0\x03", b"", 0xDEADBEEF, 8),  # no value for touch
        (mb.GATK, 0, b"g", b"\0\0\0\x01", b"G", 0xDEADBEEF, 9),
    ]


def test_version_stat_and_unknown_commands(conn):
    conn.send(packet(mb.VERSION) + packet(0x20) + packet(mb.STAT, b"bogus")
              + packet(mb.STAT, b"settings"))
    got = answers(conn.turn())
    assert got[0][:2] == (mb.VERSION, 0) and got[0][4] == b"1.6.21 ringcache-0.1.0"
    assert got[1][:2] == (0x20, mb.UNKNOWN_COMMAND) and got[1][4] == b"Unknown command"
    assert got[2][:2] == (mb.STAT, mb.KEY_ENOENT)
    stats = got[3:]
    assert stats[-1] == (mb.STAT, 0, b"", b"", b"", 0xDEADBEEF, 0)  # the empty one ends it
    assert (b"cas_enabled", b"yes") in [(s[2], s[4]) for s in stats]


END_OF_STATS = (mb.STAT, 0, b"", b"", b"", 0xDEADBEEF, 0)


@pytest.mark.parametrize("key, stats", [
    (b"detail on", []), (b"detail off", []), (b"reset", []), (b"resetting", []),
    (b"detail dump", [(b"detailed", b"END\r\n")]), (b"sizes", [(b"sizes_status", b"disabled")]),
])
def test_stats_that_take_a_key_are_answered_and_the_connection_goes_on(conn, key, stats):
    # memcached reads reset, settings and detail by their prefix; each ends in the empty
    # answer, and the next request is served (it once was "Not found" for good).
    conn.send(packet(mb.STAT, key) + packet(mb.NOOP, opaque=9))
    got = answers(conn.turn())
    assert [(s[2], s[4]) for s in got[:-2]] == stats
    assert got[-2:] == [END_OF_STATS, (mb.NOOP, 0, b"", b"", b"", 9, 0)]


@pytest.mark.parametrize("key", [b"detail", b"detail x", b"conns", b"cachedump 1 1", b"item"])
def test_stats_memcached_does_not_answer_in_binary_are_not_found(conn, key):
    conn.send(packet(mb.STAT, key) + packet(mb.NOOP, opaque=9))
    got = answers(conn.turn())
    assert [g[:2] for g in got] == [(mb.STAT, mb.KEY_ENOENT), (mb.NOOP, 0)]


@pytest.mark.parametrize("error, status", [
    (NodeUnavailable("node-a", "down"), mb.ETMPFAIL),
    (TooLarge("too big"), mb.E2BIG),
])
def test_router_errors_are_binary_errors(conn, error, status):
    conn.send(packet(mb.GET, b"k"))
    conn.router.deferreds()[0].errback(error)
    [(_, status_, _, _, value, _, cas)] = answers(conn.turn())
    assert (status_, cas) == (status, 0)


def test_quit_answers_then_closes_and_quitq_just_closes(conn):
    conn.send(packet(mb.QUIT) + packet(mb.NOOP))
    assert [a[0] for a in answers(conn.transport.value())] == [mb.QUIT]
    assert conn.transport.disconnecting
    quiet = MemcacheConn()
    quiet.send(packet(mb.QUITQ))
    assert quiet.transport.value() == b"" and quiet.transport.disconnecting


def test_a_lost_stream_is_closed_after_earlier_answers(conn):
    conn.send(packet(mb.GET, b"k") + b"get k\r\n" * 4)  # a header's worth of text
    assert not conn.transport.disconnecting
    conn.router.deferreds()[0].callback(None)
    assert answers(conn.turn())[0][1] == mb.KEY_ENOENT
    assert conn.transport.disconnecting


def test_an_oversized_value_is_refused_and_the_connection_goes_on(conn):
    big = packet(mb.SET, b"k", STORE, b"v" * 2000)  # the fake router's item_size_max: 1024
    conn.send(big[:100])
    conn.send(big[100:] + packet(mb.NOOP))
    assert [a[:2] for a in answers(conn.turn())] == [(mb.SET, mb.E2BIG), (mb.NOOP, 0)]
    assert conn.router.calls == []


def test_gets_name_their_connection(conn):
    conn.send(packet(mb.GET, b"a", opaque=1) + packet(mb.GAT, b"b", extras=b"\0\0\0\0",
                                                      opaque=2))
    assert conn.router.conns == [conn.protocol, conn.protocol]
