"""DUMP and RESTORE (storage_node/transfer.py): a group's entries out a block at a time,
and back into another node, keeping values, flags, ttls and the eviction order."""

from __future__ import annotations

import pytest

from shared import entry
from shared import ringcache_pb2 as pb
from shared.snapshot import decode_entries
from storage_node.node import Node
from storage_node.transfer import IDLE
from tests.fakes import FakeClock

MiB = 1 << 20


def make_node(wall):
    node = Node(16 * MiB, clock=FakeClock(), wall=wall)
    node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[
        pb.GroupConfig(name="g", policy="lru", max_bytes=MiB)]))
    return node


@pytest.fixture
def wall():
    return FakeClock(1_800_000_000.0)


def dump_all(node, n=0, prefix=b"", keys_only=False) -> list[tuple]:
    out, cursor = [], 0
    while True:
        answer = node.handle(pb.Request(id=1, op=pb.DUMP, group="g", cas=cursor, delta=n,
                                        key=prefix, flags=1 if keys_only else 0))
        assert answer.status == pb.OK, answer.error
        out += decode_entries(answer.value, groups=1)[1]
        cursor = answer.cas
        if not cursor:
            return out


def test_dump_walks_a_group_coldest_first_in_small_answers(wall):
    node = make_node(wall)
    for i in range(10):
        node.handle(pb.Request(id=1, op=pb.SET, group="g", key=b"k%d" % i, value=b"v%d" % i,
                               flags=i, ttl=60 if i == 3 else 0))
    node.handle(pb.Request(id=1, op=pb.GET, group="g", key=b"k0"))
    got = dump_all(node, n=3)
    assert [key for key, *_ in got] == [b"k%d" % i for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)]
    by_key = {key: (entry.unpack(stored), deadline) for key, stored, deadline, _ in got}
    assert by_key[b"k3"] == ((b"v3", 3), wall.now + 60)
    assert by_key[b"k5"] == ((b"v5", 5), None)


def test_dump_with_a_prefix_and_keys_only(wall):
    node = make_node(wall)
    for key in (b"user:1", b"item:1", b"user:2"):
        node.handle(pb.Request(id=1, op=pb.SET, group="g", key=key, value=b"x"))
    assert [(k, v) for k, v, *_ in dump_all(node, prefix=b"user:", keys_only=True)] == [
        (b"user:1", b""), (b"user:2", b"")]


def test_an_idle_walk_expires(wall):
    node = make_node(wall)
    for i in range(5):
        node.handle(pb.Request(id=1, op=pb.SET, group="g", key=b"k%d" % i, value=b"x"))
    first = node.handle(pb.Request(id=1, op=pb.DUMP, group="g", delta=2))
    node.clock.now += IDLE + 1
    node.handle(pb.Request(id=1, op=pb.DUMP, group="g", delta=2))  # another walk: expires it
    again = node.handle(pb.Request(id=1, op=pb.DUMP, group="g", cas=first.cas))
    assert again.status == pb.NOT_FOUND and "idle walks end" in again.error


def test_restore_puts_entries_back_with_ttls_and_cas_above_theirs(wall):
    source = make_node(wall)
    for i in range(5):
        source.handle(pb.Request(id=1, op=pb.SET, group="g", key=b"k%d" % i, value=b"v%d" % i,
                                 flags=7, ttl=100 if i % 2 else 0))
    payload = source.handle(pb.Request(id=1, op=pb.DUMP, group="g")).value
    wall.now += 30
    target = Node(16 * MiB, clock=FakeClock(), wall=wall)
    answer = target.handle(pb.Request(id=1, op=pb.RESTORE, group="g", value=payload))
    assert answer.status == pb.OK and answer.cas == 5
    got = target.handle(pb.Request(id=1, op=pb.GET, group="g", key=b"k1"))
    assert (got.value, got.flags, got.ttl) == (b"v1", 7, 70)
    assert target.handle(pb.Request(id=1, op=pb.SET, group="g", key=b"new", value=b"x")).cas > 5
    wall.now += 80
    answer = target.handle(pb.Request(id=1, op=pb.RESTORE, group="g", value=payload))
    assert answer.cas == 3  # the two with a ttl have expired since: not stored


def test_restore_of_a_damaged_block_is_refused(wall):
    node = make_node(wall)
    answer = node.handle(pb.Request(id=1, op=pb.RESTORE, group="g", value=b"\x00\x00\x05"))
    assert answer.status == pb.ERROR and answer.error.startswith("RESTORE: ")
