"""router/dataplane/getrun: gets routed, fetched and rendered a batch at a time, every test run against
both twins (the compiled router.dataplane._getrun and the pure-Python router.dataplane.getrun_py)."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.cluster.ring import HashRing, routing_key
from router.config.topology import parse_topology
from router.dataplane import getrun_py
from shared import codec_py, entry
from shared import ringcache_pb2 as pb

GROUPS = ["scores", "sessions", "replicated"]
NODES = ["node-a", "node-b", "node-c"]
RING = HashRing([(n, 1.0) for n in NODES], vnodes=40)


def _compiled(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # the build compiles it; its absence is a failure here
        pytest.fail(f"{name} is not built ({exc}): run `make install`")


@pytest.fixture(params=["compiled", "pure"])
def impl(request):
    return _compiled("router.dataplane._getrun") if request.param == "compiled" else getrun_py


BOTH = ["compiled", "pure"]


def pick(name):
    return _compiled("router.dataplane._getrun") if name == "compiled" else getrun_py


def table(impl, default="scores"):
    hashes, owners = RING.points()
    return impl.RouteTable({g.encode(): i for i, g in enumerate(GROUPS)}, GROUPS.index(default),
                           GROUPS, [g != "replicated" for g in GROUPS], hashes,
                           [NODES.index(o) for o in owners])


TOPOLOGY = parse_topology({
    "router": {"default_group": "scores"},
    "nodes": [{"name": n, "address": f"127.0.0.1:{7001 + i}"} for i, n in enumerate(NODES)],
    "groups": {"scores": {}, "sessions": {}, "replicated": {"replicas": 2}},
}, "t.yaml")


def expected_place(key: bytes):
    """Where the topology (its group) and the ring (its node) place a memcached key."""
    group, rest = TOPOLOGY.group_for(key)
    node = -1 if group == "replicated" else NODES.index(RING.owner(routing_key(group, rest)))
    return GROUPS.index(group), rest, node


def test_the_selector_takes_the_compiled_module():
    from router.dataplane import getrun

    assert getrun.COMPILED is True and getrun.take_gets is _compiled("router.dataplane._getrun").take_gets


keys = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: bytes(c % 94 + 33 for c in b)),
    st.sampled_from([b"scores:", b"sessions:x", b"replicated:r", b"nope:k", b"::", b"a" * 250]))


@pytest.mark.parametrize("name", BOTH)
@given(key=keys)
@settings(max_examples=300)
def test_a_key_is_placed_as_the_ring_and_topology_place_it(name, key):
    assert pick(name).RouteTable.place(table(pick(name)), key) == expected_place(key)


def run_of(impl, text: bytes, pos: int = 0, max_keys: int = 4096, answer_max: int = 1 << 26):
    return impl.take_gets(bytearray(text), pos, table(impl), 1 << 20, max_keys, answer_max)


def test_every_complete_plain_get_line_is_taken(impl):
    text = b"get scores:a\r\nget b c\nget scores:a\r\nset x 0 0 1\r\nv\r\nget d\r\n"
    pos, run = run_of(impl, text)
    assert pos == text.index(b"set")
    assert run.ncommands == 3
    assert run.nslots == 3  # scores:a (twice), b, c: a key named twice is fetched once


@pytest.mark.parametrize("text", [
    b"set k 0 0 1\r\nv\r\n",  # another command
    b"get  a\r\n",  # two spaces
    b"get a \r\n",  # a trailing space
    b"get\r\n",  # no key
    b"get a",  # not complete
    b"get a\r",  # not complete either
    b"GET a\r\n",  # commands are lowercase
    b"get " + b"k" * 251 + b"\r\n",  # a key too long
    b"get a\x7fb\r\n",  # a control byte in a key
    b"get a\rb\r\n",  # a lone \r
])
def test_anything_else_is_left_to_the_general_parser(impl, text):
    assert run_of(impl, text) == (0, None)


def test_the_bytes_a_key_may_hold_are_memcacheds_key_rule(impl):
    from router.memcache.keys import KEY_MAX_LENGTH, NOT_IN_KEYS

    for byte in bytes(range(256)).translate(None, b" \n"):  # these split keys and lines
        taken = run_of(impl, b"get a%cb\r\n" % byte)[1] is not None
        assert taken == (byte not in NOT_IN_KEYS), hex(byte)
    assert run_of(impl, b"get " + b"k" * KEY_MAX_LENGTH + b"\r\n")[1] is not None
    assert run_of(impl, b"get " + b"k" * (KEY_MAX_LENGTH + 1) + b"\r\n")[1] is None


def test_a_get_with_too_many_keys_is_left_to_the_general_parser(impl):
    pos, run = run_of(impl, b"get a\r\nget b c d\r\n", max_keys=2)
    assert pos == len(b"get a\r\n") and run.ncommands == 1


def test_gets_the_parser_split_are_routed_as_plain_lines(impl):
    from router.dataplane.getrun import route_gets
    from router.memcache.text import Get

    gets = [Get((b"a", b"sessions:s", b"a"), False), Get((b"b",) * 5000, True)]
    run = route_gets(gets, table(impl), 1 << 26, take_gets=impl.take_gets)
    assert (run.ncommands, run.nslots) == (2, 3)  # more keys than one line may hold
    _, same = run_of(impl, b"get a sessions:s a\r\ngets" + b" b" * 5000 + b"\r\n",
                     max_keys=5000)
    assert run.batches == same.batches
    fill_all(run, {("scores", b"a"): entry.pack(b"A"), ("scores", b"b"): entry.pack(b"B", 1, 9)},
             as_list=True)
    assert run.render() == (b"VALUE a 0 1\r\nA\r\nVALUE a 0 1\r\nA\r\nEND\r\n"
                            + b"VALUE b 1 1 9\r\nB\r\n" * 5000 + b"END\r\n")


def test_route_gets_refuses_what_is_not_a_key(impl):
    from router.dataplane.getrun import route_gets
    from router.memcache.text import Get

    with pytest.raises(ValueError):
        route_gets([Get((b"a b",), False)], table(impl), 1 << 26, take_gets=impl.take_gets)


def test_the_run_starts_at_pos(impl):
    pos, run = run_of(impl, b"junk\r\nget a\r\n", pos=6)
    assert (pos, run.ncommands) == (13, 1)


def test_batches_are_get_many_bodies_per_node_and_group(impl):
    ks = [b"k%d" % i for i in range(30)] + [b"sessions:s%d" % i for i in range(10)]
    pos, run = run_of(impl, b"get " + b" ".join(ks) + b"\r\n")
    wanted: dict[tuple[int, str], list[bytes]] = {}
    for k in ks:
        group, rest, node = expected_place(k)
        wanted.setdefault((node, GROUPS[group]), []).append(rest)
    got = {}
    for node, body in run.batches:
        request = pb.Request.FromString(body)
        assert request.op == pb.GET_MANY
        got[node, request.group] = list(request.keys)
    assert got == wanted
    assert run.left == len(run.batches)
    # Each batch's group and number of keys, for the per-group hit counts.
    sizes = [(GROUPS[group], n) for group, n in run.batch_sizes()]
    assert sizes == [(pb.Request.FromString(body).group, len(pb.Request.FromString(body).keys))
                     for _, body in run.batches]


def test_a_runs_keys_are_told_by_slot_and_by_batch(impl):
    # What the hot-key sampler and the near cache read: (group, key) of each distinct key,
    # and each batch's keys in the order fill takes their answers.
    ks = [b"k%d" % i for i in range(12)] + [b"sessions:s1", b"k3", b"replicated:r"]
    pos, run = run_of(impl, b"get " + b" ".join(ks) + b"\r\n")
    distinct = list(dict.fromkeys(ks))
    assert [run.slot(i) for i in range(run.nslots)] == [expected_place(k)[:2] for k in distinct]
    for batch, (node, body) in enumerate(run.batches):
        assert run.batch_keys(batch) == list(pb.Request.FromString(body).keys)
    with pytest.raises(IndexError):
        run.slot(run.nslots)
    with pytest.raises(IndexError):
        run.batch_keys(len(run.batches))


def fill_all(run, store: dict, as_list: bool):
    """Answer every batch from ``store`` (group, key) -> entry, as a node would."""
    for i, (node, body) in enumerate(run.batches):
        request = pb.Request.FromString(body)
        values = [store.get((request.group, k), b"") for k in request.keys]
        if not as_list:  # as the compiled codec decodes them: offsets into a payload
            payload = pb.Frame(responses=[pb.Response(id=1, values=values)]).SerializeToString()
            (response,) = _compiled("shared._codec").decode_responses(payload)
            values = response.values
        run.fill(i, values)


@pytest.mark.parametrize("as_list", [True, False], ids=["bytes", "valuelist"])
def test_hits_render_as_memcached_answers_them(impl, as_list):
    store = {("scores", b"a"): entry.pack(b"A", 0, 7), ("scores", b"b"): entry.pack(b"BB", 5, 8),
             ("sessions", b"s"): entry.pack(b"S"), ("scores", b"f"): entry.pack(b"F", 3)}
    pos, run = run_of(impl, b"get a missing\r\ngets b a\r\nget sessions:s f a\r\n")
    fill_all(run, store, as_list)
    assert run.left == 0
    assert [u[4] for u in run.unresolved()] == [b"missing"]
    assert run.render() == (
        b"VALUE a 0 1\r\nA\r\nEND\r\n"
        b"VALUE b 5 2 8\r\nBB\r\nVALUE a 0 1 7\r\nA\r\nEND\r\n"
        b"VALUE sessions:s 0 1\r\nS\r\nVALUE f 3 1\r\nF\r\nVALUE a 0 1\r\nA\r\nEND\r\n")
    assert (run.hits, run.misses) == (6, 1)


@pytest.mark.parametrize("as_list", [True, False], ids=["bytes", "valuelist"])
def test_entries_with_memcacheds_item_bits_render_as_their_values(impl, as_list):
    # md I / ms I / mg N leave kind 5 entries (shared/entry.py): plain gets read through them.
    store = {("scores", b"a"): entry.with_bits(entry.pack(b"A", 4, 7), entry.STALE),
             ("scores", b"b"): entry.with_bits(entry.pack(b"", 0, 8), entry.WIN_SENT),
             ("scores", b"c"): b"\x05\x01"}  # bits and nothing behind them: not a value
    pos, run = run_of(impl, b"gets a b c\r\n")
    fill_all(run, store, as_list)
    assert [u[4] for u in run.unresolved()] == [b"c"]
    run.resolve(run.unresolved()[0][0], b"")
    assert run.render() == b"VALUE a 4 1 7\r\nA\r\nVALUE b 0 0 8\r\n\r\nEND\r\n"


@pytest.mark.parametrize("as_list", [True, False], ids=["bytes", "valuelist"])
def test_large_values_render_as_pieces_that_make_the_same_answer(impl, as_list):
    # Values of ``large`` bytes or more are pieces of their own (the compiled twin leaves
    # them in the node's answer); together the pieces are exactly the answer.
    big, bigger = b"x" * 5000, b"y" * 7000
    store = {("scores", b"a"): entry.pack(big, 3, 7), ("scores", b"b"): entry.pack(b"BB", 5, 8),
             ("sessions", b"s"): entry.pack(bigger, 0, 9)}
    text = b"get a b\r\nget nothing\r\ngets sessions:s a\r\nget b\r\n"
    _, whole = run_of(impl, text)
    fill_all(whole, store, as_list)
    for u in whole.unresolved():
        whole.resolve(u[0], b"")
    answer = whole.render()
    _, run = run_of(impl, text)
    fill_all(run, store, as_list)
    for u in run.unresolved():
        run.resolve(u[0], b"")
    pieces = run.render(5000)
    assert isinstance(pieces, list)
    assert b"".join(pieces) == answer
    assert [bytes(p) for p in pieces if len(p) >= 5000] == [big, bigger, big]
    assert (run.hits, run.misses) == (whole.hits, whole.misses) == (5, 1)
    assert run.render(7001) == answer  # no value that large: one bytes object, as before


def test_a_large_value_resolved_by_the_slow_path_renders_as_a_piece(impl):
    _, run = run_of(impl, b"get a\r\n")
    fill_all(run, {}, True)
    run.resolve(run.unresolved()[0][0], entry.pack(b"v" * 100, 1))
    assert run.render(100) == [b"VALUE a 1 100\r\n", b"v" * 100, b"\r\nEND\r\n"]


def test_misses_negatives_failures_and_other_groups_are_unresolved(impl):
    store = {("scores", b"n"): entry.NEGATIVE, ("scores", b"bad"): b"\x07junk"}
    pos, run = run_of(impl, b"get n m bad replicated:r\r\n")
    by_key = {}
    for i, (node, body) in enumerate(run.batches):
        keys = list(pb.Request.FromString(body).keys)
        run.fill(i, [store.get(("scores", k), b"") for k in keys])
    for slot, group, node, batch, key, stored in run.unresolved():
        by_key[key] = (GROUPS[group], node, stored)
    assert by_key[b"n"][2] == entry.NEGATIVE
    assert by_key[b"m"][2] == b""
    assert by_key[b"bad"][2] == b"\x07junk"  # not a value: the slow path decides
    assert by_key[b"r"] == ("replicated", -1, None)


def test_a_failed_batch_leaves_its_keys_unresolved(impl):
    pos, run = run_of(impl, b"get a\r\n")
    assert run.fail(0) == 0
    ((slot, group, node, batch, key, stored),) = run.unresolved()
    assert (key, stored, batch) == (b"a", None, 0)


def test_resolved_keys_render_and_errors_fail_their_commands_only(impl):
    pos, run = run_of(impl, b"get a b\r\nget a\r\nget c\r\n")
    for i, _ in enumerate(run.batches):
        run.fail(i)
    slots = {key: slot for slot, _, _, _, key, _ in run.unresolved()}
    run.resolve(slots[b"a"], entry.pack(b"loaded", 2))
    run.resolve_error(slots[b"b"], b"SERVER_ERROR source down\r\n")
    run.resolve(slots[b"c"], b"")
    assert [u[4] for u in run.unresolved()] == [b"c"]  # a miss is still not a value
    assert run.render() == (b"SERVER_ERROR source down\r\n"
                            b"VALUE a 2 6\r\nloaded\r\nEND\r\n"
                            b"END\r\n")


def test_an_answer_past_its_cap_is_refused_with_memcacheds_words(impl):
    pos, run = run_of(impl, b"get a a\r\nget a\r\n", answer_max=15)
    run.fill(0, [entry.pack(b"x" * 10)])
    assert run.render() == (b"SERVER_ERROR out of memory writing get response\r\n"
                            b"VALUE a 0 10\r\nxxxxxxxxxx\r\nEND\r\n")


def test_fill_refuses_the_wrong_number_of_answers(impl):
    pos, run = run_of(impl, b"get a\r\n")
    with pytest.raises(ValueError):
        run.fill(0, [b"", b""])


command_lines = st.lists(st.one_of(
    st.lists(keys, min_size=1, max_size=6).map(lambda ks: b"get " + b" ".join(ks) + b"\r\n"),
    st.lists(keys, min_size=1, max_size=3).map(lambda ks: b"gets " + b" ".join(ks) + b"\n"),
    st.just(b"set k 0 0 1\r\nv\r\n"), st.just(b"get  odd\r\n"), st.just(b"get tail")),
    min_size=1, max_size=8)


@given(lines=command_lines, seed=st.integers(0, 2**32 - 1))
@settings(max_examples=300)
def test_the_twins_agree(lines, seed):
    text = b"".join(lines)
    answers = []
    for impl in (_compiled("router.dataplane._getrun"), getrun_py):
        pos, run = run_of(impl, text)
        if run is None:
            answers.append((pos, None))
            continue
        # Every third slot of every batch is a hit whose value depends on the key and seed.
        for i, (node, body) in enumerate(run.batches):
            ks = list(pb.Request.FromString(body).keys)
            run.fill(i, [entry.pack(k[::-1], seed % 5, seed + j) if (seed + j) % 3 else b""
                         for j, k in enumerate(ks)])
        for slot, *_ in run.unresolved():
            run.resolve(slot, b"")
        answers.append((pos, [b for _, b in run.batches], run.render(), run.hits, run.misses,
                        run.ncommands, run.nslots))
    assert answers[0] == answers[1]


def test_codec_and_getrun_twins_serve_a_whole_round_trip(impl):
    """A run's batch sent with the codec, answered by a node's frame, read back."""
    pos, run = run_of(impl, b"get a\r\n")
    ((node, body),) = run.batches
    buf = bytearray()
    codec_py.append_prepared(buf, 1, body)
    (request,) = pb.Frame.FromString(bytes(buf)).requests
    assert list(request.keys) == [b"a"]
    out = bytearray()
    codec_py.append_response(out, 1, values=[entry.pack(b"v")])
    (response,) = codec_py.decode_responses(bytes(out))
    run.fill(0, response.values)
    assert run.render() == b"VALUE a 0 1\r\nv\r\nEND\r\n"


def test_a_failed_command_leaves_no_piece_of_its_large_values(impl):
    # Its answer is its error line: the value it found is not sent, in pieces or whole.
    big = b"x" * 5000
    _, run = run_of(impl, b"get a bad\r\nget a\r\n")
    fill_all(run, {("scores", b"a"): entry.pack(big)}, True)
    (bad,) = [u[0] for u in run.unresolved()]
    run.resolve_error(bad, b"SERVER_ERROR source down\r\n")
    pieces = run.render(5000)
    assert b"".join(pieces) == run.render() == (
        b"SERVER_ERROR source down\r\nVALUE a 0 5000\r\n" + big + b"\r\nEND\r\n")
    assert sum(len(p) >= 5000 for p in pieces) == 1
