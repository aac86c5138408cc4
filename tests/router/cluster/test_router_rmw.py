"""The router's paths for memcached's other writes (router.write, gat, flush) and the CAS
uniques items carry, against fake node clients (tests/router/cluster/test_router.py's)."""

from __future__ import annotations

import pytest

from router.cluster.errors import NodeError, TooLarge
from router.cluster.router import Item
from router.cluster.writes import (
    EXISTS,
    MISSING,
    NON_NUMERIC,
    NOT_STORED_,
    STORED,
    Written,
)
from shared import ringcache_pb2 as pb
from tests.fakes import make_router, node, replicated
from tests.helpers import outcomes


@pytest.mark.parametrize("op, status, outcome", [
    (pb.SET, pb.OK, STORED),
    (pb.ADD, pb.NOT_STORED, NOT_STORED_),
    (pb.CAS, pb.OK, STORED),
    (pb.CAS, pb.NOT_STORED, EXISTS),
    (pb.CAS, pb.NOT_FOUND, MISSING),
    (pb.APPEND, pb.NOT_FOUND, NOT_STORED_),
    (pb.PREPEND, pb.NOT_STORED, EXISTS),
    (pb.INCR, pb.NOT_FOUND, MISSING),
    (pb.DECR, pb.NOT_STORED, NON_NUMERIC),
    (pb.DELETE, pb.NOT_STORED, EXISTS),
])
def test_write_outcomes_in_memcached_terms(op, status, outcome):
    router = make_router()
    got = outcomes(router.write(op, "sessions", b"k", b"v", 5, 3, cas=77, delta=4))
    [sent] = node(router).take()
    assert (sent.op, sent.key, sent.value, sent.ttl, sent.flags, sent.cas, sent.delta) == (
        op, b"k", b"v", 5, 3, 77, 4)
    sent.answer(status, value=b"12", cas=9 if status == pb.OK else 0)
    assert got == [Written(outcome, 9 if status == pb.OK else 0, b"12")]


def test_write_errors_are_errors():
    router = make_router()
    got = outcomes(router.write(pb.INCR, "sessions", b"k", delta=1))
    node(router).take()[0].answer(pb.ERROR, error="disk on fire")
    assert got[0].check(NodeError)
    got = outcomes(router.write(pb.APPEND, "sessions", b"k", b"x"))
    node(router).take()[0].answer(pb.TOO_LARGE, error="too big")
    assert got[0].check(TooLarge)


def test_cas_followers_get_a_set_and_incr_followers_the_same_incr():
    router, (first, second) = replicated()
    got = outcomes(router.write(pb.CAS, "sessions", b"k", b"v", 60, 3, cas=5))
    first.take()[0].answer(cas=11)
    [follower] = second.take()
    assert (follower.op, follower.value, follower.ttl, follower.flags, follower.cas) == (
        pb.SET, b"v", 60, 3, 0)
    follower.answer(cas=99)
    assert got == [Written(STORED, 11)]  # the deciding replica's unique

    got = outcomes(router.write(pb.INCR, "sessions", b"k", delta=2))
    first.take()[0].answer(value=b"7", cas=12)
    [follower] = second.take()
    assert (follower.op, follower.delta) == (pb.INCR, 2)
    follower.answer(value=b"7")
    assert got == [Written(STORED, 12, b"7")]


def test_a_write_not_applied_by_the_deciding_replica_is_not_followed():
    router, (first, second) = replicated()
    got = outcomes(router.write(pb.CAS, "sessions", b"k", b"v", cas=5))
    first.take()[0].answer(pb.NOT_STORED)
    assert second.sent == []
    assert got == [Written(EXISTS)]


def test_a_loaded_value_carries_the_cas_unique_its_store_was_given():
    router = make_router()
    got = outcomes(router.get("scores", b"k"))
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].answer(pb.NOT_FOUND)  # looked at again inside the flight
    router.groups["scores"].source.loads[0][1].callback(b"loaded")
    [store] = node(router).take()
    assert store.op == pb.SET
    store.answer(cas=41)
    assert got == [Item(b"loaded", 0, 41, hit=False)]


def test_a_hit_carries_its_cas_unique():
    router = make_router()
    got = outcomes(router.get("sessions", b"k"))
    node(router).take()[0].answer(value=b"v", flags=2, cas=8)
    assert got == [Item(b"v", 2, 8)]


def test_gat_hit_and_miss_of_a_plain_group():
    router = make_router()
    got = outcomes(router.gat("sessions", b"k", 30.0))
    [sent] = node(router).take()
    assert (sent.op, sent.ttl) == (pb.GAT, 30.0)
    sent.answer(value=b"v", cas=3)
    assert got == [Item(b"v", 0, 3)]
    got = outcomes(router.gat("sessions", b"k", None))
    node(router).take()[0].answer(pb.NOT_FOUND)
    assert got == [None]


def test_gat_of_a_miss_reads_through_and_gives_the_loaded_value_its_ttl():
    router = make_router()
    got = outcomes(router.gat("scores", b"k", 30.0))
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].answer(pb.NOT_FOUND)
    router.groups["scores"].source.loads[0][1].callback(b"loaded")
    node(router).take()[0].answer(cas=5)  # the fill, with the group's ttl
    [touch] = node(router).take()
    assert (touch.op, touch.ttl) == (pb.TOUCH, 30.0)
    touch.answer()
    assert got == [Item(b"loaded", 0, 5, hit=False)]


def test_flush_reaches_every_group_on_every_node_with_its_delay():
    router = make_router()
    got = outcomes(router.flush(10.0))
    sent = node(router).take()
    assert sorted((s.op, s.group, s.ttl) for s in sent) == [
        (pb.FLUSH_GROUP, g, 10.0) for g in sorted(router.groups)]
    for s in sent:
        s.answer()
    assert got == [None]


def test_flush_fails_when_a_node_fails():
    router = make_router()
    got = outcomes(router.flush())
    first, *rest = node(router).take()
    first.fail()
    for s in rest:
        s.answer()
    assert len(got) == 1 and got[0].getErrorMessage().startswith("node node unavailable")
