"""The node's read-modify-write ops for memcached's commands: INCR/DECR, CAS, APPEND/PREPEND,
GAT and a delayed FLUSH_GROUP, driven through Node.handle with a fake clock."""

from __future__ import annotations

import pytest

from shared import ringcache_pb2 as pb
from storage_node.node import Node, parse_counter
from tests.fakes import FakeClock
from tests.storage_node.cores.core_contract import FifoCore

MiB = 1 << 20
TTL_CORE = f"python:{__name__}:TtlCore"
U64 = (1 << 64) - 1


class TtlCore(FifoCore):
    """A plugin core that can tell an entry's remaining ttl (the optional ttl_left)."""

    def ttl_left(self, key):
        _, deadline = self.data[key]
        return None if deadline is None else deadline - self.clock()


def req(op, key=b"k", value=b"", **fields) -> pb.Request:
    return pb.Request(id=1, op=op, group="g", key=key, value=value, **fields)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def node(clock):
    node = Node(16 * MiB, clock=clock, allowed_policies=[TTL_CORE])
    node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[
        pb.GroupConfig(name="g", policy="lru", max_bytes=MiB),
        pb.GroupConfig(name="a", policy="adaptive", max_bytes=MiB),
        pb.GroupConfig(name="t", policy=TTL_CORE, max_bytes=MiB)]))
    return node


@pytest.mark.parametrize("value, number", [
    (b"0", 0), (b"42", 42), (b"012", 12), (b" 12", 12), (b"12 ", 12), (b"12 x", 12),
    (b"18446744073709551615", U64),
    (b"+5", 5),
    (b"", None), (b"ab", None), (b"-5", None), (b"+", None), (b"1x", None),
    (b"18446744073709551616", None),
])
def test_parse_counter_reads_values_as_memcached_does(value, number):
    assert parse_counter(value) == number


def test_incr_and_decr_answer_the_new_value_and_a_new_cas_unique(node):
    node.handle(req(pb.SET, value=b"10", flags=7))  # CAS unique 1
    assert node.handle(req(pb.INCR, delta=5)) == pb.Response(id=1, value=b"15", cas=2)
    assert node.handle(req(pb.DECR, delta=3)) == pb.Response(id=1, value=b"12", cas=3)
    # The flags stay.
    assert node.handle(req(pb.GET)) == pb.Response(id=1, value=b"12", flags=7, cas=3)


def test_incr_wraps_at_64_bits_and_decr_stops_at_zero(node):
    node.handle(req(pb.SET, value=b"18446744073709551615"))
    assert node.handle(req(pb.INCR, delta=2)).value == b"1"
    assert node.handle(req(pb.DECR, delta=100)).value == b"0"
    # A shorter number keeps the old length, space-padded, as memcached stores it.
    assert node.handle(req(pb.GET)).value == b"0" + b" " * 19
    assert node.handle(req(pb.INCR, delta=10**19)).value == b"10000000000000000000"
    assert node.handle(req(pb.GET)).value == b"10000000000000000000"


def test_incr_with_an_initial_value_creates_a_missing_counter(node, clock):
    incr = pb.Request(id=1, op=pb.INCR, group="t", key=b"k", value=b"10", delta=5, ttl=30)
    assert node.handle(incr) == pb.Response(id=1, value=b"10", cas=1)
    assert node.handle(incr) == pb.Response(id=1, value=b"15", cas=2)
    clock.now += 30
    assert node.handle(pb.Request(id=1, op=pb.GET, group="t", key=b"k")).status == pb.NOT_FOUND


def test_incr_of_a_missing_or_non_numeric_value(node):
    assert node.handle(req(pb.INCR, delta=1)).status == pb.NOT_FOUND
    node.handle(req(pb.SET, b"n", negative=True, ttl=10))
    assert node.handle(req(pb.INCR, b"n", delta=1)).status == pb.NOT_FOUND
    node.handle(req(pb.SET, value=b"ab"))
    answer = node.handle(req(pb.DECR, delta=1))
    assert (answer.status, answer.error) == (
        pb.NOT_STORED, "cannot increment or decrement non-numeric value")
    assert node.handle(req(pb.GET)).value == b"ab"


@pytest.mark.parametrize("group", ["t", "g", "a"])  # a plugin core, lru, the default core
def test_incr_and_append_keep_the_ttl_a_core_can_tell(node, clock, group):
    node.handle(pb.Request(id=1, op=pb.SET, group=group, key=b"k", value=b"1", ttl=10))
    node.handle(pb.Request(id=1, op=pb.SET, group=group, key=b"s", value=b"a", ttl=10))
    clock.now += 4
    node.handle(pb.Request(id=1, op=pb.INCR, group=group, key=b"k", delta=1))
    node.handle(pb.Request(id=1, op=pb.APPEND, group=group, key=b"s", value=b"b"))
    clock.now += 5.9
    get = pb.Request(id=1, op=pb.GET, group=group)
    get.key = b"k"
    assert node.handle(get).value == b"2"
    get.key = b"s"
    assert node.handle(get).value == b"ab"
    clock.now += 0.1  # 10 s after the SETs, not after the INCR/APPEND
    assert node.handle(get).status == pb.NOT_FOUND
    get.key = b"k"
    assert node.handle(get).status == pb.NOT_FOUND


def test_cas_stores_only_over_the_unique_it_names(node):
    assert node.handle(req(pb.CAS, value=b"x", cas=1)).status == pb.NOT_FOUND
    unique = node.handle(req(pb.SET, value=b"a")).cas
    assert node.handle(req(pb.CAS, value=b"b", cas=unique + 1)).status == pb.NOT_STORED
    assert node.handle(req(pb.CAS, value=b"c", cas=unique, flags=4)) == pb.Response(
        id=1, cas=unique + 1)
    assert node.handle(req(pb.GET)) == pb.Response(id=1, value=b"c", flags=4, cas=unique + 1)
    # The unique it used is gone with the write.
    assert node.handle(req(pb.CAS, value=b"d", cas=unique)).status == pb.NOT_STORED


def test_append_and_prepend_keep_flags_and_check_a_cas_unique(node):
    assert node.handle(req(pb.APPEND, value=b"x")).status == pb.NOT_FOUND
    node.handle(req(pb.SET, value=b"mid", flags=3))  # unique 1
    assert node.handle(req(pb.APPEND, value=b">", flags=9)) == pb.Response(id=1, cas=2)
    assert node.handle(req(pb.PREPEND, value=b"<")) == pb.Response(id=1, cas=3)
    assert node.handle(req(pb.APPEND, value=b"!", cas=2)).status == pb.NOT_STORED
    assert node.handle(req(pb.APPEND, value=b"!", cas=3)).status == pb.OK
    assert node.handle(req(pb.GET)) == pb.Response(id=1, value=b"<mid>!", flags=3, cas=4)


def test_gat_answers_like_get_and_sets_the_ttl_of_a_hit(node, clock):
    assert node.handle(req(pb.GAT, ttl=5)).status == pb.NOT_FOUND
    node.handle(req(pb.SET, value=b"v", flags=2, ttl=100))
    assert node.handle(req(pb.GAT, ttl=5)) == pb.Response(id=1, value=b"v", flags=2, cas=1, ttl=5)
    clock.now += 5
    assert node.handle(req(pb.GET)).status == pb.NOT_FOUND


def test_a_delayed_flush_drops_what_was_stored_before_its_time_only(node, clock):
    node.handle(req(pb.SET, b"old", b"v"))
    assert node.handle(req(pb.FLUSH_GROUP, ttl=10)).status == pb.OK
    clock.now += 9.9
    assert node.handle(req(pb.GET, b"old")).status == pb.OK
    clock.now += 0.1
    node.handle(req(pb.SET, b"new", b"v"))
    assert node.handle(req(pb.GET, b"old")).status == pb.NOT_FOUND
    assert node.handle(req(pb.GET, b"new")).status == pb.OK


def test_a_flush_now_cancels_a_delayed_one(node, clock):
    node.handle(req(pb.FLUSH_GROUP, ttl=10))
    node.handle(req(pb.FLUSH_GROUP))
    node.handle(req(pb.SET, b"k", b"v"))
    clock.now += 20
    assert node.handle(req(pb.GET)).status == pb.OK


def test_stats_count_no_entry_a_due_flush_dropped(node, clock):
    node.handle(req(pb.SET, b"k", b"v"))
    node.handle(req(pb.FLUSH_GROUP, ttl=1))
    clock.now += 1
    stats = node.handle(pb.Request(id=1, op=pb.STATS)).stats
    assert [(g.name, g.items) for g in stats.groups] == [("g", 0), ("a", 0), ("t", 0)]
