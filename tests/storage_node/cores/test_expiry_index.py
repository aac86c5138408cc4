"""The expiry index: keys come due in deadline order within a band of ttls, once each."""

from __future__ import annotations

from storage_node.cores.expiry import ExpiryIndex


def due(index: ExpiryIndex, now: float) -> list[bytes]:
    out = []
    while (key := index.pop_due(now)) is not None:
        out.append(key)
    return out


def test_keys_come_due_at_their_deadline_once():
    index = ExpiryIndex()
    index.add(b"a", 105.0, 5)
    index.add(b"b", 106.0, 5)
    index.add(b"long", 400.0, 300)
    assert due(index, 104.9) == []
    assert due(index, 105.0) == [b"a"]
    assert due(index, 399.0) == [b"b"]
    assert index.size == 1
    assert due(index, 1e9) == [b"long"]
    assert (due(index, 1e9), index.size) == ([], 0)


def test_each_band_is_in_write_order_so_a_long_ttl_does_not_hold_up_a_short_one():
    index = ExpiryIndex()
    index.add(b"day", 86_500.0, 86_400)
    index.add(b"second", 101.0, 1)
    assert due(index, 101.0) == [b"second"]


def test_compact_keeps_only_what_still_waits():
    index = ExpiryIndex()
    for i in range(6):
        index.add(b"k%d" % i, 100.0 + i, 10)
    index.compact(lambda key, deadline: key in (b"k1", b"k4"))
    assert index.size == 2
    assert due(index, 1e9) == [b"k1", b"k4"]


def test_prune_drops_the_front_of_each_band_until_a_key_still_waits():
    index = ExpiryIndex()
    for i in range(5):
        index.add(b"k%d" % i, 100.0 + i, 10)
    index.add(b"other", 1000.0, 600)
    index.prune(lambda key, deadline: key in (b"k2", b"k4", b"other"))
    # k0 and k1 went; k3 stays behind k2, which still waits.
    assert index.size == 4
    assert due(index, 1e9) == [b"k2", b"k3", b"k4", b"other"]
