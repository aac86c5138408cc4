"""memcached's anti-stampede flags on a node (storage_node/meta_ops.py): the item bits
META_GET, md I and ms I keep, with the outcomes memcached 1.6.18 gives (held side by side
against a real memcached in tests/integration/test_memcached_clients.py)."""

from __future__ import annotations

import pytest

from shared import entry
from shared import ringcache_pb2 as pb
from storage_node.node import Node
from tests.fakes import FakeClock

MiB = 1 << 20
WON, ZEE, STALE, CREATED = pb.ITEM_WON, pb.ITEM_WIN_SENT, pb.ITEM_STALE, pb.ITEM_CREATED


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def node(clock):
    node = Node(16 * MiB, clock=clock)
    node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[pb.GroupConfig(
        name="g", policy="lru", max_bytes=MiB)]))
    return node


def op(node, kind, key=b"k", value=b"", **fields):
    return node.handle(pb.Request(id=5, op=kind, group="g", key=key, value=value, **fields))


def mg(node, key=b"k", **fields):
    return op(node, pb.META_GET, key, **fields)


def test_a_miss_without_n_is_not_found(node):
    assert mg(node).status == pb.NOT_FOUND


def test_n_makes_an_empty_item_the_first_get_wins_later_ones_see_z(node):
    first = mg(node, meta=pb.MG_VIVIFY, delta=30)
    assert (first.status, first.value, first.meta) == (pb.OK, b"", CREATED | WON)
    assert first.cas
    second = mg(node, meta=pb.MG_VIVIFY, delta=30)
    assert (second.value, second.meta, second.cas, second.ttl) == (b"", ZEE, first.cas, 30)
    assert op(node, pb.GET).value == b""  # a plain get reads the empty item


def test_t_after_n_gives_the_new_item_ts_ttl_and_before_it_ns(node):
    mg(node, b"a", meta=pb.MG_VIVIFY | pb.MG_TOUCH, delta=30, ttl=40)
    assert op(node, pb.GET, b"a").ttl == 40
    mg(node, b"b", meta=pb.MG_VIVIFY | pb.MG_TOUCH | pb.MG_TOUCH_BEFORE_VIVIFY, delta=30, ttl=40)
    assert op(node, pb.GET, b"b").ttl == 30


def test_r_wins_once_when_less_is_left_than_its_token(node, clock):
    op(node, pb.SET, value=b"x", ttl=100)
    assert mg(node, meta=pb.MG_RECACHE, lease_ttl=50).meta == 0  # 100 s left: not yet
    assert mg(node, meta=pb.MG_RECACHE, lease_ttl=200).meta == WON
    assert mg(node, meta=pb.MG_RECACHE, lease_ttl=200).meta == ZEE
    op(node, pb.SET, value=b"y", ttl=100)  # a store replaces the item and its bits
    assert mg(node, meta=pb.MG_RECACHE, lease_ttl=200).meta == WON


def test_r_never_wins_an_item_without_a_ttl(node):
    op(node, pb.SET, value=b"x")
    assert mg(node, meta=pb.MG_RECACHE, lease_ttl=200).meta == 0


def test_t_before_r_is_what_r_compares(node):
    op(node, pb.SET, value=b"x", ttl=100)
    first = mg(node, meta=pb.MG_RECACHE | pb.MG_TOUCH | pb.MG_TOUCH_FIRST, ttl=500,
               lease_ttl=200)
    assert (first.meta, first.ttl) == (0, 100)  # the ttl answered is the one before T
    assert op(node, pb.GET).ttl == 500
    assert mg(node, meta=pb.MG_RECACHE | pb.MG_TOUCH, ttl=500, lease_ttl=200).meta == 0


def test_md_i_marks_stale_the_next_get_wins_the_rest_see_z_and_x(node):
    op(node, pb.SET, value=b"hi", ttl=100)
    before = op(node, pb.GET).cas
    marked = op(node, pb.DELETE, meta=pb.MARK_STALE)
    assert marked.status == pb.OK and marked.cas > before  # memcached bumps its CAS
    first = mg(node)
    assert (first.value, first.meta, first.cas, first.ttl) == (b"hi", STALE | WON, marked.cas, 100)
    assert mg(node).meta == STALE | ZEE
    assert op(node, pb.GET).value == b"hi"  # plain gets still read it
    # Marked again: the win is handed out anew.
    op(node, pb.DELETE, meta=pb.MARK_STALE)
    assert mg(node).meta == STALE | WON


def test_md_i_with_t_sets_the_ttl_and_checks_a_cas(node):
    op(node, pb.SET, value=b"hi", ttl=100)
    assert op(node, pb.DELETE, meta=pb.MARK_STALE, cas=999).status == pb.NOT_STORED
    assert op(node, pb.DELETE, meta=pb.MARK_STALE | pb.MG_TOUCH, ttl=9).status == pb.OK
    assert mg(node).ttl == 9
    assert op(node, pb.DELETE, key=b"none", meta=pb.MARK_STALE).status == pb.NOT_FOUND
    assert op(node, pb.DELETE).status == pb.OK  # a plain delete removes it
    assert mg(node).status == pb.NOT_FOUND


def test_ms_i_with_an_older_cas_stores_marked_stale_keeping_the_ttl_and_win_bit(node):
    op(node, pb.SET, key=b"other", value=b"an older CAS unique")
    op(node, pb.SET, value=b"hi", ttl=100)
    cas = op(node, pb.GET).cas
    stored = op(node, pb.CAS, value=b"xx", cas=cas - 1, meta=pb.MARK_STALE, ttl=7)
    assert stored.status == pb.OK and stored.cas > cas
    first = mg(node)
    assert (first.value, first.meta, first.ttl) == (b"xx", STALE | WON, 100)


def test_ms_i_after_a_win_keeps_the_win_and_a_newer_cas_is_refused(node):
    for _ in range(3):
        op(node, pb.SET, key=b"other", value=b"bump the cas")
    op(node, pb.SET, value=b"hi", ttl=100)
    cas = op(node, pb.GET).cas
    op(node, pb.DELETE, meta=pb.MARK_STALE)
    assert mg(node).meta == STALE | WON
    assert op(node, pb.CAS, value=b"qq", cas=1, meta=pb.MARK_STALE).status == pb.OK
    assert mg(node).meta == STALE | ZEE  # as memcached: the win bit came along
    newer = op(node, pb.GET).cas
    assert op(node, pb.CAS, value=b"zz", cas=newer + 5, meta=pb.MARK_STALE).status == pb.NOT_STORED
    assert op(node, pb.CAS, value=b"ok", cas=newer, meta=pb.MARK_STALE).status == pb.OK
    assert mg(node).meta == 0  # a matching CAS is a plain store: a fresh item
    assert cas < newer


def test_bits_ride_in_the_entry_and_every_reader_unpacks_them(node):
    op(node, pb.SET, value=b"v", flags=3)
    op(node, pb.DELETE, meta=pb.MARK_STALE)
    stored = node.groups.get("g").core.get(b"k")
    assert entry.bits(stored) == entry.STALE and entry.unpack_cas(stored)[:2] == (b"v", 3)
    many = op(node, pb.GET_MANY, keys=[b"k"])
    assert entry.unpack_cas(many.values[0])[:2] == (b"v", 3)
    assert entry.positive(many.values[0])


def test_a_vivify_voids_a_lease_and_its_waiters_get_the_new_item(clock):
    from tests.storage_node.test_leases import Peer

    node = Node(16 * MiB, clock=clock)
    node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[pb.GroupConfig(
        name="g", policy="lru", max_bytes=MiB)]))
    token = node.handle(pb.Request(id=2, op=pb.LEASE_GET, group="g", key=b"k", lease_ttl=5),
                        Peer()).lease
    waiter = Peer()
    node.handle(pb.Request(id=3, op=pb.LEASE_GET, group="g", key=b"k", lease_ttl=5), waiter)
    mg(node, meta=pb.MG_VIVIFY, delta=30)
    [answer] = waiter.take()
    assert (answer.status, answer.value) == (pb.OK, b"")
    assert op(node, pb.LEASE_FILL, value=b"late", lease=token).status == pb.NOT_STORED
