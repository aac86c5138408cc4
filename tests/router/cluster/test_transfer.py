"""router/cluster/transfer.py against fake nodes: a dump hands on what each node serves
and nothing it merely holds; a restore sends each entry to every owner on the ring."""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred

from router.cluster import transfer
from router.cluster.ring import routing_key
from shared import entry
from shared import ringcache_pb2 as pb
from shared.snapshot import decode_entries, entries_payload
from tests.fakes import make_router, topology
from tests.helpers import outcomes

GROUPS = {"scores": {"source": {"python": "fake:scores"}}, "sessions": {},
          "copies": {"replicas": 2}}
WALL = 1_800_000_000.0


def cluster():
    return make_router(topology(nodes=["node-0", "node-1", "node-2"], groups=GROUPS))


def payload(keys, deadline=None) -> bytes:
    stored = [entry.pack(b"v-" + k, 3, 9) for k in keys]
    ranks = bytearray((0x80 if deadline else 0) for _ in keys)
    return entries_payload(0, list(keys), stored, ranks, [deadline] * len(keys) if deadline else [])


def test_a_dump_hands_on_only_what_each_node_serves_walk_by_walk():
    router = cluster()
    keys = [b"k%d" % i for i in range(30)]
    emitted = []

    async def emit(entries, index):
        emitted.append((index, [e[0] for e in entries]))

    done = outcomes(Deferred.fromCoroutine(
        transfer.dump(router, [router.groups["sessions"]], emit)))
    for name in ("node-0", "node-1", "node-2"):
        client = router.clients[name]
        [first] = client.take()
        assert (first.op, first.group, first.cas) == (pb.DUMP, "sessions", 0)
        # Every node holds every key (left over from older rings, say): only its own go on.
        first.answer(value=payload(keys[:15]), cas=7)
        [second] = client.take()
        assert second.cas == 7
        second.answer(value=payload(keys[15:]))
    [summary] = done
    # Each key once, from its owner, though all three nodes answered all thirty.
    assert sorted(k for _, ks in emitted for k in ks) == sorted(keys)
    assert summary.entries == 30


def test_a_restore_sends_each_entry_to_its_owners_with_flags_and_ttl():
    router = cluster()
    header = transfer.header_of(router, [router.groups["sessions"], router.groups["copies"],
                                         router.groups["scores"]], WALL)
    header.groups[2].name = "gone"  # a group the topology no longer has
    keys = [b"k%d" % i for i in range(12)]
    data = io.BytesIO(b"".join([
        transfer.file_start(header),
        transfer.entry_block(0, decode_entries(payload(keys, deadline=WALL + 60), 1)[1]),
        transfer.entry_block(1, decode_entries(payload(keys), 1)[1]),
        transfer.entry_block(2, decode_entries(payload(keys[:2]), 1)[1]),
        transfer.entry_block(0, decode_entries(payload([b"old"], deadline=WALL - 1), 1)[1]),
        transfer.file_end([13, 12, 2], 4)]))
    done = outcomes(Deferred.fromCoroutine(transfer.restore(router, data.read, None, WALL)))
    got = {}
    for name, client in router.clients.items():
        for sent in client.take():
            assert sent.op == pb.RESTORE
            entries = decode_entries(sent.value, 1)[1]
            got.setdefault(sent.group, []).extend((name, e[0], e[2], e[3]) for e in entries)
            sent.answer(cas=len(entries))
    [summary] = done
    assert sorted((k, d) for _, k, d, _ in got["sessions"]) == sorted((k, WALL + 60) for k in keys)
    for name, key, _, rank in got["sessions"]:
        assert name == router.ring.owner(routing_key("sessions", key)) and rank is None
    assert sorted((n, k) for n, k, _, _ in got["copies"]) == sorted(
        (n, k) for k in keys for n in router.ring.owners(routing_key("copies", k), 2))
    assert summary.as_dict() == {"entries": 27, "stored": 36, "expired": 1,
                                 "skipped_groups": {"gone": 2}}


def test_a_restore_of_one_group_leaves_the_others():
    router = cluster()
    header = transfer.header_of(router, [router.groups["sessions"], router.groups["copies"]], WALL)
    data = io.BytesIO(transfer.file_start(header)
                      + transfer.entry_block(1, decode_entries(payload([b"a"]), 1)[1])
                      + transfer.file_end([0, 1], 1))
    done = outcomes(Deferred.fromCoroutine(transfer.restore(router, data.read, "sessions", WALL)))
    assert not any(c.sent for c in router.clients.values())
    assert done[0].stored == 0


def test_a_dump_of_a_replicated_group_reads_a_down_node_s_keys_from_their_next_copies():
    router = cluster()
    router.clients["node-1"].state = "down"
    keys = [b"k%d" % i for i in range(30)]
    emitted = []

    async def emit(entries, index):
        emitted.extend(e[0] for e in entries)

    done = outcomes(Deferred.fromCoroutine(
        transfer.dump(router, [router.groups["copies"]], emit)))
    assert router.clients["node-1"].sent == []
    for name in ("node-0", "node-2"):
        [sent] = router.clients[name].take()
        sent.answer(value=payload(keys))  # every copy it holds
    assert done and sorted(emitted) == sorted(keys)  # each key once, node-1's too
