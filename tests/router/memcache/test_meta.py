"""memcached's meta commands: their lines parsed (whole, a byte at a time, with trailing
data) and their answers, over a StringTransport against tests/fakes.py's
fake router. Expected answers were taken from memcached 1.6 itself."""

from __future__ import annotations

import pytest

from router.cluster.router import Item
from router.cluster.writes import (
    EXISTS,
    MISSING,
    NON_NUMERIC,
    NOT_STORED_,
    STORED,
    Written,
)
from router.memcache.text import (
    ClientError,
    MemcacheParser,
    ServerError,
    Unknown,
    Version,
)
from tests.fakes import MemcacheConn


def meta(command, key=b"", flags=None, order="", value=b"", wire_key=None):
    from router.memcache.meta import Meta

    return Meta(command, key, key if wire_key is None else wire_key, flags or {}, order, value)


PARSED = {
    "mg": (b"mg k v f O12 q\r\n",
           meta("mg", b"k", {"v": None, "f": None, "O": b"12", "q": None}, "vfOq")),
    "mg no flags": (b"mg k\r\n", meta("mg", b"k")),
    "ms": (b"ms k 2 T30 F5 MA C9\r\nhi\r\n",
           meta("ms", b"k", {"T": 30, "F": 5, "M": "append", "C": 9}, "TFMC", b"hi")),
    "ms base64 key": (b"ms aGk= 2 b\r\nyo\r\n", meta("ms", b"hi", {"b": None}, "b", b"yo", b"aGk=")),
    "md": (b"md k q C3\r\n", meta("md", b"k", {"q": None, "C": 3}, "qC")),
    "ma": (b"ma k D5 N0 J3 v MD\r\n",
           meta("ma", b"k", {"D": 5, "N": 0, "J": 3, "v": None, "M": "decr"}, "DNJvM")),
    "mn": (b"mn\r\n", meta("mn")),
    "me": (b"me k\r\n", meta("me", b"k")),
    # refusals, in memcached's words
    "mg no key": (b"mg\r\n", Unknown(b"mg")),
    "mg invalid flag": (b"mg k X\r\n", ClientError("invalid flag")),
    "mg duplicate flag": (b"mg k v v\r\n", ClientError("duplicate flag")),
    "mg bad token": (b"mg k Tx\r\n", ClientError("bad token in command line format")),
    "mg opaque too long": (b"mg k O" + b"1" * 33 + b"\r\n", ClientError("opaque token too long")),
    "mg key too long": (b"mg " + b"k" * 251 + b" v\r\n", ClientError("bad command line format")),
    "ms no length": (b"ms k\r\n", ClientError("bad command line format")),
    "ms bad mode swallows its data": (b"ms k 2 MZ\r\nhi\r\n",
                                      ClientError("invalid mode for ms M token")),
    "ms bad flags token": (b"ms k 2 Fx\r\nhi\r\n", ClientError("bad command line format")),
    "ms bad base64": (b"ms %%% 2 b\r\nhi\r\n", ClientError("error decoding key")),
    "ms too large": (b"ms k 2000 T1\r\n" + b"v" * 2000 + b"\r\n",
                     ServerError("object too large for cache", False, b"k")),
    "md bad flag": (b"md k Cx\r\n", ClientError("invalid or duplicate flag")),
    "ma bad mode": (b"ma k Mx\r\n", ClientError("invalid mode for ma M token")),
}


# Refused before memcached knows the data block's size: the block is read as a command.
UNSWALLOWED = {
    "ms key too long": (b"ms " + b"k" * 251 + b" 2\r\nhi\r\n",
                        [ClientError("bad command line format"), Unknown(b"hi")]),
    "ms negative length": (b"ms k -1\r\nhi\r\n",
                           [ClientError("bad command line format"), Unknown(b"hi")]),
}


@pytest.mark.parametrize("name", UNSWALLOWED)
def test_ms_refused_before_its_length_leaves_the_data_unread(name):
    data, events = UNSWALLOWED[name]
    assert parse([data]) == events
    assert parse([data[i:i + 1] for i in range(len(data))]) == events
    assert parse([data + b"version\r\n"]) == [*events, Version()]


def parse(chunks) -> list:
    parser = MemcacheParser(item_size_max=1024)
    events = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events.extend(parser.events())
    assert parser.buffered == 0
    return events


@pytest.mark.parametrize("name", PARSED)
def test_meta_lines_parse_whole_bytewise_and_with_trailing_data(name):
    data, event = PARSED[name]
    assert parse([data]) == [event]
    assert parse([data[i:i + 1] for i in range(len(data))]) == [event]
    assert parse([data + b"version\r\n"]) == [event, Version()]


@pytest.fixture
def conn():
    return MemcacheConn()


def test_mg_hit_echoes_flags_in_request_order(conn):
    conn.send(b"mg sessions:k s v f c k O99 t\r\n")
    assert conn.router.ops() == [("get", ("sessions", b"k"))]
    conn.router.deferreds()[0].callback(Item(b"hi", 7, 209))
    assert conn.turn() == b"VA 2 s2 f7 c209 ksessions:k O99 t-1\r\nhi\r\n"


def test_mg_miss_and_quiet_miss(conn):
    conn.send(b"mg a v\r\nmg b v q\r\nmg c\r\nmn\r\n")
    a, b, c = conn.router.deferreds()
    a.callback(None)
    b.callback(None)
    c.callback(Item(b"x"))
    assert conn.turn() == b"EN\r\nHD\r\nMN\r\n"


def test_mg_with_T_is_a_gat_and_reports_that_ttl(conn):
    conn.send(b"mg k T30 t v\r\n")
    assert conn.router.ops() == [("gat", ("default", b"k", 30.0))]
    conn.router.deferreds()[0].callback(Item(b"v"))
    assert conn.turn() == b"VA 1 t30\r\nv\r\n"


def test_mg_N_vivifies_a_miss_and_tells_the_winner(conn):
    conn.send(b"mg k N30 c v\r\n")
    conn.router.deferreds()[0].callback(None)
    assert conn.router.ops()[1] == ("add", ("default", b"k", b"", 30.0, 0))
    conn.router.deferreds()[1].callback(Written(STORED, 12))
    assert conn.turn() == b"VA 0 c12 W\r\n\r\n"


@pytest.mark.parametrize("line, call, outcome, answer", [
    (b"ms k 2 T30 F5 c\r\nhi\r\n", ("set", ("default", b"k", b"hi", 30.0, 5)), STORED,
     b"HD c41\r\n"),
    (b"ms k 2 q\r\nhi\r\n", ("set", ("default", b"k", b"hi", None, 0)), STORED, b""),
    (b"ms k 2 ME q\r\nhi\r\n", ("add", ("default", b"k", b"hi", None, 0)), NOT_STORED_,
     b"NS\r\n"),
    (b"ms k 2 C5 O1\r\nhi\r\n", ("cas", ("default", b"k", b"hi", None, 0, 5)), EXISTS,
     b"EX O1\r\n"),
    (b"ms k 2 C5 k\r\nhi\r\n", ("cas", ("default", b"k", b"hi", None, 0, 5)), MISSING,
     b"NF kk\r\n"),
    (b"ms k 2 MP\r\nhi\r\n", ("prepend", ("default", b"k", b"hi", None, 0, 0)), NOT_STORED_,
     b"NS\r\n"),
])
def test_ms(conn, line, call, outcome, answer):
    conn.send(line)
    assert conn.router.ops() == [call]
    conn.router.deferreds()[0].callback(Written(outcome, 41 if outcome == STORED else 0))
    assert conn.turn() == answer


@pytest.mark.parametrize("line, call, result, answer", [
    (b"md k\r\n", ("delete", ("default", b"k")), True, b"HD\r\n"),
    (b"md k q\r\n", ("delete", ("default", b"k")), True, b""),
    (b"md k q\r\n", ("delete", ("default", b"k")), False, b"NF\r\n"),
    (b"md k C3 O5 k\r\n", ("delete", ("default", b"k", b"", None, 0, 3)), Written(EXISTS),
     b"EX O5 kk\r\n"),
])
def test_md(conn, line, call, result, answer):
    conn.send(line)
    assert conn.router.ops() == [call]
    conn.router.deferreds()[0].callback(result)
    assert conn.turn() == answer


def test_ma_counts_and_creates_on_N(conn):
    conn.send(b"ma k N60 J5 v\r\n")
    assert conn.router.ops() == [("incr", ("default", b"k", 1, b"5", 60.0))]
    conn.router.deferreds()[0].callback(Written(STORED, 3, b"5"))
    assert conn.turn() == b"VA 1\r\n5\r\n"
    conn.send(b"ma k MD D2 c\r\nma k q\r\nma x\r\nma y\r\n")
    decr, quiet, missing, word = conn.router.deferreds()[1:]
    assert conn.router.ops()[1] == ("decr", ("default", b"k", 2))
    decr.callback(Written(STORED, 4, b"3"))
    quiet.callback(Written(STORED, 5, b"4"))
    missing.callback(Written(MISSING))
    word.callback(Written(NON_NUMERIC))
    assert conn.turn() == (b"HD c4\r\nNF\r\n"
                           b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")


def test_me_answers_EN_and_mn_MN(conn):
    conn.send(b"me k\r\nmn\r\n")
    assert conn.turn() == b"EN\r\nMN\r\n"
    assert conn.router.calls == []


# -- memcached's anti-stampede flags (storage_node/meta_ops.py keeps the item bits) ----------


def test_md_i_marks_stale_with_t_and_ms_i_stores_stale_under_an_older_cas(conn):
    from shared import ringcache_pb2 as pb

    conn.send(b"md k I T30 q\r\nmd k I\r\nms k 2 I C5\r\nhi\r\nms k 2 I\r\nhi\r\n")
    mark, touch_mark = pb.MARK_STALE, pb.MARK_STALE | pb.MG_TOUCH
    assert conn.router.ops() == [
        ("delete", ("default", b"k", b"", 30.0, 0, 0, touch_mark)),
        ("delete", ("default", b"k", b"", None, 0, 0, mark)),
        ("cas", ("default", b"k", b"hi", None, 0, 5, mark)),
        ("set", ("default", b"k", b"hi", None, 0)),  # I without a CAS unique: a plain set
    ]
    for d in conn.router.deferreds():
        d.callback(Written(STORED, 7))
    assert conn.turn() == b"HD\r\nHD\r\nHD\r\n"  # the quiet md said nothing


@pytest.mark.parametrize("line, sent, answer, reply", [
    # N: the node made the item (created) and this get won it.
    (b"mg k N30 v t\r\n", {"meta": "MG_VIVIFY", "delta": 30},
     {"meta": ("ITEM_CREATED", "ITEM_WON"), "cas": 3}, b"VA 0 t30 W\r\n\r\n"),
    # t before N shows the new item's ttl as it was made: none.
    (b"mg k t N30\r\n", {"meta": "MG_VIVIFY", "delta": 30},
     {"meta": ("ITEM_CREATED", "ITEM_WON")}, b"HD t-1 W\r\n"),
    # R won; Z and X after; X for a stale item (md I) the first get wins.
    (b"mg k R200 s\r\n", {"meta": "MG_RECACHE", "lease_ttl": 200},
     {"value": b"ab", "ttl": 99.6, "meta": ("ITEM_WON",)}, b"HD s2 W\r\n"),
    (b"mg k v t\r\n", {"meta": None}, {"value": b"ab", "ttl": 99.6,
                                       "meta": ("ITEM_WIN_SENT", "ITEM_STALE")},
     b"VA 2 t100 Z X\r\nab\r\n"),
    # T before R is what R compares; the node is told the order.
    (b"mg k T50 R200 t\r\n", {"meta": ("MG_TOUCH", "MG_TOUCH_FIRST", "MG_RECACHE"), "ttl": 50,
                              "lease_ttl": 200},
     {"value": b"ab", "ttl": 99.6, "meta": ("ITEM_WON",)}, b"HD t50 W\r\n"),
])
def test_mg_asks_the_owner_and_answers_its_item_bits(line, sent, answer, reply):
    from shared import ringcache_pb2 as pb
    from tests.fakes import PlaneConn

    def bits(names):
        names = (names,) if isinstance(names, str) else names or ()
        out = 0
        for name in names:
            out |= getattr(pb, name)
        return out

    plane = PlaneConn(groups={"scores": {}})
    plane.send(line)
    [request] = plane.node().take()
    assert (request.op, request.key, request.meta) == (pb.META_GET, b"k", bits(sent["meta"]))
    for field in ("delta", "ttl", "lease_ttl"):
        if field in sent:
            assert getattr(request, field) == sent[field]
    request.answer(**{**answer, "meta": bits(answer["meta"])})
    assert plane.turn() == reply


def test_mg_of_a_value_answered_stale_by_grace_shows_x():
    from shared import ringcache_pb2 as pb
    from tests.fakes import LEASE, PlaneConn

    plane = PlaneConn(groups={"scores": {"ttl": "1m", "stale_while_revalidate": "30s",
                                         "source": {"python": "fake:scores"}}})
    plane.send(b"mg k v\r\n")
    plane.node().take()[0].answer(pb.NOT_FOUND)  # past its ttl: a plain read misses it
    [lease_get] = plane.node().take()
    lease_get.answer(value=b"old", stale=pb.REVALIDATE, lease=LEASE)
    assert plane.turn() == b"VA 3 X\r\nold\r\n"


def test_mg_on_a_node_without_meta_get_takes_the_plain_way():
    from shared import ringcache_pb2 as pb
    from tests.fakes import PlaneConn

    plane = PlaneConn(groups={"scores": {}})
    plane.send(b"mg k v\r\n")
    plane.node().take()[0].answer(pb.UNKNOWN_OP, error="unknown op 15")
    [get] = plane.node().take()
    assert get.op == pb.GET
    get.answer(value=b"v")
    assert plane.turn() == b"VA 1\r\nv\r\n"
