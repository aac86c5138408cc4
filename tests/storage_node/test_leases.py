"""Leases on a node (storage_node/leases.py, lease_ops.py), on a fake clock: every
interleaving of a lease with its fill, the key's writes, flushes, lapses, the bounds and
grace, with the exact answer each reader gets and when."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from shared import ringcache_pb2 as pb
from shared.framing import HEADER_SIZE
from storage_node.leases import WAITER_BYTES
from storage_node.node import Node

MiB = 1 << 20
LIFE = 2.0


class Peer:
    """A router connection as the node sees it: the frames it was delivered."""

    def __init__(self):
        self.frames: list[list[pb.Response]] = []

    def deliver(self, frame) -> None:
        self.frames.append(list(pb.Frame.FromString(bytes(frame[HEADER_SIZE:])).responses))

    def take(self) -> list[pb.Response]:
        answers = [r for frame in self.frames for r in frame]
        self.frames = []
        return answers


@pytest.fixture
def clock():
    return Clock()


def make_node(clock, groups=(("g", "lru", MiB, 0.0, 0.0),), **kwargs) -> Node:
    node = Node(16 * MiB, clock=clock.seconds, call_later=clock.callLater,
                rng=random.Random(7), **kwargs)
    configs = [pb.GroupConfig(name=n, policy=p, max_bytes=b, stale_while_revalidate=swr,
                              stale_if_error=sie) for n, p, b, swr, sie in groups]
    assert node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=configs)).status == pb.OK
    return node


@pytest.fixture
def node(clock):
    return make_node(clock)


def lease_get(node, peer, key=b"k", id=10, life=LIFE, **fields):
    return node.handle(pb.Request(id=id, op=pb.LEASE_GET, group="g", key=key, lease_ttl=life,
                                  **fields), peer)


def fill(node, token, value=b"v", key=b"k", **fields):
    return node.handle(pb.Request(id=90, op=pb.LEASE_FILL, group="g", key=key, value=value,
                                  lease=token, **fields))


def op(node, kind, key=b"k", value=b"", **fields):
    return node.handle(pb.Request(id=80, op=kind, group="g", key=key, value=value, **fields))


def value_of(response) -> tuple:
    return response.status, response.value


# -- a lease, its waiters and its fill ------------------------------------------------------


def test_a_miss_gets_a_lease_the_next_reader_waits_and_gets_the_fill(node):
    a, b = Peer(), Peer()
    first = lease_get(node, a, id=1)
    assert (first.status, first.value) == (pb.NOT_FOUND, b"")
    assert first.lease != 0
    assert lease_get(node, b, id=2) is None  # no answer yet: it waits at the node
    assert b.frames == []
    filled = fill(node, first.lease, b"loaded", flags=5, ttl=60)
    assert filled.status == pb.OK and filled.cas
    [answer] = b.take()
    assert (answer.id, answer.status, answer.value, answer.flags, answer.cas, answer.lease) == (
        2, pb.OK, b"loaded", 5, filled.cas, 0)
    assert value_of(op(node, pb.GET)) == (pb.OK, b"loaded")
    leases = node.leases
    assert (leases.granted, leases.parked, leases.waiting, len(leases)) == (1, 1, 0, 0)


def test_a_hit_is_answered_as_a_get_and_takes_no_lease(node):
    op(node, pb.SET, value=b"cached", flags=3)
    answer = lease_get(node, Peer())
    assert (answer.status, answer.value, answer.flags, answer.lease) == (pb.OK, b"cached", 3, 0)
    assert node.leases.granted == 0


def test_a_cached_absence_is_answered_not_found_without_a_lease(node):
    op(node, pb.SET, negative=True, ttl=30)
    answer = lease_get(node, Peer())
    assert (answer.status, answer.negative, answer.lease) == (pb.NOT_FOUND, True, 0)


def test_a_not_found_fill_is_lease_checked_and_answers_the_waiters_negative(node):
    a, b = Peer(), Peer()
    token = lease_get(node, a).lease
    lease_get(node, b, id=2)
    assert fill(node, token, b"", negative=True, ttl=30).status == pb.OK
    [answer] = b.take()
    assert (answer.status, answer.negative) == (pb.NOT_FOUND, True)
    op(node, pb.DELETE)
    token = lease_get(node, a).lease
    op(node, pb.SET, value=b"newer")
    assert fill(node, token, b"", negative=True, ttl=30).status == pb.NOT_STORED
    assert value_of(op(node, pb.GET)) == (pb.OK, b"newer")


def test_one_lease_per_key_others_keys_have_their_own(node):
    a = Peer()
    one, two = lease_get(node, a, key=b"one"), lease_get(node, a, key=b"two")
    assert one.lease and two.lease and one.lease != two.lease
    assert fill(node, one.lease, key=b"two").status == pb.NOT_STORED  # not that key's token
    assert fill(node, two.lease, key=b"two").status == pb.OK


def test_tokens_start_at_a_random_place(clock):
    a = make_node(clock).handle(pb.Request(id=1, op=pb.LEASE_GET, group="g", key=b"k",
                                           lease_ttl=1), Peer())
    other = Node(MiB, clock=clock.seconds, rng=random.Random(8))
    other.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[pb.GroupConfig(
        name="g", policy="lru", max_bytes=MiB)]))
    b = other.handle(pb.Request(id=1, op=pb.LEASE_GET, group="g", key=b"k", lease_ttl=1), Peer())
    assert a.lease != b.lease and a.lease > 1000 and b.lease > 1000


# -- writes void the lease ------------------------------------------------------------------


def test_a_fill_after_a_delete_is_dropped_and_the_next_reader_loads_afresh(node):
    a, b = Peer(), Peer()
    token = lease_get(node, a).lease
    assert lease_get(node, b, id=2) is None
    assert op(node, pb.DELETE).status == pb.NOT_FOUND  # "update the database, then delete"
    # The waiter reads again: nothing there, so it gets a new lease and loads.
    [answer] = b.take()
    assert (answer.id, answer.status) == (2, pb.NOT_FOUND) and answer.lease not in (0, token)
    assert fill(node, token, b"old").status == pb.NOT_STORED  # the late fill is dropped
    assert node.leases.fills_dropped == 1
    assert op(node, pb.GET).status == pb.NOT_FOUND
    assert fill(node, answer.lease, b"new").status == pb.OK
    assert value_of(op(node, pb.GET)) == (pb.OK, b"new")


def test_a_set_during_a_load_wins_and_the_waiters_get_it(node):
    a, b = Peer(), Peer()
    token = lease_get(node, a).lease
    lease_get(node, b, id=2)
    assert op(node, pb.SET, value=b"written").status == pb.OK
    [answer] = b.take()
    assert value_of(answer) == (pb.OK, b"written")
    assert fill(node, token, b"loaded").status == pb.NOT_STORED
    assert value_of(op(node, pb.GET)) == (pb.OK, b"written")
    assert (node.leases.voided, node.leases.fills_dropped) == (1, 1)


@pytest.mark.parametrize("kind, fields", [
    (pb.ADD, {"value": b"x"}), (pb.REPLACE, {"value": b"x"}), (pb.TOUCH, {"ttl": 5}),
    (pb.CAS, {"value": b"x", "cas": 3}), (pb.APPEND, {"value": b"x"}),
    (pb.PREPEND, {"value": b"x"}), (pb.INCR, {"delta": 1}), (pb.DECR, {"delta": 1}),
])
def test_every_write_of_the_key_voids_its_lease(node, kind, fields):
    token = lease_get(node, Peer()).lease
    op(node, kind, **fields)
    assert fill(node, token, b"loaded").status == pb.NOT_STORED


def test_a_write_of_another_key_leaves_the_lease(node):
    token = lease_get(node, Peer()).lease
    op(node, pb.SET, key=b"other", value=b"x")
    op(node, pb.DELETE, key=b"other")
    assert fill(node, token).status == pb.OK


def test_a_read_of_the_key_leaves_its_lease(node):
    token = lease_get(node, Peer()).lease
    assert op(node, pb.GAT, ttl=5).status == pb.NOT_FOUND  # a miss changes nothing
    assert op(node, pb.GET).status == pb.NOT_FOUND
    assert fill(node, token).status == pb.OK


def test_a_flush_voids_every_lease_of_the_group_and_waiters_load_afresh(node):
    a, b = Peer(), Peer()
    k1 = lease_get(node, a, key=b"k1").lease
    k2 = lease_get(node, a, key=b"k2").lease
    lease_get(node, b, key=b"k1", id=2)
    op(node, pb.FLUSH_GROUP)
    [answer] = b.take()
    assert answer.status == pb.NOT_FOUND and answer.lease not in (0, k1)
    assert fill(node, k1, key=b"k1").status == pb.NOT_STORED
    assert fill(node, k2, key=b"k2").status == pb.NOT_STORED


def test_a_delayed_flush_voids_the_leases_when_it_comes_due(node, clock):
    op(node, pb.FLUSH_GROUP, ttl=5)
    early = lease_get(node, Peer(), key=b"early").lease
    assert fill(node, early, key=b"early").status == pb.OK  # before the flush time
    late = lease_get(node, Peer(), key=b"late").lease
    clock.advance(5)
    assert op(node, pb.GET, key=b"early").status == pb.NOT_FOUND  # the flush came due
    assert fill(node, late, key=b"late").status == pb.NOT_STORED


def test_a_write_in_the_frame_of_a_waiting_read_answers_it_after_that_frame(node):
    a, b = Peer(), Peer()
    lease_get(node, a)
    payload = pb.Frame(requests=[
        pb.Request(id=2, op=pb.LEASE_GET, group="g", key=b"k", lease_ttl=LIFE),
        pb.Request(id=3, op=pb.SET, group="g", key=b"k", value=b"now")]).SerializeToString()
    out = node.handle_payload(payload, peer=b)
    own = pb.Frame.FromString(bytes(out[HEADER_SIZE:])).responses
    assert [r.id for r in own] == [3]  # the frame's own answer holds the SET's only
    assert b.frames == []
    node.flush_answers()
    [answer] = b.take()
    assert (answer.id, answer.value) == (2, b"now")


# -- lapses ----------------------------------------------------------------------------------


def test_a_lapse_hands_the_lease_to_the_first_waiter_the_others_wait_on(node, clock):
    a, b, c = Peer(), Peer(), Peer()
    token = lease_get(node, a, life=2.0).lease  # a's router dies holding it
    lease_get(node, b, id=2, life=2.0)
    lease_get(node, c, id=3, life=2.0)
    clock.advance(1.9)
    assert b.frames == [] and c.frames == []
    clock.advance(0.1)
    [handed] = b.take()
    assert handed.status == pb.NOT_FOUND and handed.lease not in (0, token)
    assert c.frames == []
    assert fill(node, token, b"late").status == pb.NOT_STORED  # a came back too late
    assert fill(node, handed.lease, b"fresh").status == pb.OK
    [answer] = c.take()
    assert value_of(answer) == (pb.OK, b"fresh")
    assert (node.leases.lapsed, node.leases.handed_on) == (1, 1)


def test_a_lapsed_lease_nobody_waits_on_ends_at_the_next_read(node, clock):
    token = lease_get(node, Peer()).lease
    clock.advance(LIFE)
    again = lease_get(node, Peer(), id=2)
    assert again.status == pb.NOT_FOUND and again.lease not in (0, token)
    assert (node.leases.lapsed, node.leases.handed_on) == (1, 0)
    assert fill(node, token).status == pb.NOT_STORED


def test_a_waiter_handed_on_a_lease_has_the_whole_life_again(node, clock):
    lease_get(node, Peer(), life=1.0)
    b, c = Peer(), Peer()
    lease_get(node, b, id=2, life=1.0)
    lease_get(node, c, id=3, life=1.0)
    clock.advance(1.0)
    [handed] = b.take()  # b's router dies too
    clock.advance(0.99)
    assert c.frames == []
    clock.advance(0.01)
    [answer] = c.take()
    assert answer.status == pb.NOT_FOUND and answer.lease not in (0, handed.lease)


def test_a_closed_connection_stops_its_readers_waiting(node, clock):
    a, b, c = Peer(), Peer(), Peer()
    token = lease_get(node, a).lease
    lease_get(node, b, id=2)
    lease_get(node, c, id=3)
    node.peer_gone(b)
    assert node.leases.waiting == 1
    fill(node, token, b"v")
    assert b.frames == [] and [r.id for r in c.take()] == [3]


# -- bounds and bad requests ----------------------------------------------------------------


def test_waiting_readers_are_bounded_in_number(clock):
    node = make_node(clock)
    node.leases.max_waiting = 2
    lease_get(node, Peer())
    assert lease_get(node, Peer(), id=2) is None
    assert lease_get(node, Peer(), id=3) is None
    refused = lease_get(node, Peer(), id=4)
    assert refused.status == pb.ERROR and "too many readers waiting" in refused.error
    assert (node.leases.waiting, node.leases.refused) == (2, 1)


def test_waiting_readers_are_bounded_in_bytes(clock):
    node = make_node(clock)
    node.leases.max_waiting_bytes = 2 * (WAITER_BYTES + 100)
    big = b"k" * 100
    lease_get(node, Peer(), key=big)
    assert lease_get(node, Peer(), key=big, id=2) is None
    assert lease_get(node, Peer(), key=big, id=3) is None
    assert lease_get(node, Peer(), key=big, id=4).status == pb.ERROR
    assert node.leases.waiting_bytes == 2 * (WAITER_BYTES + 100)


def test_no_wait_answers_at_once_while_a_lease_is_out(node):
    lease_get(node, Peer())
    answer = lease_get(node, Peer(), id=2, meta=pb.LEASE_NO_WAIT)
    assert (answer.status, answer.lease) == (pb.NOT_STORED, 0)


@pytest.mark.parametrize("life", [0.0, -1.0, 1e9])
def test_a_lease_needs_a_life(node, life):
    answer = lease_get(node, Peer(), life=life)
    assert answer.status == pb.ERROR and "lease_ttl" in answer.error


def test_a_fill_without_a_lease_is_dropped(node):
    assert fill(node, 12345).status == pb.NOT_STORED
    assert op(node, pb.GET).status == pb.NOT_FOUND


def test_a_fill_too_large_to_cache_still_answers_its_waiters(clock):
    node = make_node(clock, groups=(("g", "lru", 1000, 0.0, 0.0),))
    b = Peer()
    token = lease_get(node, Peer()).lease
    lease_get(node, b, id=2)
    assert fill(node, token, b"x" * 2000).status == pb.TOO_LARGE
    [answer] = b.take()
    assert value_of(answer) == (pb.OK, b"x" * 2000)


def test_a_removed_group_tells_its_waiters(node):
    b = Peer()
    lease_get(node, Peer())
    lease_get(node, b, id=2)
    node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[pb.GroupConfig(
        name="other", policy="lru", max_bytes=MiB)]))
    [answer] = b.take()
    assert answer.status == pb.UNKNOWN_GROUP


# -- a lease given back ---------------------------------------------------------------------


def release(node, token, failed=None, key=b"k"):
    meta = pb.LEASE_FAILED if failed is not None else 0
    return node.handle(pb.Request(id=91, op=pb.LEASE_RELEASE, group="g", key=key, lease=token,
                                  meta=meta, value=(failed or "").encode()))


def test_a_source_without_the_key_answers_the_waiters_not_found_with_no_new_load(node):
    b, c = Peer(), Peer()
    token = lease_get(node, Peer()).lease
    lease_get(node, b, id=2)
    lease_get(node, c, id=3)
    assert release(node, token).status == pb.OK
    for peer in (b, c):
        [answer] = peer.take()
        assert (answer.status, answer.negative, answer.lease) == (pb.NOT_FOUND, False, 0)
    assert node.leases.granted == 1


def test_a_failed_load_answers_the_waiters_its_error_not_a_load_each(node):
    b = Peer()
    token = lease_get(node, Peer()).lease
    lease_get(node, b, id=2)
    release(node, token, failed="database is on fire")
    [answer] = b.take()
    assert (answer.status, answer.error) == (pb.SOURCE_FAILED, "database is on fire")
    assert release(node, token).status == pb.NOT_STORED  # given back once


# -- grace ----------------------------------------------------------------------------------


@pytest.fixture
def graced(clock):
    """Group g with stale_while_revalidate 10 s and stale_if_error 60 s."""
    return make_node(clock, groups=(("g", "lru", MiB, 10.0, 60.0),))


def test_within_swr_the_stale_value_is_answered_at_once_and_one_reader_refreshes(graced, clock):
    op(graced, pb.SET, value=b"old", ttl=30)
    clock.advance(35)
    assert op(graced, pb.GET).status == pb.NOT_FOUND  # past its ttl for every plain read
    first = lease_get(graced, Peer())
    assert (first.status, first.value, first.stale) == (pb.OK, b"old", pb.REVALIDATE)
    assert first.lease
    second = lease_get(graced, Peer(), id=2)
    assert (second.value, second.stale, second.lease) == (b"old", pb.REVALIDATE, 0)
    assert fill(graced, first.lease, b"new", ttl=30).status == pb.OK
    fresh = lease_get(graced, Peer(), id=3)
    assert (fresh.value, fresh.stale) == (b"new", pb.FRESH)


def test_past_swr_within_sie_a_reader_loads_with_the_stale_value_in_hand(graced, clock):
    op(graced, pb.SET, value=b"old", ttl=30)
    clock.advance(30 + 20)
    b = Peer()
    first = lease_get(graced, Peer())
    assert (first.value, first.stale) == (b"old", pb.IF_ERROR) and first.lease
    assert lease_get(graced, b, id=2) is None  # it waits for the load, not the stale copy
    release(graced, first.lease, failed="timed out")
    [answer] = b.take()
    assert (answer.status, answer.value, answer.stale) == (pb.OK, b"old", pb.IF_ERROR)


def test_past_both_windows_the_entry_is_gone(graced, clock):
    op(graced, pb.SET, value=b"old", ttl=30)
    clock.advance(30 + 60)
    answer = lease_get(graced, Peer())
    assert answer.status == pb.NOT_FOUND and answer.lease


def test_a_stale_entry_is_absent_to_every_other_op(graced, clock):
    op(graced, pb.SET, value=b"7", ttl=30)
    clock.advance(31)
    assert op(graced, pb.TOUCH, ttl=5).status == pb.NOT_FOUND
    assert op(graced, pb.INCR, delta=1).status == pb.NOT_FOUND
    assert op(graced, pb.REPLACE, value=b"x").status == pb.NOT_STORED
    assert op(graced, pb.ADD, value=b"added", ttl=30).status == pb.OK
    assert value_of(op(graced, pb.GET)) == (pb.OK, b"added")


def test_a_delete_drops_the_stale_copy_too(graced, clock):
    op(graced, pb.SET, value=b"old", ttl=30)
    clock.advance(31)
    assert op(graced, pb.DELETE).status == pb.NOT_FOUND
    answer = lease_get(graced, Peer())
    assert answer.status == pb.NOT_FOUND and answer.value == b""


def test_a_not_found_load_drops_the_stale_copy(graced, clock):
    op(graced, pb.SET, value=b"old", ttl=30)
    clock.advance(31)
    token = lease_get(graced, Peer()).lease
    release(graced, token)
    answer = lease_get(graced, Peer(), id=2)
    assert answer.status == pb.NOT_FOUND and answer.value == b""


def test_grace_is_charged_to_the_budget_and_reported_ttls_are_the_entrys_own(graced, clock):
    op(graced, pb.SET, value=b"v", ttl=30)
    assert op(graced, pb.GET).ttl == 30  # not 90: the grace is the node's business
    group = graced.groups.get("g")
    assert len(group.core) == 1 and group.core.nbytes > 0


def test_a_change_of_the_windows_keeps_each_entrys_ttl(graced, clock):
    op(graced, pb.SET, value=b"v", ttl=30)
    clock.advance(10)
    graced.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[pb.GroupConfig(
        name="g", policy="lru", max_bytes=MiB, stale_while_revalidate=5)]))
    assert op(graced, pb.GET).ttl == pytest.approx(20)
    clock.advance(22)  # 2 s past its ttl: stale now, within the new 5 s
    answer = lease_get(graced, Peer())
    assert (answer.value, answer.stale) == (b"v", pb.REVALIDATE)
    clock.advance(4)
    assert lease_get(graced, Peer(), id=2).status == pb.NOT_FOUND  # past the new window


# -- through the protocol ---------------------------------------------------------------------


def test_a_waiting_read_is_answered_on_its_own_connection_in_a_frame_of_its_own(node):
    from twisted.internet.testing import StringTransport

    from shared.framing import FrameDecoder, encode_batch
    from storage_node.protocol import NodeProtocol

    def connect():
        protocol = NodeProtocol(node)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def answers(transport):
        decoder = FrameDecoder()
        decoder.receive_data(transport.value())
        transport.clear()
        return [list(pb.Frame.FromString(p).responses) for p in decoder.frames()]

    (holder, held), (reader, read) = connect(), connect()
    holder.dataReceived(encode_batch([pb.Request(id=1, op=pb.LEASE_GET, group="g", key=b"k",
                                                 lease_ttl=LIFE)]))
    [[granted]] = answers(held)
    reader.dataReceived(encode_batch([pb.Request(id=7, op=pb.LEASE_GET, group="g", key=b"k",
                                                 lease_ttl=LIFE)]))
    assert answers(read) == [[]]  # its frame is answered, without the waiting read
    holder.dataReceived(encode_batch([pb.Request(id=2, op=pb.LEASE_FILL, group="g", key=b"k",
                                                 value=b"v", lease=granted.lease)]))
    assert [r.status for [r] in answers(held)] == [pb.OK]
    [[answer]] = answers(read)
    assert (answer.id, answer.value) == (7, b"v")
    stats = node.handle(pb.Request(id=3, op=pb.STATS)).stats.leases
    assert (stats.granted, stats.parked, stats.waiting) == (1, 1, 0)
    reader.connectionLost(None)
