"""The router's side of leases (router/cluster/leases.py) on fake nodes: what each answer
to a LEASE_GET becomes, the fill under the token, grace, copies and the old nodes."""

from __future__ import annotations

from router.cluster.errors import SourceError
from router.cluster.items import Item
from router.cluster.leases import LEASE_MARGIN, lease_life
from shared import ringcache_pb2 as pb
from tests.fakes import LEASE, PlaneConn, make_router, node, topology
from tests.helpers import outcomes

GRACED = {"scores": {"ttl": "1m", "stale_while_revalidate": "30s", "stale_if_error": "10m",
                     "source": {"python": "fake:scores", "timeout": "2s"}},
          "sessions": {}}


def miss(router, key=b"k", group="scores"):
    """A get of ``key`` whose first read missed: its LEASE_GET, sent inside the flight."""
    got = outcomes(router.get(group, key))
    node(router).take()[0].answer(pb.NOT_FOUND)
    [lease_get] = node(router).take()
    assert lease_get.op == pb.LEASE_GET
    return got, lease_get


def loads(router, group="scores"):
    return router.groups[group].source.loads


def test_a_lease_lives_the_source_timeout_and_a_margin():
    router = make_router(topology(groups=GRACED))
    assert lease_life(router.groups["scores"]) == 2.0 + LEASE_MARGIN
    _, lease_get = miss(router)
    assert (lease_get.lease_ttl, lease_get.wait) == (3.0, 6.0)


def test_a_read_that_waited_at_the_node_gets_the_other_routers_fill_and_loads_nothing():
    router = make_router()
    got, lease_get = miss(router)
    lease_get.answer(value=b"filled elsewhere", flags=4, cas=9, ttl=250)
    assert got == [Item(b"filled elsewhere", 4, 9, hit=False, ttl=250)]
    assert loads(router) == [] and node(router).sent == []


def test_a_lease_waited_on_that_found_nothing_answers_not_found_without_a_load():
    router = make_router()
    got, lease_get = miss(router)
    lease_get.answer(pb.NOT_FOUND, lease=0)
    assert got == [None] and loads(router) == []


def test_a_failed_load_waited_on_is_the_sources_error():
    router = make_router()
    got, lease_get = miss(router)
    lease_get.answer(pb.SOURCE_FAILED, error="database is on fire")
    [failure] = got
    assert failure.check(SourceError)
    assert str(failure.value) == "source python:fake:scores failed: database is on fire"


def test_a_fill_the_node_refused_still_answers_the_load_and_is_counted():
    router = make_router()
    got, lease_get = miss(router)
    lease_get.answer(pb.NOT_FOUND)
    loads(router)[0][1].callback(b"loaded before the write")
    [fill] = node(router).take()
    fill.answer(pb.NOT_STORED)  # a write of the key came first: not cached
    assert got == [Item(b"loaded before the write", hit=False)]
    assert router.stats.lease_fills_dropped == {"scores": 1}
    assert router.stats.lease_loads == {"scores": 1}


def test_a_node_without_leases_is_read_through_the_old_way():
    router = make_router()
    got, lease_get = miss(router)
    lease_get.answer(pb.UNKNOWN_OP, error="unknown op 12")
    [recheck] = node(router).take()
    assert recheck.op == pb.GET and node(router).leases is False
    recheck.answer(pb.NOT_FOUND)
    loads(router)[0][1].callback(b"v")
    [fill] = node(router).take()
    assert (fill.op, fill.value) == (pb.SET, b"v")
    fill.answer()
    assert got == [Item(b"v", hit=False)]
    # Until it reconnects, no LEASE_GET is tried again.
    router.get("scores", b"other")
    node(router).take()[0].answer(pb.NOT_FOUND)
    assert [s.op for s in node(router).take()] == [pb.GET]


def test_an_unreachable_owner_is_loaded_around_without_a_second_look():
    router = make_router()
    got, lease_get = miss(router)
    lease_get.fail()
    loads(router)[0][1].callback(b"v")
    [fill] = node(router).take()
    assert fill.op == pb.SET  # no lease to fill under
    fill.fail()
    assert got == [Item(b"v", hit=False)]


def test_the_missing_keys_of_a_multi_get_ask_their_leases_at_once():
    plane = PlaneConn()
    plane.send(b"get a b c\r\n")
    plane.answer({})
    asked = plane.node().take()
    assert sorted((s.op, s.key) for s in asked) == [(pb.LEASE_GET, k) for k in (b"a", b"b", b"c")]
    for sent in asked:
        sent.answer(value=b"v-" + sent.key)
    assert plane.turn() == (b"VALUE a 0 3\r\nv-a\r\nVALUE b 0 3\r\nv-b\r\n"
                            b"VALUE c 0 3\r\nv-c\r\nEND\r\n")


# -- grace --------------------------------------------------------------------------------


def test_within_swr_the_stale_value_is_answered_at_once_and_refreshed_behind():
    router = make_router(topology(groups=GRACED))
    got, lease_get = miss(router)
    lease_get.answer(value=b"old", stale=pb.REVALIDATE, lease=LEASE)
    assert got == [Item(b"old", hit=False, stale="revalidate")]  # before any load ends
    [(key, load)] = loads(router)
    load.callback(b"new")
    [fill] = node(router).take()
    assert (fill.op, fill.value, fill.lease, fill.ttl) == (pb.LEASE_FILL, b"new", LEASE, 60.0)
    assert router.stats.stale_answers == {("scores", "revalidate"): 1}
    assert len(router.flight) == 0


def test_within_swr_with_a_refresh_out_the_stale_value_loads_nothing():
    router = make_router(topology(groups=GRACED))
    got, lease_get = miss(router)
    lease_get.answer(value=b"old", stale=pb.REVALIDATE, lease=0)
    assert got == [Item(b"old", hit=False, stale="revalidate")]
    assert loads(router) == [] and node(router).sent == []


def test_within_sie_a_failed_load_answers_the_stale_value():
    router = make_router(topology(groups=GRACED))
    got, lease_get = miss(router)
    lease_get.answer(value=b"old", stale=pb.IF_ERROR, lease=LEASE)
    assert got == []  # loading first
    loads(router)[0][1].errback(SourceError("python:fake:scores", "timed out"))
    assert got == [Item(b"old", hit=False, stale="if_error")]
    [release] = node(router).take()
    assert (release.op, release.meta, release.value) == (pb.LEASE_RELEASE, pb.LEASE_FAILED,
                                                         b"timed out")
    assert router.stats.stale_answers == {("scores", "if_error"): 1}


def test_within_sie_a_load_that_works_answers_the_new_value():
    router = make_router(topology(groups=GRACED))
    got, lease_get = miss(router)
    lease_get.answer(value=b"old", stale=pb.IF_ERROR, lease=LEASE)
    loads(router)[0][1].callback(b"new")
    node(router).take()[0].answer(cas=3)
    assert got == [Item(b"new", 0, 3, hit=False)]
    assert router.stats.stale_answers == {}


def test_groups_send_their_grace_to_the_nodes():
    router = make_router(topology(groups=GRACED))
    config = {c.name: c for c in router._group_configs()}
    assert (config["scores"].stale_while_revalidate, config["scores"].stale_if_error) == (30, 600)
    assert config["sessions"].stale_while_revalidate == 0


# -- warm-up and replicas ----------------------------------------------------------------------


def test_a_warm_up_copy_is_filled_under_the_lease():
    groups = {"scores": {"ttl": "1m", "source": {"python": "fake:scores"}}, "sessions": {}}
    router = make_router(topology(nodes=["node-a"], groups=groups, warmup="30s"))
    old = router.clients["node-a"]
    router.reload(topology(nodes=["node-a", "node-b"], groups=groups, warmup="30s"))
    new = router.clients["node-b"]
    new.start()
    key = next(b"k%d" % i for i in range(1000) if router.owner("scores", b"k%d" % i) == "node-b")
    got = outcomes(router.get("scores", key))
    new.take()[0].answer(pb.NOT_FOUND)
    [lease_get] = new.take()
    assert lease_get.op == pb.LEASE_GET and old.sent == []  # the lease first
    lease_get.answer(pb.NOT_FOUND)
    [get] = old.take()
    get.answer(value=b"warm", flags=2, ttl=100)
    # Not an ADD: the lease orders the copy against the new owner's writes.
    [fill] = new.take()
    assert (fill.op, fill.value, fill.ttl, fill.flags, fill.lease) == (
        pb.LEASE_FILL, b"warm", 100, 2, LEASE)
    fill.answer(cas=5)
    assert got == [Item(b"warm", 2, 5, hit=False, ttl=100)]
    assert loads(router) == [] and router.stats.warmup_hits == 1
