"""Ghosts: recall of evicted keys by queue, for a window of evictions, and their counts.

The hash is readable by eye, as groupcache's ring test makes it: key b"5" hashes to 5 in
the low bits (its slot) and 5 again from bit 41 (its fingerprint).
"""

from __future__ import annotations

from storage_node.cores.ghost import MAIN, SMALL, Ghosts


def by_eye(key: bytes) -> int:
    return int(key) << 41 | int(key)


def ghosts(window: int = 32) -> Ghosts:
    g = Ghosts(by_eye)
    g.fit(window)  # 64 slots, epochs of 2 evictions
    return g


def test_a_key_is_recalled_once_with_its_queue():
    g = ghosts()
    g.add(b"1", SMALL)
    g.add(b"2", MAIN)
    assert g.population() == (1, 1)
    assert (g.pop(b"1"), g.pop(b"2"), g.pop(b"3")) == (SMALL, MAIN, None)
    assert (g.pop(b"1"), g.pop(b"2")) == (None, None)  # recalled once: it is back in the cache
    assert g.population() == (0, 0)


def test_a_key_is_forgotten_after_a_window_of_evictions():
    # Sixteen epochs of two evictions; the key's own epoch is its first (of one eviction,
    # as the table was new): it stays a ghost through 29 more evictions, not 30.
    for later, recalled in ((29, SMALL), (30, None)):  # (the key itself is out of the counts
        # either way: recalled, or its epoch gone)
        g = ghosts()
        g.add(b"1", SMALL)
        for key in range(2, 2 + later):  # slots 2.., never the key's slot 1
            g.add(b"%d" % key, MAIN)
        assert g.pop(b"1") == recalled
        assert g.population() == (0, later)


def test_a_slot_taken_by_a_later_eviction_forgets_the_earlier_key():
    g = ghosts()
    g.add(b"1", SMALL)
    g.add(b"65", MAIN)  # slot 65 & 63 = 1: the same slot, another fingerprint
    assert (g.pop(b"1"), g.pop(b"65")) == (None, MAIN)


def test_population_counts_each_queue_in_the_window():
    g = ghosts()
    for key in range(1, 11):
        g.add(b"%d" % key, SMALL if key % 2 else MAIN)
    assert g.population() == (5, 5)
    g.pop(b"1")
    g.pop(b"2")
    assert g.population() == (4, 4)


def test_a_larger_cache_gets_a_new_empty_table():
    g = ghosts()
    g.add(b"1", SMALL)
    g.fit(1000)
    assert (g.pop(b"1"), g.population()) == (None, (0, 0))
