"""The near cache of hot keys (router/dataplane/near.py, router/cluster/nearpath.py) behind
the real memcached front end and Router, on fake node clients: a hot key is answered
without a node hop for at most its ttl, a write through the router is read back at once,
and a reload that changes the group forgets what it held."""

from __future__ import annotations

from router.cluster.hotkeys import Sampler
from shared import entry
from shared import ringcache_pb2 as pb
from tests.fakes import SCORES, PlaneConn, topology

NEAR = {"max_bytes": "1MiB", "ttl": "2s"}
GROUPS = {"scores": {**SCORES, "near_cache": NEAR}, "sessions": {}}


def hot_client(*hot: bytes, nodes=("node-a",)) -> PlaneConn:
    client = PlaneConn(nodes=nodes, groups=GROUPS)
    client.router.sampler = Sampler(every=10**9)  # the test says which keys are hot
    tracker = client.router.groups["scores"].hot
    for key in hot:
        for _ in range(tracker.hot_samples):
            tracker.add(key)
    return client


def held_from_node(client: PlaneConn, values: dict, name="node-a") -> None:
    client.node(name).answer_prepared(
        lambda r: pb.Response(values=[values.get(k, b"") for k in r.keys]))


def test_a_hot_key_is_answered_without_a_node_hop_until_its_ttl():
    client = hot_client(b"h")
    client.send(b"gets h\r\n")
    held_from_node(client, {b"h": entry.pack(b"V", 3, 41)})
    assert client.turn() == b"VALUE h 3 1 41\r\nV\r\nEND\r\n"
    for line in (b"get h\r\n", b"gets h\r\n"):  # the CAS unique is the node's, kept with it
        client.send(line)
        assert client.node().prepared == []
    assert client.turn() == b"VALUE h 3 1\r\nV\r\nEND\r\nVALUE h 3 1 41\r\nV\r\nEND\r\n"
    near = client.router.groups["scores"].near
    assert near.hits == 2 and client.router.stats.group_hits["scores"] == 3
    client.router.reactor.advance(2.0)  # its ttl is over: the node is asked again
    client.send(b"get h\r\n")
    [(request, _)] = client.node().prepared
    assert list(request.keys) == [b"h"]


def test_a_key_that_is_not_hot_always_goes_to_its_node():
    client = hot_client()
    for _ in range(2):
        client.send(b"get cold\r\n")
        held_from_node(client, {b"cold": entry.pack(b"C")})
        assert client.turn() == b"VALUE cold 0 1\r\nC\r\nEND\r\n"
    assert len(client.router.groups["scores"].near) == 0


def test_a_multi_get_is_answered_here_when_every_key_is_held_else_by_its_node():
    client = hot_client(b"h1", b"h2")
    client.send(b"get h1 h2\r\n")
    held_from_node(client, {b"h1": entry.pack(b"1"), b"h2": entry.pack(b"2")})
    client.turn()
    client.send(b"get h2 h1 h2\r\n")
    assert client.node().prepared == []
    assert client.turn() == b"VALUE h2 0 1\r\n2\r\nVALUE h1 0 1\r\n1\r\nVALUE h2 0 1\r\n2\r\nEND\r\n"
    # A batch with a key not held goes to its node whole (one GET_MANY either way).
    client.send(b"get a h2 b h1 sessions:s\r\n")
    requests = {r.group: list(r.keys) for r, _ in client.node().prepared}
    assert requests == {"scores": [b"a", b"h2", b"b", b"h1"], "sessions": [b"s"]}
    held_from_node(client, {b"a": entry.pack(b"A"), b"b": entry.pack(b"B"), b"h1": entry.pack(b"1"),
                            b"h2": entry.pack(b"2"), b"s": entry.pack(b"S")})
    assert client.turn() == (b"VALUE a 0 1\r\nA\r\nVALUE h2 0 1\r\n2\r\nVALUE b 0 1\r\nB\r\n"
                             b"VALUE h1 0 1\r\n1\r\nVALUE sessions:s 0 1\r\nS\r\nEND\r\n")
    assert client.router.groups["scores"].near.hits == 2  # keys answered, once per run


def test_a_write_through_the_router_is_read_back_at_once():
    client = hot_client(b"h")
    client.send(b"get h\r\n")
    held_from_node(client, {b"h": entry.pack(b"old", 0, 1)})
    client.turn()
    client.send(b"set h 0 0 3\r\nnew\r\n")
    [write] = client.node().take()
    assert (write.op, write.key) == (pb.SET, b"h")
    write.answer(cas=2)
    assert client.turn() == b"STORED\r\n"
    client.send(b"gets h\r\n")  # no longer held: its node answers the new value
    held_from_node(client, {b"h": entry.pack(b"new", 0, 2)})
    assert client.turn() == b"VALUE h 0 3 2\r\nnew\r\nEND\r\n"


def test_an_answer_read_before_a_write_is_not_kept_after_it():
    client = hot_client(b"h")
    client.send(b"get h\r\n")  # out to the node...
    client.send(b"delete h\r\n")  # ...and a delete after it
    [delete] = client.node().take()
    held_from_node(client, {b"h": entry.pack(b"old")})  # the get's answer, from before
    delete.answer()
    assert client.turn() == b"VALUE h 0 3\r\nold\r\nEND\r\nDELETED\r\n"
    assert len(client.router.groups["scores"].near) == 0
    client.send(b"get h\r\n")
    assert len(client.node().prepared) == 1


def test_every_kind_of_write_drops_the_key():
    writes = [b"set h 0 0 1\r\nx\r\n", b"add h 0 0 1\r\nx\r\n", b"replace h 0 0 1\r\nx\r\n",
              b"append h 0 0 1\r\nx\r\n", b"prepend h 0 0 1\r\nx\r\n", b"cas h 0 0 1 5\r\nx\r\n",
              b"incr h 1\r\n", b"decr h 1\r\n", b"delete h\r\n", b"touch h 10\r\n",
              b"gat 10 h\r\n", b"ms h 1\r\nx\r\n", b"md h\r\n", b"ma h\r\n", b"flush_all\r\n"]
    for write in writes:
        client = hot_client(b"h")
        client.send(b"get h\r\n")
        held_from_node(client, {b"h": entry.pack(b"1")})
        client.turn()
        near = client.router.groups["scores"].near
        assert len(near) == 1
        client.send(write)
        assert len(near) == 0, write


def test_item_gets_of_http_and_binary_are_answered_from_it_too():
    client = hot_client(b"h")
    router = client.router
    got = []
    router.get("scores", b"h").addCallback(got.append)
    [read] = client.node().take()
    read.answer(value=b"V", flags=2, cas=9)
    router.get("scores", b"h").addCallback(got.append)
    assert client.node().take() == []
    assert [(i.value, i.flags, i.cas, i.near) for i in got] == [(b"V", 2, 9, False),
                                                                (b"V", 2, 9, True)]
    # What an item get kept answers a text gets too, with the same CAS unique.
    client.send(b"gets h\r\n")
    assert client.node().prepared == []
    assert client.turn() == b"VALUE h 2 1 9\r\nV\r\nEND\r\n"


def test_a_reload_that_changes_the_group_forgets_what_it_held():
    client = hot_client(b"h")
    client.send(b"get h\r\n")
    held_from_node(client, {b"h": entry.pack(b"1")})
    client.turn()
    router = client.router
    held = router.groups["scores"].near
    router.reload(topology(("node-a",), GROUPS))  # the same topology: kept
    assert router.groups["scores"].near is held and len(held) == 1
    changed = {**GROUPS, "scores": {**GROUPS["scores"], "near_cache": {"ttl": "1s"}}}
    router.reload(topology(("node-a",), changed))
    assert router.groups["scores"].near is not held
    assert len(router.groups["scores"].near) == 0
    assert router.groups["scores"].hot.hot == {b"h"}  # what is hot is kept
    router.reload(topology(("node-a",), {"scores": SCORES, "sessions": {}}))
    assert router.groups["scores"].near is None and not router.routes.near


def test_a_replicated_groups_hot_key_is_answered_from_it_too():
    groups = {"scores": SCORES, "sessions": {"replicas": 2, "near_cache": NEAR}}
    client = PlaneConn(nodes=("node-a", "node-b"), groups=groups)
    client.router.sampler = Sampler(every=10**9)
    client.router.groups["sessions"].hot.add(b"h")
    client.send(b"get sessions:h\r\n")
    [read] = [s for name in ("node-a", "node-b") for s in client.node(name).take()]
    read.answer(value=b"R", cas=3)
    assert client.turn() == b"VALUE sessions:h 0 1\r\nR\r\nEND\r\n"
    client.send(b"gets sessions:h\r\n")
    assert [s for name in ("node-a", "node-b") for s in client.node(name).take()] == []
    assert client.turn() == b"VALUE sessions:h 0 1 3\r\nR\r\nEND\r\n"


def test_a_runs_keys_are_sampled_where_the_countdown_lands():
    from types import SimpleNamespace

    from router.cluster.hotkeys import HotKeys
    from router.dataplane.near import sample

    run = SimpleNamespace(nslots=10, slot=lambda i: (0, b"k%d" % i))
    class EveryFourth(Sampler):
        def gap(self):
            return 4  # every fourth key, counted across runs

    tracker = HotKeys(lambda: 0.0, every=4)
    sampler = EveryFourth(every=4)
    sampler.left = 3
    sample(sampler, run, [SimpleNamespace(hot=tracker)])
    assert sorted(tracker.counts) == [b"k2", b"k6"]
    assert sampler.left == 1  # the next run's first key is the next sample
    sample(sampler, run, [SimpleNamespace(hot=tracker)])
    assert sorted(tracker.counts) == [b"k0", b"k2", b"k4", b"k6", b"k8"]
