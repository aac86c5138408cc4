"""Router with fake node clients and sources: read-through, singleflight, stores, reload."""

from __future__ import annotations

import pytest

from router.cluster.errors import (
    NodeError,
    NodeUnavailable,
    SourceError,
    TooLarge,
    UnknownGroup,
)
from router.cluster.ring import HashRing
from router.cluster.router import Item
from shared import ringcache_pb2 as pb
from tests.fakes import (
    SCORES,
    FakeNodes,
    FakeSources,
    make_router,
    node,
    replicated,
    topology,
)
from tests.helpers import outcomes


def test_hit_returns_the_item():
    router = make_router()
    got = outcomes(router.get("scores", b"k"))
    [sent] = node(router).take()
    assert (sent.op, sent.group, sent.key) == (pb.GET, "scores", b"k")
    sent.answer(value=b"v", flags=7)
    assert got == [Item(b"v", 7)]
    assert (router.stats.hits, router.stats.loads) == (1, 0)


def test_hundred_concurrent_misses_load_once():
    router = make_router()
    [source] = [g.source for g in router.groups.values() if g.source]
    gets = [outcomes(router.get("scores", b"k")) for _ in range(100)]
    for sent in node(router).take():
        sent.answer(pb.NOT_FOUND)
    # Inside the flight the node is asked once more before loading.
    [recheck] = node(router).take()
    assert (recheck.op, recheck.key) == (pb.GET, b"k")
    assert source.loads == []
    recheck.answer(pb.NOT_FOUND)
    [(key, load)] = source.loads
    assert key == "k"
    load.callback(b"v")
    # The value is stored, with the group's ttl, before any waiter is answered.
    [fill] = node(router).take()
    assert (fill.op, fill.group, fill.key, fill.value, fill.ttl) == (pb.SET, "scores", b"k",
                                                                      b"v", 300.0)
    assert all(g == [] for g in gets)
    fill.answer()
    assert all(g == [Item(b"v", 0, hit=False)] for g in gets)
    assert (router.stats.misses, router.stats.loads, router.flight.coalesced) == (100, 1, 99)
    assert len(router.flight) == 0
    # After the flight lands the next get hits without loading.
    after = outcomes(router.get("scores", b"k"))
    [sent] = node(router).take()
    sent.answer(value=b"v")
    assert after == [Item(b"v", 0)]
    assert len(source.loads) == 1


def test_recheck_inside_the_flight_can_hit():
    router = make_router()
    got = outcomes(router.get("scores", b"k"))
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].answer(value=b"filled by another router")
    assert got == [Item(b"filled by another router", 0, hit=False)]
    assert router.groups["scores"].source.loads == []
    assert node(router).sent == []


def test_source_without_value_is_none_and_not_cached():
    router = make_router()
    source = router.groups["scores"].source
    for attempt in (1, 2):
        got = outcomes(router.get("scores", b"k"))
        node(router).take()[0].answer(pb.NOT_FOUND)
        node(router).take()[0].answer(pb.NOT_FOUND)
        source.loads[-1][1].callback(None)
        assert got == [None]
        assert node(router).sent == []  # no SET
        assert len(source.loads) == attempt
    assert router.stats.load_results[("scores", "not_found")] == 2


@pytest.mark.parametrize("error, reason", [
    (SourceError("python:fake:scores", "database is on fire"), "database is on fire"),
    (RuntimeError("boom"), "boom"),
])
def test_source_error_reaches_every_waiter_and_is_not_cached(error, reason):
    router = make_router()
    source = router.groups["scores"].source
    gets = [outcomes(router.get("scores", b"k")) for _ in range(3)]
    for sent in node(router).take():
        sent.answer(pb.NOT_FOUND)
    node(router).take()[0].answer(pb.NOT_FOUND)
    source.loads[0][1].errback(error)
    for [failure] in gets:
        assert failure.check(SourceError)
        assert str(failure.value) == f"source python:fake:scores failed: {reason}"
    assert node(router).sent == []
    assert router.stats.load_results[("scores", "error")] == 1
    # Not cached: the next miss loads again.
    router.get("scores", b"k")
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].answer(pb.NOT_FOUND)
    assert len(source.loads) == 2


def test_node_unavailable_without_source_is_an_error():
    router = make_router()
    got = outcomes(router.get("sessions", b"k"))
    node(router).take()[0].fail()
    assert got[0].check(NodeUnavailable)
    assert (router.stats.node_errors, router.stats.failovers) == (1, 0)


def test_node_unavailable_with_source_answers_from_the_source_without_set():
    router = make_router()
    source = router.groups["scores"].source
    gets = [outcomes(router.get("scores", b"k")) for _ in range(5)]
    for sent in node(router).take():
        sent.fail()
    [(key, load)] = source.loads
    assert key == "k"
    load.callback(b"v")
    assert all(g == [Item(b"v", 0, hit=False)] for g in gets)
    assert node(router).sent == []
    assert (router.stats.node_errors, router.stats.failovers, router.stats.loads) == (5, 5, 1)


def test_fill_is_skipped_when_the_node_goes_away():
    router = make_router()
    got = outcomes(router.get("scores", b"k"))
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].fail()  # the recheck
    router.groups["scores"].source.loads[0][1].callback(b"v")
    node(router).take()[0].fail()  # the SET
    assert got == [Item(b"v", 0, hit=False)]


def test_node_error_status_is_not_a_miss():
    router = make_router()
    got = outcomes(router.get("scores", b"k"))
    node(router).take()[0].answer(pb.UNKNOWN_GROUP, error="group scores is not configured")
    assert got[0].check(NodeError)
    assert str(got[0].value) == "group scores is not configured"
    assert router.groups["scores"].source.loads == []


def test_unknown_group():
    router = make_router()
    for d in (router.get("nope", b"k"), router.set("nope", b"k", b"v"),
              router.add("nope", b"k", b"v"), router.delete("nope", b"k"),
              router.touch("nope", b"k", 1.0)):
        [failure] = outcomes(d)
        assert failure.check(UnknownGroup)
        assert str(failure.value) == "unknown group 'nope'"
    with pytest.raises(UnknownGroup):
        router.where("nope", b"k")
    assert node(router).sent == []


def test_value_over_item_size_max_is_refused_and_drops_the_old_value():
    router = make_router()
    got = outcomes(router.set("sessions", b"k", b"x" * 1025))
    [delete] = node(router).take()  # no SET: only the old value is dropped
    assert (delete.op, delete.key) == (pb.DELETE, b"k")
    delete.answer()
    [failure] = got
    assert failure.check(TooLarge)
    assert str(failure.value) == "value of 1025 bytes is over the item limit of 1024"
    router.set("sessions", b"k", b"x" * 1024)
    assert [s.op for s in node(router).take()] == [pb.SET]


@pytest.mark.parametrize("method, op", [("set", pb.SET), ("add", pb.ADD), ("replace", pb.REPLACE)])
def test_store_requests_and_answers(method, op):
    router = make_router()
    results = []
    for status in (pb.OK, pb.NOT_STORED):
        results.append(outcomes(getattr(router, method)("sessions", b"k", b"v", 2.5, 9)))
        [sent] = node(router).take()
        assert (sent.op, sent.group, sent.key, sent.value, sent.ttl, sent.flags) == (
            op, "sessions", b"k", b"v", 2.5, 9)
        sent.answer(status)
    assert results == [[True], [False]]
    too_large = outcomes(getattr(router, method)("sessions", b"k", b"v"))
    [sent] = node(router).take()
    assert sent.ttl == 0.0  # no ttl: never expires
    sent.answer(pb.TOO_LARGE, error="value of 1 bytes is over the group budget")
    assert too_large[0].check(TooLarge)


def test_delete_and_touch():
    router = make_router()
    found = outcomes(router.delete("sessions", b"a"))
    missing = outcomes(router.touch("sessions", b"b", 9.0))
    failed = outcomes(router.delete("sessions", b"c"))
    deleted, touched, broken = node(router).take()
    assert (deleted.op, touched.op, touched.ttl) == (pb.DELETE, pb.TOUCH, 9.0)
    deleted.answer()
    touched.answer(pb.NOT_FOUND)
    broken.answer(pb.ERROR, error="disk on fire")
    assert (found, missing) == ([True], [False])
    assert str(failed[0].value) == "disk on fire"


def test_keys_go_to_their_ring_owner():
    router = make_router(topology(nodes=("node-a", "node-b", "node-c")))
    ring = HashRing([("node-a", 1.0), ("node-b", 1.0), ("node-c", 1.0)])
    for i in range(30):
        key = b"user-%d" % i
        router.get("sessions", key)
        owner = ring.owner(b"sessions:" + key)
        assert router.owner("sessions", key) == owner
        assert [s.key for s in node(router, owner).take()] == [key]


def test_reload_keeps_unchanged_clients_and_replaces_the_rest():
    before = topology(nodes=("node-a", ("node-b", 7002), "node-c"))
    clients = FakeNodes()
    router = make_router(before, nodes=clients)
    old = dict(router.clients)
    old_ring = router.ring
    after = topology(nodes=("node-a", ("node-b", 7102), ("node-d", 7004)),
                     groups={"scores": SCORES, "sessions": {}, "carts": {}}, timeout="250ms")
    result = router.reload(after)
    new_ring = HashRing([("node-a", 1.0), ("node-b", 1.0), ("node-d", 1.0)])
    assert result == {
        "applied": True,
        "digest": new_ring.digest,
        "moved": old_ring.diff(new_ring),
        "nodes_added": ["node-d"],
        "nodes_removed": ["node-c"],
        "nodes_changed": ["node-b"],
        "groups_reconfigured": True,
    }
    assert 0 < result["moved"] < 1
    assert router.clients["node-a"] is old["node-a"]
    assert (old["node-a"].starts, old["node-a"].stops, old["node-a"].configures) == (1, 0, 1)
    assert old["node-a"].timeout == 0.25
    assert (old["node-b"].stops, old["node-c"].stops) == (1, 1)
    for name in ("node-b", "node-d"):
        assert router.clients[name] not in old.values()
        assert router.clients[name].starts == 1
    assert len(clients.made) == 5
    assert router.ring.digest == new_ring.digest
    assert router.config_status()["reloads"] == 1


def test_reload_with_the_same_groups_does_not_reconfigure():
    router = make_router()
    source = router.groups["scores"].source
    result = router.reload(topology())
    assert result["moved"] == 0.0 and not result["groups_reconfigured"]
    assert node(router).configures == 0
    assert router.groups["scores"].source is source and not source.closed


def test_reload_replaces_a_changed_source_and_closes_a_removed_one():
    sources = FakeSources()
    router = make_router(sources=sources)
    first = router.groups["scores"].source
    router.reload(topology(groups={"scores": {"source": {"python": "fake:other"}},
                                   "sessions": {}}))
    second = router.groups["scores"].source
    assert (second.name, first.closed) == ("python:fake:other", True)
    router.reload(topology(groups={"sessions": {}}, default_group="sessions"))
    assert second.closed
    assert len(sources.built) == 2


def test_invalid_reload_changes_nothing_and_is_reported():
    router = make_router(topology(nodes=("node-a", "node-b")))
    ring, groups, clients = router.ring, router.groups, dict(router.clients)
    bad = topology(nodes=("node-a", "node-b", "node-c"),
                   groups={"scores": {"source": {"python": "no_such_module_here:load"}}})
    with pytest.raises(ValueError, match="python:no_such_module_here:load"):
        router.reload(bad)
    assert router.ring is ring and router.groups is groups and router.clients == clients
    assert all(c.stops == 0 for c in clients.values())
    assert router.groups["scores"].source.closed is False
    status = router.config_status()
    assert status["failures"] == 1 and status["reloads"] == 0
    assert status["last_error"] == (
        "t.yaml: groups.scores.source: source python:no_such_module_here:load: "
        "No module named 'no_such_module_here'")
    assert status["digest"] == ring.digest
    # A good reload afterwards clears the error.
    router.reload(topology(nodes=("node-a", "node-b")))
    status = router.config_status()
    assert (status["failures"], status["reloads"], status["last_error"]) == (1, 1, None)


def test_failed_reload_closes_the_sources_it_built():
    sources = FakeSources()
    router = make_router(sources=sources)
    bad = topology(groups={"scores": SCORES, "sessions": {},
                           "a": {"source": {"python": "fake:new"}},
                           "z": {"source": {"python": "no_such_module_here:load"}}})
    with pytest.raises(ValueError):
        router.reload(bad)
    [kept, new] = sources.built
    assert (kept.closed, new.closed) == (False, True)


def test_plan_reports_moves_without_changing_anything():
    router = make_router(topology(nodes=("node-a", "node-b", "node-c")))
    ring, clients = router.ring, dict(router.clients)
    plan = router.plan(topology(nodes=("node-a", "node-b", "node-c", "node-d")))
    new_ring = HashRing([(n, 1.0) for n in ("node-a", "node-b", "node-c", "node-d")])
    assert plan["moved"] == ring.diff(new_ring)
    assert (plan["digest"], plan["new_digest"]) == (ring.digest, new_ring.digest)
    # Adding a node only moves keys to it.
    assert {m["to"] for m in plan["moves"]} == {"node-d"}
    assert sum(m["share"] for m in plan["moves"]) == pytest.approx(plan["moved"])
    assert plan["shares_after"] == new_ring.shares()
    assert router.ring is ring and router.clients == clients
    assert len(clients) == 3


def test_config_status():
    router = make_router()
    assert router.config_status() == {
        "path": "t.yaml", "digest": router.ring.digest, "loaded_at": 1000.0,
        "age_seconds": 0.0, "reloads": 0, "failures": 0, "last_error": None,
        "revision": None, "origin": "file", "history": [],
    }


def test_config_status_keeps_the_last_reloads_newest_first_with_what_moved():
    router = make_router(topology(nodes=("node-a", "node-b")))
    router.reload(topology(nodes=("node-a", "node-b", "node-c")))
    with pytest.raises(ValueError):
        router.reload(topology(groups={"scores": {"source": {"python": "no_such_module_here:f"}}}))
    failed, applied = router.config_status()["history"]
    assert (failed["applied"], failed["at"]) == (False, 1000.0)
    assert "no_such_module_here" in failed["error"]
    assert applied["applied"] is True and applied["nodes_added"] == ["node-c"]
    assert applied["moved"] == pytest.approx(1 / 3, abs=0.05)
    assert applied["digest"] == router.ring.digest
    for _ in range(12):
        router.reload(topology(nodes=("node-a", "node-b")))
    assert len(router.config_status()["history"]) == 10


def test_stop_stops_clients_and_closes_sources():
    router = make_router()
    router.stop()
    assert node(router).stops == 1
    assert router.groups["scores"].source.closed


@pytest.mark.parametrize("answer", ["miss", "down"])
def test_group_removed_while_its_request_is_in_flight(answer):
    # The request finishes under the configuration it began with: a miss stays a
    # miss and a node failure stays a node failure, never an internal error.
    router = make_router()
    client = node(router)
    got = outcomes(router.get("sessions", b"k"))
    router.reload(topology(groups={"scores": SCORES}))
    [sent] = client.take()
    if answer == "miss":
        sent.answer(pb.NOT_FOUND)
        assert got == [None]
    else:
        sent.fail()
        assert got[0].check(NodeUnavailable)


# -- negative caching, replicas, warm-up ---------------------------------------------------

def test_negative_ttl_caches_not_found_and_spares_the_source():
    groups = {"scores": {"negative_ttl": "30s", "source": {"python": "fake:scores"}}}
    router = make_router(topology(groups=groups))
    source = router.groups["scores"].source
    got = outcomes(router.get("scores", b"nobody"))
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].answer(pb.NOT_FOUND)  # the re-check inside the flight
    source.loads[0][1].callback(None)
    [fill] = node(router).take()
    assert (fill.op, fill.key, fill.negative, fill.ttl) == (pb.SET, b"nobody", True, 30.0)
    fill.answer()
    assert got == [None]
    # The node now answers "negative": not found, and no load.
    again = outcomes(router.get("scores", b"nobody"))
    node(router).take()[0].answer(pb.NOT_FOUND, negative=True)
    assert again == [None]
    assert len(source.loads) == 1
    assert router.stats.negative_hits == 1


def test_without_negative_ttl_not_found_is_not_cached():
    router = make_router()
    got = outcomes(router.get("scores", b"nobody"))
    node(router).take()[0].answer(pb.NOT_FOUND)
    node(router).take()[0].answer(pb.NOT_FOUND)
    router.groups["scores"].source.loads[0][1].callback(None)
    assert got == [None]
    assert node(router).sent == []




def test_replicated_set_goes_to_every_replica_in_ring_order():
    router, (first, second) = replicated()
    got = outcomes(router.set("sessions", b"k", b"v", 60, 3))
    [primary] = first.take()
    assert second.sent == []  # the primary decides first (add/replace are conditional)
    primary.answer()
    [follower] = second.take()
    assert (follower.op, follower.value, follower.ttl, follower.flags) == (pb.SET, b"v", 60, 3)
    follower.answer()
    assert got == [True]
    others = [c for c in router.clients.values() if c not in (first, second)]
    assert all(c.sent == [] for c in others)


def test_replicated_add_that_is_not_stored_is_not_copied():
    router, (first, second) = replicated()
    got = outcomes(router.add("sessions", b"k", b"v"))
    first.take()[0].answer(pb.NOT_STORED)
    assert second.sent == [] and got == [False]


def test_read_fails_over_to_the_next_replica():
    router, (first, second) = replicated()
    got = outcomes(router.get("sessions", b"k"))
    first.take()[0].fail("no answer within 500ms")
    [read] = second.take()
    assert read.op == pb.GET
    read.answer(value=b"copy")
    assert got == [Item(b"copy", 0)]
    assert (router.stats.node_errors, router.stats.failovers) == (1, 1)


def test_a_replica_known_to_be_down_is_asked_last():
    router, (first, second) = replicated()
    first.state = "down"
    got = outcomes(router.get("sessions", b"k"))
    assert first.sent == []
    second.take()[0].answer(value=b"copy")
    assert got == [Item(b"copy", 0)]


def test_replicated_delete_reaches_every_replica_and_tolerates_one_down():
    router, (first, second) = replicated()
    got = outcomes(router.delete("sessions", b"k"))
    first.take()[0].fail()
    second.take()[0].answer(pb.OK)
    assert got == [True]
    assert router.stats.replica_errors == 1


def test_every_replica_down_is_an_error():
    router, (first, second) = replicated()
    got = outcomes(router.delete("sessions", b"k"))
    first.take()[0].fail()
    second.take()[0].fail()
    assert got[0].check(NodeUnavailable)


def warmed_up(groups=None):
    """A router that went from one node to two with warmup 30s; a key that moved."""
    groups = groups or {"scores": {"ttl": "1m", "source": {"python": "fake:scores"}},
                        "sessions": {}}
    router = make_router(topology(nodes=["node-a"], groups=groups, warmup="30s"))
    old = router.clients["node-a"]
    result = router.reload(topology(nodes=["node-a", "node-b"], groups=groups, warmup="30s"))
    new = router.clients["node-b"]
    new.start()
    key = next(b"k%d" % i for i in range(1000)
               if router.owner("sessions", b"k%d" % i) == "node-b"
               and router.owner("scores", b"k%d" % i) == "node-b")
    return router, old, new, key, result


def test_warmup_asks_the_previous_owner_and_fills_the_new_one():
    router, old, new, key, result = warmed_up()
    assert 0 < result["moved"] < 1
    got = outcomes(router.get("sessions", key))
    new.take()[0].answer(pb.NOT_FOUND)
    [ask] = old.take()
    assert (ask.op, ask.key) == (pb.GET, key)
    ask.answer(value=b"kept", flags=5)
    [fill] = new.take()
    assert (fill.op, fill.value, fill.flags) == (pb.SET, b"kept", 5)
    fill.answer()
    assert got == [Item(b"kept", 5, hit=False)]
    assert router.stats.warmup_hits == 1
    assert router.ring_info()["warmup"]["active"] is True


def test_warmup_comes_before_the_source_inside_the_flight():
    router, old, new, key, _ = warmed_up()
    got = outcomes(router.get("scores", key))
    new.take()[0].answer(pb.NOT_FOUND)
    new.take()[0].answer(pb.NOT_FOUND)  # re-check inside the flight
    old.take()[0].answer(value=b"from the old owner")
    new.take()[0].answer()  # the fill, with the group ttl
    assert got == [Item(b"from the old owner", 0, hit=False)]
    assert router.groups["scores"].source.loads == []


def test_warmup_miss_on_the_previous_owner_goes_on_to_the_source():
    router, old, new, key, _ = warmed_up()
    got = outcomes(router.get("scores", key))
    new.take()[0].answer(pb.NOT_FOUND)
    new.take()[0].answer(pb.NOT_FOUND)
    old.take()[0].answer(pb.NOT_FOUND)
    [(_, load)] = router.groups["scores"].source.loads
    load.callback(b"loaded")
    new.take()[0].answer()
    assert got == [Item(b"loaded", 0, hit=False)]


def test_warmup_ends_after_its_window():
    router, old, new, key, _ = warmed_up()
    router.reactor.advance(30)
    got = outcomes(router.get("sessions", key))
    new.take()[0].answer(pb.NOT_FOUND)
    assert got == [None]
    assert old.sent == []
    assert router.ring_info()["warmup"]["active"] is False


def test_a_removed_node_is_kept_for_warmup_then_stopped():
    groups = {"scores": {"source": {"python": "fake:scores"}}, "sessions": {}}
    router = make_router(topology(nodes=["node-a", "node-b"], groups=groups, warmup="10s"))
    leaving = router.clients["node-b"]
    router.reload(topology(nodes=["node-a"], groups=groups, warmup="10s"))
    assert leaving.stops == 0 and router.warmup.retired == {"node-b": leaving}
    key = next(b"k%d" % i for i in range(1000)
               if router.warmup.previous_ring.owner(b"sessions:k%d" % i) == "node-b")
    got = outcomes(router.get("sessions", key))
    router.clients["node-a"].take()[0].answer(pb.NOT_FOUND)
    leaving.take()[0].answer(value=b"saved")
    router.clients["node-a"].take()[0].answer()
    assert got == [Item(b"saved", 0, hit=False)]
    router.reactor.advance(10)
    assert leaving.stops == 1 and router.warmup.retired == {}


def test_without_warmup_a_removed_node_is_stopped_at_once():
    router = make_router(topology(nodes=["node-a", "node-b"]))
    leaving = router.clients["node-b"]
    router.reload(topology(nodes=["node-a"]))
    assert leaving.stops == 1
    assert router.warmup.previous_ring is None


def test_a_write_whose_deciding_replica_goes_away_is_decided_by_the_next():
    router, (first, second) = replicated()
    got = outcomes(router.set("sessions", b"k", b"v"))
    first.take()[0].fail("connection lost")
    [retry] = second.take()
    assert (retry.op, retry.value) == (pb.SET, b"v")
    retry.answer()
    assert got == [True]
    assert router.stats.replica_errors == 1


def test_a_follower_that_is_down_does_not_fail_the_write():
    router, (first, second) = replicated()
    got = outcomes(router.set("sessions", b"k", b"v"))
    first.take()[0].answer()
    second.take()[0].fail()
    assert got == [True]
    assert router.stats.replica_errors == 1


def test_replicated_groups_are_flushed_when_a_node_returns():
    groups = {"scores": {"source": {"python": "fake:scores"}}, "sessions": {"replicas": 2},
              "carts": {"replicas": 3}}
    router = make_router(topology(nodes=["node-0", "node-1", "node-2"], groups=groups))
    assert router.clients["node-0"].stale_on_return() == ["sessions", "carts"]

