"""Node logic driven directly, and NodeProtocol driven through StringTransport."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from shared import entry
from shared import ringcache_pb2 as pb
from shared.framing import FrameDecoder, decode_payload, encode_batch
from storage_node.cores import CORES
from storage_node.cores.lru import LRUCore
from storage_node.node import DEFAULT_GROUP_BYTES, Node
from storage_node.protocol import NodeFactory, NodeProtocol
from tests.fakes import FakeClock
from tests.helpers import CountingTransport
from tests.storage_node.cores.core_contract import FifoCore

MiB = 1 << 20
DICT_CORE = f"python:{__name__}:DictCore"
# The plugin cores these tests name, allowed as `ringcache node --allow-policy` would.
PLUGINS = [f"python:{__name__}:{name}" for name in ("DictCore", "CountingCore", "BrokenCore",
                                                     "RefusingCore")] + ["python:no_such_module_xyz:Core"]


# A plugin core with no touch() and no counters, loaded by name below.
DictCore = FifoCore


class CountingCore(DictCore):
    """A user core that keeps the counters built-in cores keep."""

    evictions = 3
    expirations = 4


class BrokenCore(DictCore):
    def get(self, key):
        raise RuntimeError("disk on fire")


class RefusingCore(DictCore):
    def __init__(self, max_bytes, clock):
        raise TypeError("needs a config file")


class OverheadCore(LRUCore):
    """A user core built on a built-in one: it takes entry_overhead, and says its own."""

    ENTRY_OVERHEAD = 50


class OverheadButNoKeywordCore(DictCore):
    """An ENTRY_OVERHEAD alone does not make the node pass a keyword the class lacks."""

    ENTRY_OVERHEAD = 50


def req(op, key=b"", value=b"", id=1, group="g", **fields) -> pb.Request:
    return pb.Request(id=id, op=op, group=group, key=key, value=value, **fields)


def configure_request(*groups: tuple[str, str, int], id=1) -> pb.Request:
    return pb.Request(
        id=id,
        op=pb.CONFIGURE,
        groups=[pb.GroupConfig(name=n, policy=p, max_bytes=b) for n, p, b in groups],
    )


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def logged():
    return []


@pytest.fixture
def node(clock, logged):
    """A node holding group "g" (lru, 1MiB) under a 16MiB cap."""
    node = Node(16 * MiB, clock=clock, log=logged.append, allowed_policies=PLUGINS)
    assert node.handle(configure_request(("g", "lru", MiB))).status == pb.OK
    return node


def stats(node: Node) -> pb.NodeStats:
    return node.handle(pb.Request(id=9, op=pb.STATS)).stats


def group_stats(node: Node, name: str) -> pb.GroupStats:
    (found,) = [g for g in stats(node).groups if g.name == name]
    return found


# --- ops -------------------------------------------------------------------------------


def test_set_then_get_returns_value_with_no_flags(node):
    assert node.handle(req(pb.SET, b"k", b"v", id=1)) == pb.Response(id=1, status=pb.OK, cas=1)
    assert node.handle(req(pb.GET, b"k", id=2)) == pb.Response(id=2, status=pb.OK, value=b"v",
                                                               cas=1)


@pytest.mark.parametrize("flags", [1, 0x12345678, 0xFFFFFFFF])
def test_flags_round_trip(node, flags):
    node.handle(req(pb.SET, b"k", b"\x00\x01value", flags=flags))
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"\x00\x01value", flags=flags,
                                                               cas=1)


def test_empty_value_round_trips(node):
    node.handle(req(pb.SET, b"k", b""))
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, status=pb.OK, cas=1)
    assert node.handle(req(pb.ADD, b"k", b"x")).status == pb.NOT_STORED


def test_flags_wrapper_is_what_the_core_stores_and_charges(clock):
    node = Node(MiB, clock=clock, allowed_policies=PLUGINS)
    node.handle(configure_request(("d", DICT_CORE, 1000)))
    node.handle(req(pb.SET, b"a", b"plain", group="d"))
    node.handle(req(pb.SET, b"b", b"flagged", group="d", flags=0x01020304))
    core = node.groups.get("d").core
    # Kind 3 (CAS unique 1), then kind 4 (CAS unique 2, flags): shared/entry.py.
    assert core.data[b"a"] == (b"\x03" + (1).to_bytes(8, "big") + b"plain", None)
    assert core.data[b"b"] == (b"\x04" + (2).to_bytes(8, "big") + b"\x01\x02\x03\x04flagged", None)
    assert group_stats(node, "d").bytes == (1 + 9 + 5) + (1 + 13 + 7)


def test_get_missing_is_not_found(node):
    assert node.handle(req(pb.GET, b"nope", id=7)) == pb.Response(id=7, status=pb.NOT_FOUND)


def test_set_overwrites_value_and_flags(node):
    node.handle(req(pb.SET, b"k", b"one", flags=5))
    node.handle(req(pb.SET, b"k", b"two"))
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"two", cas=2)


def test_add_stores_only_when_absent(node):
    assert node.handle(req(pb.ADD, b"k", b"first", flags=1)).status == pb.OK
    assert node.handle(req(pb.ADD, b"k", b"second", flags=2)).status == pb.NOT_STORED
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"first", flags=1, cas=1)


def test_negative_entry_reads_as_not_found_and_counts_as_absent(node, clock):
    assert node.handle(req(pb.SET, b"k", negative=True, ttl=10)).status == pb.OK
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, status=pb.NOT_FOUND, negative=True)
    # An absence for add/replace/touch, though the core holds it.
    assert node.handle(req(pb.TOUCH, b"k", ttl=5)).status == pb.NOT_FOUND
    assert node.handle(req(pb.REPLACE, b"k", b"v")).status == pb.NOT_STORED
    assert node.handle(req(pb.ADD, b"k", b"v")).status == pb.OK
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"v", cas=1)
    node.handle(req(pb.SET, b"n", negative=True, ttl=10))
    clock.now += 10
    assert node.handle(req(pb.GET, b"n")) == pb.Response(id=1, status=pb.NOT_FOUND)


def test_get_many_answers_each_key_s_entry_in_order(node, clock):
    node.handle(req(pb.SET, b"plain", b"v"))
    node.handle(req(pb.SET, b"flagged", b"w", flags=0x01020304))
    node.handle(req(pb.SET, b"absent", negative=True, ttl=10))
    node.handle(req(pb.SET, b"brief", b"x", ttl=1))
    clock.now += 1
    keys = [b"plain", b"missing", b"flagged", b"absent", b"brief", b"plain"]
    answer = node.handle(req(pb.GET_MANY, keys=keys, id=5))
    # Each store got the next CAS unique: plain 1, flagged 2 (absent and brief 3, 4).
    assert answer == pb.Response(id=5, values=[
        entry.pack(b"v", 0, 1), b"", entry.pack(b"w", 0x01020304, 2), entry.NEGATIVE, b"",
        entry.pack(b"v", 0, 1)])
    assert [entry.unpack_cas(v) for v in answer.values if entry.present(v or None)] == [
        (b"v", 0, 1), (b"w", 0x01020304, 2), (b"v", 0, 1)]
    # A negative entry is held, so it counts as a hit, as it does for GET.
    assert (group_stats(node, "g").hits, group_stats(node, "g").misses) == (4, 2)


def test_get_many_of_an_unknown_group_or_a_failing_core_is_one_error(clock, logged):
    node = Node(MiB, clock=clock, log=logged.append, allowed_policies=PLUGINS)
    node.handle(configure_request(("bad", f"python:{__name__}:BrokenCore", 100)))
    assert node.handle(req(pb.GET_MANY, group="nope", keys=[b"a"])) == pb.Response(
        id=1, status=pb.UNKNOWN_GROUP, error="unknown group 'nope'")
    assert node.handle(req(pb.GET_MANY, group="bad", keys=[b"a"])) == pb.Response(
        id=1, status=pb.ERROR, error="internal error: RuntimeError('disk on fire')")


def test_flush_group_drops_every_entry_of_that_group_only(node):
    node.handle(configure_request(("g", "lru", MiB), ("other", "lru", MiB)))
    node.handle(req(pb.SET, b"a", b"1"))
    node.handle(req(pb.SET, b"b", b"2"))
    node.handle(req(pb.SET, b"a", b"3", group="other"))
    assert node.handle(req(pb.FLUSH_GROUP)) == pb.Response(id=1)
    assert node.handle(req(pb.GET, b"a")).status == pb.NOT_FOUND
    assert node.handle(req(pb.GET, b"b")).status == pb.NOT_FOUND
    assert node.handle(req(pb.GET, b"a", group="other")).value == b"3"


def test_replace_stores_only_when_present(node):
    assert node.handle(req(pb.REPLACE, b"k", b"v")).status == pb.NOT_STORED
    assert node.handle(req(pb.GET, b"k")).status == pb.NOT_FOUND
    node.handle(req(pb.SET, b"k", b"old", flags=1))
    assert node.handle(req(pb.REPLACE, b"k", b"new", flags=2)).status == pb.OK
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"new", flags=2, cas=2)


def test_delete(node):
    node.handle(req(pb.SET, b"k", b"v"))
    assert node.handle(req(pb.DELETE, b"k", id=3)) == pb.Response(id=3, status=pb.OK)
    assert node.handle(req(pb.DELETE, b"k", id=4)) == pb.Response(id=4, status=pb.NOT_FOUND)
    assert node.handle(req(pb.GET, b"k")).status == pb.NOT_FOUND


def test_ttl_expires_and_zero_or_negative_ttl_never_does(node, clock):
    node.handle(req(pb.SET, b"short", b"v", ttl=5))
    node.handle(req(pb.SET, b"zero", b"v", ttl=0))
    node.handle(req(pb.SET, b"negative", b"v", ttl=-1))
    clock.now += 4.9
    assert node.handle(req(pb.GET, b"short")).status == pb.OK
    clock.now += 0.1
    assert node.handle(req(pb.GET, b"short")).status == pb.NOT_FOUND
    clock.now += 10**6
    assert node.handle(req(pb.GET, b"zero")).status == pb.OK
    assert node.handle(req(pb.GET, b"negative")).status == pb.OK


@pytest.mark.parametrize("group", ["g", "d"], ids=["lru", "core-without-touch"])
def test_touch_sets_a_new_ttl(node, clock, group):
    node.handle(configure_request(("g", "lru", MiB), ("d", DICT_CORE, MiB)))
    assert node.handle(req(pb.TOUCH, b"k", group=group, ttl=5)).status == pb.NOT_FOUND
    node.handle(req(pb.SET, b"k", b"v", group=group, ttl=5, flags=9))
    clock.now += 4
    assert node.handle(req(pb.TOUCH, b"k", group=group, ttl=5)).status == pb.OK
    clock.now += 4  # 8s after the SET, 4s after the TOUCH
    left = 1 if group == "g" else 0  # the GET tells what is left, when the core can
    assert node.handle(req(pb.GET, b"k", group=group)) == pb.Response(
        id=1, value=b"v", flags=9, cas=1, ttl=left)
    assert node.handle(req(pb.TOUCH, b"k", group=group, ttl=0)).status == pb.OK
    clock.now += 10**6
    assert node.handle(req(pb.GET, b"k", group=group)).status == pb.OK
    node.handle(req(pb.TOUCH, b"k", group=group, ttl=1))
    clock.now += 1
    assert node.handle(req(pb.GET, b"k", group=group)).status == pb.NOT_FOUND


def test_get_and_gat_answer_the_seconds_an_entry_has_left(node, clock):
    node.handle(req(pb.SET, b"k", b"v", ttl=60))
    node.handle(req(pb.SET, b"forever", b"v"))
    clock.now += 15
    assert node.handle(req(pb.GET, b"k")).ttl == 45
    assert node.handle(req(pb.GAT, b"k", ttl=100)).ttl == 100
    assert node.handle(req(pb.GET, b"forever")).ttl == 0


def test_ping_needs_no_group(node):
    assert node.handle(pb.Request(id=42, op=pb.PING)) == pb.Response(id=42, status=pb.OK)


@pytest.mark.parametrize("op", [pb.OP_UNSPECIFIED, 16, 99])
def test_unknown_op(node, op):
    assert node.handle(pb.Request(id=5, op=op, group="g")) == pb.Response(
        id=5, status=pb.UNKNOWN_OP, error=f"unknown op {op}"
    )


@pytest.mark.parametrize("op, old", [(pb.SET, b"old"), (pb.REPLACE, b"old"), (pb.ADD, None)])
def test_too_large_is_refused_and_drops_the_old_value(clock, op, old):
    node = Node(MiB, clock=clock)
    node.handle(configure_request(("small", "lru", 1000)))
    if old is not None:
        assert node.handle(req(pb.SET, b"k", old, group="small")).status == pb.OK
    answer = node.handle(req(op, b"k", b"x" * 700, group="small"))
    assert answer.status == pb.TOO_LARGE
    overhead = LRUCore.ENTRY_OVERHEAD
    assert answer.error == (f"key and value of 701 bytes (+{overhead} charged per entry) do not fit "
                            f"group 'small' (budget 1000 bytes)")
    assert node.handle(req(pb.GET, b"k", group="small")).status == pb.NOT_FOUND


def handle_frame(node, frame: pb.Frame) -> list[pb.Response]:
    """The node's answers to one frame, through its wire path."""
    payload = node.handle_payload(frame.SerializeToString())
    return list(pb.Frame.FromString(bytes(payload[4:])).responses)


@pytest.mark.parametrize("policy", sorted(CORES))
def test_a_builtin_core_charges_its_measured_overhead_per_entry(clock, policy):
    node = Node(MiB, clock=clock)
    node.handle(configure_request(("g", policy, MiB)))
    node.handle(req(pb.SET, b"key", b"value"))
    (group,) = node.handle(pb.Request(id=2, op=pb.STATS)).stats.groups
    # The node stores the value behind 9 bytes: its kind and CAS unique (shared/entry.py).
    assert group.bytes == 3 + 9 + 5 + CORES[policy].ENTRY_OVERHEAD
    assert CORES[policy].ENTRY_OVERHEAD > 100


@pytest.mark.parametrize("core, overhead", [("OverheadCore", 50), ("OverheadButNoKeywordCore", 0),
                                            ("DictCore", 0)])
def test_a_user_core_gets_an_overhead_only_if_it_takes_the_keyword(clock, core, overhead):
    node = Node(MiB, clock=clock, allowed_policies=[f"python:{__name__}:{core}"])
    assert node.handle(configure_request(("g", f"python:{__name__}:{core}", MiB))).status == pb.OK
    node.handle(req(pb.SET, b"key", b"value"))
    (group,) = node.handle(pb.Request(id=2, op=pb.STATS)).stats.groups
    assert group.bytes == 3 + 9 + 5 + overhead


def test_requests_of_one_frame_run_in_order(node):
    frame = pb.Frame(
        requests=[
            req(pb.SET, b"k", b"v", id=1),
            req(pb.GET, b"k", id=2),
            req(pb.DELETE, b"k", id=3),
            req(pb.GET, b"k", id=4),
        ]
    )
    assert handle_frame(node, frame) == [
        pb.Response(id=1, cas=1),
        pb.Response(id=2, value=b"v", cas=1),
        pb.Response(id=3),
        pb.Response(id=4, status=pb.NOT_FOUND),
    ]


def test_a_failing_core_answers_error_and_spares_the_rest_of_the_frame(clock, logged):
    node = Node(MiB, clock=clock, log=logged.append, allowed_policies=PLUGINS)
    node.handle(configure_request(("bad", f"python:{__name__}:BrokenCore", 100), ("g", "lru", 100)))
    frame = pb.Frame(requests=[req(pb.GET, b"k", id=1, group="bad"), req(pb.PING, id=2)])
    assert handle_frame(node, frame) == [
        pb.Response(id=1, status=pb.ERROR, error="internal error: RuntimeError('disk on fire')"),
        pb.Response(id=2),
    ]
    assert logged == ["GET on group 'bad' failed: RuntimeError('disk on fire')"]


# --- groups and CONFIGURE --------------------------------------------------------------


def test_before_configure_a_group_is_created_with_the_default(clock):
    node = Node(1 << 30, clock=clock)
    assert node.handle(req(pb.SET, b"k", b"v", group="fresh")).status == pb.OK
    fresh = group_stats(node, "fresh")
    assert (fresh.policy, fresh.max_bytes) == ("adaptive", DEFAULT_GROUP_BYTES)
    assert not stats(node).configured


def test_default_group_budget_is_capped_by_max_memory(clock):
    node = Node(1000, clock=clock)
    node.handle(req(pb.GET, b"k", group="fresh"))
    assert group_stats(node, "fresh").max_bytes == 1000


def test_after_configure_an_unlisted_group_is_unknown(node):
    assert stats(node).configured
    assert node.handle(req(pb.SET, b"k", b"v", id=3, group="other")) == pb.Response(
        id=3, status=pb.UNKNOWN_GROUP, error="unknown group 'other'"
    )
    assert [g.name for g in stats(node).groups] == ["g"]


def test_a_request_without_group_is_unknown_group_even_before_configure(clock):
    node = Node(MiB, clock=clock)
    assert node.handle(req(pb.GET, b"k", group="")) == pb.Response(
        id=1, status=pb.UNKNOWN_GROUP, error="the request names no group"
    )
    assert list(stats(node).groups) == []


def test_configure_keeps_unchanged_groups_and_their_data(node):
    node.handle(req(pb.SET, b"k", b"v"))
    assert node.handle(configure_request(("g", "lru", MiB), ("h", "lru", MiB))).status == pb.OK
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"v", cas=1)
    assert node.handle(req(pb.SET, b"k", b"w", group="h")).status == pb.OK
    assert group_stats(node, "g").hits == 1


@pytest.mark.parametrize("changed", [("g", DICT_CORE, MiB), ("g", "lru", 2 * MiB)], ids=["policy", "budget"])
def test_configure_moves_a_changed_group_s_entries_into_a_new_core(node, changed):
    node.handle(req(pb.SET, b"k", b"v"))
    assert node.handle(configure_request(changed)).status == pb.OK
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"v", cas=1)
    g = group_stats(node, "g")
    assert (g.policy, g.max_bytes, g.items, g.sets) == (changed[1], changed[2], 1, 1)


def test_a_smaller_budget_keeps_the_hottest_entries_in_the_policy_s_order(node, logged):
    for i in range(10):
        node.handle(req(pb.SET, b"k%d" % i, b"v" * 100))
    node.handle(req(pb.GET, b"k0"))  # lru: k0 is now the most recent
    one = group_stats(node, "g").bytes // 10
    assert node.handle(configure_request(("g", "lru", 3 * one))).status == pb.OK
    kept = [i for i in range(10) if node.handle(req(pb.GET, b"k%d" % i)).status == pb.OK]
    assert kept == [0, 8, 9]
    assert logged[-1].endswith(f"budget {MiB} -> {3 * one} bytes; 3 kept, 7 evicted to fit")


def test_configure_drops_unlisted_groups_and_logs_what_it_dropped(node, logged):
    node.handle(req(pb.SET, b"k", b"v"))
    held = group_stats(node, "g").bytes  # what the core charges for it
    assert node.handle(configure_request(("h", "lru", MiB))).status == pb.OK
    assert node.handle(req(pb.GET, b"k")).status == pb.UNKNOWN_GROUP
    assert [g.name for g in stats(node).groups] == ["h"]
    assert logged == [f"dropping group 'g' (it held 1 entry, {held} bytes): "
                      f"it is not in the new configuration"]


def test_configure_that_moves_a_group_logs_what_it_held(node, logged):
    node.handle(req(pb.SET, b"k", b"v"))
    node.handle(req(pb.SET, b"k2", b"v"))
    held = group_stats(node, "g").bytes
    assert node.handle(configure_request(("g", "lfu", MiB // 2))).status == pb.OK
    assert logged == [f"moving group 'g' (it held 2 entries, {held} bytes) to a new core: "
                      f"policy lru -> lfu, budget {MiB} -> {MiB // 2} bytes; 2 kept"]


def test_a_group_whose_core_cannot_list_its_entries_is_emptied_by_a_change(clock, logged):
    node = Node(MiB, clock=clock, log=logged.append, allowed_policies=PLUGINS)
    node.handle(configure_request(("g", DICT_CORE, 1000)))
    node.handle(req(pb.SET, b"k", b"v"))
    assert node.handle(configure_request(("g", "lru", 1000))).status == pb.OK
    assert node.handle(req(pb.GET, b"k")).status == pb.NOT_FOUND
    assert logged[-1].startswith("emptying group 'g' (it held 1 entry, ")
    assert logged[-1].endswith("its core cannot list its entries for the new one")


def test_configure_naming_no_group_is_refused_and_changes_nothing(node, logged):
    node.handle(req(pb.SET, b"k", b"v"))
    answer = node.handle(configure_request(id=4))
    assert (answer.id, answer.status, answer.error) == (
        4, pb.ERROR, "CONFIGURE refused: no group named (a topology always has its default group)")
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"v", cas=1)
    assert logged == []


def test_configure_naming_a_policy_not_allowed_is_refused_and_imports_nothing(clock, logged):
    node = Node(MiB, clock=clock, log=logged.append, allowed_policies=[DICT_CORE])
    node.handle(configure_request(("g", DICT_CORE, 1000)))
    node.handle(req(pb.SET, b"k", b"v"))
    # What a hostile peer sent in the issue: the node imported signal and called signal().
    answer = node.handle(configure_request(("g", DICT_CORE, 1000), ("evil", "python:signal:signal", 10)))
    assert (answer.status, answer.error) == (
        pb.ERROR, "CONFIGURE refused: group 'evil': policy 'python:signal:signal' is not allowed "
                  "on this node (start it with --allow-policy python:signal:signal)")
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"v", cas=1)
    assert [g.name for g in stats(node).groups] == ["g"]


@pytest.mark.parametrize(
    "groups, error",
    [
        ([("bad", "nope", 10)], "group 'bad': unknown policy 'nope' (known: "),
        ([("bad", "python:no_such_module_xyz:Core", 10)], "group 'bad': policy 'python:no_such_module_xyz:Core': cannot import"),
        ([("bad", f"python:{__name__}:RefusingCore", 10)],
         f"group 'bad': policy 'python:{__name__}:RefusingCore': TypeError('needs a config file')"),
        ([("bad", "", 10)], "group 'bad': unknown policy ''"),
        ([("", "lru", 10)], "a group has no name"),
        ([("h", "lru", 10), ("h", "lru", 20)], "group 'h' is listed twice"),
        ([("h", "lru", 0)], "group 'h': max_bytes must be positive"),
    ],
)
def test_invalid_configure_changes_nothing(node, groups, error):
    node.handle(req(pb.SET, b"k", b"v"))
    # The valid entries first: they must not be applied either.
    answer = node.handle(configure_request(("g", "lru", 2 * MiB), ("new", "lru", MiB), *groups, id=8))
    assert (answer.id, answer.status) == (8, pb.ERROR)
    assert answer.error.startswith("CONFIGURE refused: " + error), answer.error
    assert node.handle(req(pb.GET, b"k")) == pb.Response(id=1, value=b"v", cas=1)
    assert [(g.name, g.max_bytes) for g in stats(node).groups] == [("g", MiB)]


def test_invalid_first_configure_leaves_the_node_unconfigured(clock):
    node = Node(MiB, clock=clock)
    assert node.handle(configure_request(("g", "nope", 10))).status == pb.ERROR
    assert not stats(node).configured
    assert node.handle(req(pb.SET, b"k", b"v", group="any")).status == pb.OK


# --- the node-wide memory cap ----------------------------------------------------------


def test_budgets_above_max_memory_are_scaled_proportionally(clock, logged):
    node = Node(1000, clock=clock, log=logged.append, allowed_policies=PLUGINS)
    assert node.handle(configure_request(("a", DICT_CORE, 1000), ("b", DICT_CORE, 3000))).status == pb.OK
    assert [(g.name, g.max_bytes) for g in stats(node).groups] == [("a", 250), ("b", 750)]
    assert logged == [
        "group budgets sum to 4000 bytes, above max_memory 1000: "
        "scaling every group to 25.0% of its max_bytes"
    ]
    for i in range(100):
        for group in "ab":
            node.handle(req(pb.SET, b"%03d" % i, b"x" * 20, group=group))
    node_stats = stats(node)
    # 32 bytes an entry (3 key, 9 kind and CAS unique, 20 value): 7 fit in 250, 23 in 750.
    assert [(g.items, g.bytes) for g in node_stats.groups] == [(7, 224), (23, 736)]
    assert node_stats.bytes == 960 <= node_stats.max_memory == 1000


def test_a_refused_configure_logs_no_scaling(clock, logged):
    node = Node(1000, clock=clock, log=logged.append)
    assert node.handle(configure_request(("a", "lru", 2000), ("b", "nope", 10))).status == pb.ERROR
    assert logged == []


def test_budgets_within_max_memory_are_not_scaled(clock, logged):
    node = Node(1000, clock=clock, log=logged.append)
    node.handle(configure_request(("a", "lru", 400), ("b", "lru", 600)))
    assert [g.max_bytes for g in stats(node).groups] == [400, 600]
    assert logged == []


def test_default_groups_are_scaled_when_they_outgrow_max_memory(clock, logged):
    # 1000 bytes: one entry, with the default core's overhead per entry, fits.
    node = Node(1000, clock=clock, log=logged.append)
    node.handle(req(pb.SET, b"k", b"v", group="one"))
    assert logged == []
    node.handle(req(pb.SET, b"k", b"v", group="two"))
    assert [(g.name, g.max_bytes) for g in stats(node).groups] == [("one", 500), ("two", 500)]
    assert logged[0].startswith("moving group 'one' (it held 1 entry, ")
    assert logged[0].endswith("policy adaptive -> adaptive, budget 1000 -> 500 bytes; 1 kept")
    assert node.handle(req(pb.GET, b"k", group="one")).value == b"v"
    assert logged[1].startswith("group budgets sum to 2000 bytes")
    assert len(logged) == 2


def test_rescaling_keeps_groups_whose_budget_is_unchanged(clock):
    node = Node(1000, clock=clock)
    node.handle(configure_request(("a", "lru", 500), ("b", "lru", 500)))
    node.handle(req(pb.SET, b"k", b"v", group="a"))
    # Doubling every budget doubles the total: the scaled budgets stay 500 each.
    node.handle(configure_request(("a", "lru", 1000), ("b", "lru", 1000)))
    assert node.handle(req(pb.GET, b"k", group="a")).status == pb.OK


# --- stats -----------------------------------------------------------------------------


def test_stats_counts_exactly(clock):
    node = Node(10_000, clock=clock, allowed_policies=PLUGINS)
    node.handle(configure_request(("c", f"python:{__name__}:CountingCore", 1000), ("l", "lru", 2000)))
    frame = pb.Frame(
        requests=[
            req(pb.SET, b"k1", b"v1", group="c"),
            req(pb.ADD, b"k2", b"v2", group="c", flags=1),
            req(pb.ADD, b"k2", b"v2", group="c"),
            req(pb.REPLACE, b"k1", b"new", group="c"),
            req(pb.GET, b"k1", group="c"),
            req(pb.GET, b"k2", group="c"),
            req(pb.GET, b"k3", group="c"),
            req(pb.TOUCH, b"k1", group="c", ttl=5),
            req(pb.DELETE, b"k2", group="c"),
        ]
    )
    handle_frame(node, frame)
    node.connections = 2
    clock.now += 12.5
    answer = node.handle(pb.Request(id=77, op=pb.STATS))
    assert answer.id == 77
    assert answer.stats == pb.NodeStats(
        groups=[
            # k1 -> "new": 2 + 9 (kind, CAS unique) + 3 bytes; k2 deleted.
            pb.GroupStats(name="c", policy=f"python:{__name__}:CountingCore", items=1, bytes=14,
                          max_bytes=1000, hits=2, misses=1, evictions=3, expirations=4, sets=3),
            pb.GroupStats(name="l", policy="lru", max_bytes=2000),
        ],
        max_memory=10_000,
        bytes=14,
        uptime=12.5,
        connections=2,
        frames=1,
        requests=11,  # CONFIGURE, 9 in the frame, this STATS
        configured=True,
        leases=pb.LeaseStats(),  # no read asked for one
    )


def test_builtin_core_counters_reach_stats(clock):
    node = Node(MiB, clock=clock)
    node.handle(configure_request(("l", "lru", 1000)))
    node.handle(req(pb.SET, b"soon", b"v", group="l", ttl=1))
    clock.now += 1
    node.handle(req(pb.GET, b"soon", group="l"))
    for i in range(100):
        node.handle(req(pb.SET, b"%03d" % i, b"x" * 50, group="l"))
    g = group_stats(node, "l")
    assert g.expirations == 1
    assert g.evictions == 100 - g.items > 0
    assert g.bytes <= 1000


# --- NodeProtocol over StringTransport ---------------------------------------------------


def connect(node: Node, max_frame: int | None = None) -> tuple[NodeProtocol, CountingTransport]:
    factory = NodeFactory(node) if max_frame is None else NodeFactory(node, max_frame)
    protocol = factory.buildProtocol(None)
    transport = CountingTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def response_frames(transport: StringTransport) -> list[list[pb.Response]]:
    decoder = FrameDecoder()
    decoder.receive_data(transport.value())
    frames = [list(decode_payload(payload).responses) for payload in decoder.frames()]
    assert decoder.buffered == 0
    return frames


def test_a_batch_of_100_gets_is_answered_by_one_frame_in_one_write(node):
    for i in range(0, 100, 2):
        node.handle(req(pb.SET, b"key%d" % i, b"value%d" % i))
    protocol, transport = connect(node)
    protocol.dataReceived(encode_batch(requests=[req(pb.GET, b"key%d" % i, id=1000 + i) for i in range(100)]))
    assert transport.writes == 1
    (responses,) = response_frames(transport)
    assert responses == [
        pb.Response(id=1000 + i, value=b"value%d" % i, cas=i // 2 + 1) if i % 2 == 0
        else pb.Response(id=1000 + i, status=pb.NOT_FOUND)
        for i in range(100)
    ]


MIXED_FRAMES = [
    encode_batch(requests=[req(pb.SET, b"k", b"v", id=1, flags=3), req(pb.GET, b"k", id=2)]),
    encode_batch(requests=[req(pb.ADD, b"k", b"w", id=3), req(pb.GET, b"missing", id=4), req(pb.PING, id=5)]),
    encode_batch(requests=[]),  # an empty batch is still answered, with an empty frame
    encode_batch(requests=[req(pb.DELETE, b"k", id=6), req(99, id=7)]),
]
MIXED_ANSWERS = [
    [pb.Response(id=1, cas=1), pb.Response(id=2, value=b"v", flags=3, cas=1)],
    [pb.Response(id=3, status=pb.NOT_STORED), pb.Response(id=4, status=pb.NOT_FOUND), pb.Response(id=5)],
    [],
    [pb.Response(id=6), pb.Response(id=7, status=pb.UNKNOWN_OP, error="unknown op 99")],
]


def feed_in_chunks(chunks: list[bytes]) -> CountingTransport:
    protocol, transport = connect(Node(MiB, clock=FakeClock()))
    for chunk in chunks:
        protocol.dataReceived(chunk)
    return transport


def test_frames_fed_whole_are_answered_one_frame_each():
    transport = feed_in_chunks(MIXED_FRAMES)
    assert response_frames(transport) == MIXED_ANSWERS
    assert transport.writes == 4


def test_frames_fed_byte_by_byte_are_answered_the_same():
    data = b"".join(MIXED_FRAMES)
    transport = feed_in_chunks([data[i:i + 1] for i in range(len(data))])
    assert response_frames(transport) == MIXED_ANSWERS
    assert transport.writes == 4


def test_two_frames_in_one_write_get_two_response_frames():
    transport = feed_in_chunks([MIXED_FRAMES[0] + MIXED_FRAMES[1]])
    assert response_frames(transport) == MIXED_ANSWERS[:2]
    assert transport.writes == 2


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_frames_split_anywhere_are_answered_the_same(data):
    stream = b"".join(MIXED_FRAMES)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1))))
    edges = [0, *cuts, len(stream)]
    transport = feed_in_chunks([stream[a:b] for a, b in zip(edges, edges[1:])])
    assert response_frames(transport) == MIXED_ANSWERS


def test_a_partial_frame_is_not_answered_until_complete(node):
    protocol, transport = connect(node)
    frame = encode_batch(requests=[pb.Request(id=1, op=pb.PING)])
    protocol.dataReceived(frame[:-1])
    assert transport.value() == b""
    protocol.dataReceived(frame[-1:])
    assert response_frames(transport) == [[pb.Response(id=1)]]


@pytest.mark.parametrize(
    "bad, problem",
    [
        (b"\xff\xff\xff\xff", "frame of 4294967295 bytes exceeds the limit of 67108864"),
        (b"\x00\x00\x00\x08garbage!", "undecodable frame"),
    ],
    ids=["oversized-length", "garbage-payload"],
)
def test_a_framing_error_aborts_that_connection_only(node, bad, problem):
    good, good_transport = connect(node)
    broken, broken_transport = connect(node)
    assert node.connections == 2
    ping = encode_batch(requests=[pb.Request(id=1, op=pb.PING)])
    with capturedLogs() as events:
        broken.dataReceived(ping + bad + ping)
    # The frame before the bad one was answered; nothing after it was.
    assert response_frames(broken_transport) == [[pb.Response(id=1)]]
    assert broken_transport.disconnected and broken_transport.disconnecting  # aborted
    (event,) = events
    assert formatEvent(event).startswith(f"closing connection from 192.168.1.1:54321: {problem}")
    broken.connectionLost(None)
    assert node.connections == 1

    good.dataReceived(ping)
    assert response_frames(good_transport) == [[pb.Response(id=1)]]
    assert not good_transport.disconnecting
    # And a connection made afterwards is served too.
    fresh, fresh_transport = connect(node)
    fresh.dataReceived(ping)
    assert response_frames(fresh_transport) == [[pb.Response(id=1)]]


TOO_BIG = "the answers of this frame exceed one frame; ask for fewer keys at once"


def six_values_over_a_small_frame(clock):
    """A connection whose frames hold 3000 bytes, to a node holding k0..k5 of 300 bytes each.

    Of a frame of six GETs, 3000 - 4 - 6 x 256 (each answer's own fields, at most) = 1460
    bytes are left for values: four of them."""
    node = Node(MiB, clock=clock)
    node.handle(configure_request(("g", "lru", MiB)))
    for i in range(6):
        node.handle(req(pb.SET, b"k%d" % i, b"x" * 300))
    return connect(node, max_frame=3000)


def test_answers_too_big_for_one_frame_become_errors(clock):
    protocol, transport = six_values_over_a_small_frame(clock)
    protocol.dataReceived(encode_batch(requests=[req(pb.GET, b"k%d" % i, id=i) for i in range(6)]))
    assert transport.writes == 1
    assert len(transport.value()) <= 4 + 3000
    (responses,) = response_frames(transport)
    assert [r.id for r in responses] == list(range(6))
    assert [r.value for r in responses[:4]] == [b"x" * 300] * 4
    assert responses[4:] == [pb.Response(id=i, status=pb.TOO_LARGE, error=TOO_BIG) for i in range(4, 6)]
    assert not transport.disconnecting


def test_a_get_many_too_big_for_one_frame_becomes_one_error(clock):
    # The router then asks key by key, and gets what fits.
    protocol, transport = six_values_over_a_small_frame(clock)
    protocol.dataReceived(encode_batch(requests=[
        req(pb.GET_MANY, keys=[b"k%d" % i for i in range(6)] * 2, id=3), req(pb.PING, id=4)]))
    (responses,) = response_frames(transport)
    assert responses == [pb.Response(id=3, status=pb.TOO_LARGE, error=TOO_BIG), pb.Response(id=4)]


def frames_of(data: bytes) -> list:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    return [bytes(p) for p in decoder.frames()]


def test_answers_past_split_bytes_leave_in_frames_of_their_own_each_answer_whole(node):
    # The router can hand on the first answers while the rest cross the socket.
    value = b"x" * 40_000
    for i in range(5):
        node.handle(req(pb.SET, b"k%d" % i, value))
    gets = [req(pb.GET_MANY, keys=[b"k%d" % i], id=10 + i) for i in range(5)]
    payload = encode_batch(requests=[*gets, req(pb.PING, id=20)])[4:]
    frames = [decode_payload(p).responses
              for p in frames_of(b"".join(node.handle_payload(payload, pieces=True)))]
    # 40 KB, then 80 KB >= 64 KiB: two gets a frame, the last frame the rest.
    assert [[r.id for r in f] for f in frames] == [[10, 11], [12, 13], [14, 20]]
    assert all(entry.unpack(r.values[0])[0] == value for f in frames for r in f if r.values)
    # Without pieces (tools, tests): one frame, as before.
    assert len(frames_of(bytes(node.handle_payload(payload)))) == 1


def test_a_frame_with_large_entries_comes_out_in_pieces_that_make_the_same_answers(node):
    # What the node's connection sends in one sendmsg, the large entries left where the
    # core keeps them: put together, the answers the node would have written whole, the
    # frame ended after the request that brought it past SPLIT_BYTES.
    big = b"v" * (64 * 1024)
    node.handle(req(pb.SET, b"big", big))
    node.handle(req(pb.SET, b"small", b"s"))
    payload = encode_batch(requests=[
        req(pb.GET_MANY, keys=[b"big", b"small", b"none", b"big"], id=3), req(pb.PING, id=4),
        req(pb.GET_MANY, keys=[b"small"], id=5)])[4:]
    whole = node.handle_payload(payload)
    pieces = node.handle_payload(payload, pieces=True)
    assert isinstance(pieces, list) and len(pieces) == 6
    (expected,) = [decode_payload(p).responses for p in frames_of(bytes(whole))]
    got = [decode_payload(p).responses for p in frames_of(b"".join(pieces))]
    assert [[r.id for r in frame] for frame in got] == [[3], [4, 5]]
    assert [r for frame in got for r in frame] == list(expected)
    assert [entry.unpack(v)[0] for v in got[0][0].values if v] == [big, b"s", big]
    # Nothing that large: the frame as one bytearray, as without pieces.
    small = encode_batch(requests=[req(pb.GET_MANY, keys=[b"small"], id=6)])[4:]
    assert node.handle_payload(small, pieces=True) == node.handle_payload(small)
