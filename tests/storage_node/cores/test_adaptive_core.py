"""The adaptive core's own behaviour (the shared contract is in test_cores.py): which entries
it keeps, where ghosts and expired entries go, and its bookkeeping under random use. Every
test runs on both twins, the compiled core and the pure-Python one (tests/storage_node/cores/adaptive_state.py).

Every entry here is 10 bytes and the budget holds 20 of them, so the small queue's first
target (10% of the budget) is two entries. Ghosts hash with blake2b, not Python's seeded
hash, so every run evicts and recalls the same keys.
"""

from __future__ import annotations

import hashlib
import random
import sys

import pytest

from storage_node.cores.adaptive import AdaptiveCore as PureAdaptiveCore
from storage_node.cores.lru import LRUCore
from tests.fakes import FakeClock
from tests.storage_node.cores.adaptive_state import TWINS, snapshot, twin

ENTRY = 10
BUDGET = 20 * ENTRY


def stable_hash(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True)


@pytest.fixture(params=TWINS)
def core_class(request) -> type:
    return twin(request.param)


def new_core(core_class: type, budget: int = BUDGET, clock=None):
    return core_class(budget, clock or FakeClock(), hash=stable_hash)


def write(core, *keys: bytes, ttl=None) -> None:
    for key in keys:
        core.set(key, b"v" * (ENTRY - len(key)), ttl)


def keys(prefix: str, count: int, start: int = 0) -> list[bytes]:
    return [b"%s%02d" % (prefix.encode(), i) for i in range(start, start + count)]


def present(core, names) -> list[bytes]:
    return [key for key in names if core.get(key) is not None]


def test_a_scan_passes_through_the_small_queue_and_keeps_the_read_entries(core_class):
    hot, cold, scan = keys("h", 10), keys("c", 10), [b"s%03d" % i for i in range(100)]
    kept = {}
    for core in (new_core(core_class), LRUCore(BUDGET, FakeClock())):
        write(core, *hot)
        for key in hot:
            core.get(key)  # read once: proven
        write(core, *cold)  # the budget is full now
        write(core, *scan)  # each written once and never read
        # The first scan write moves the ten read entries to main and evicts c00; every
        # later one evicts the oldest unread entry of the small queue: 100 in all.
        assert core.evictions == 100
        kept[core.name] = present(core, hot + cold + scan)
    assert kept["adaptive"] == hot + scan[-10:]
    assert kept["lru"] == scan[-20:]


def test_entries_never_read_leave_in_the_order_they_were_written(core_class):
    core = new_core(core_class)
    first = keys("a", 20)
    write(core, *first)
    core.get(b"a03")
    write(core, *keys("b", 5))
    # a00..a02, then a03 (read: to main, not evicted), a04, a05: five evictions.
    assert present(core, first) == [key for key in first if key not in (b"a00", b"a01", b"a02", b"a04", b"a05")]
    assert core.evictions == 5


def test_a_ghost_written_again_goes_to_main_and_outlives_a_flush_of_the_small_queue(core_class):
    core = new_core(core_class)
    write(core, *keys("a", 20))
    write(core, b"b00")  # evicts a00, which becomes a ghost of the small queue
    assert core.get(b"a00") is None
    write(core, b"a00")  # a miss read through: the ghost goes straight to main
    write(core, *keys("c", 30))
    assert present(core, keys("a", 20)) == [b"a00"]


def test_a_ghost_of_the_small_queue_lengthens_it(core_class):
    # A longer small queue gives the next unread entries a longer trial: after the ghost
    # hit below, the small queue keeps three entries instead of two.
    core = new_core(core_class)
    write(core, *keys("a", 20))
    write(core, b"b00")  # a00 out
    write(core, b"a00")  # back as a ghost: target from 20 to 30 bytes, a01 out for room
    write(core, *keys("c", 40))
    # Main holds a00 and whatever the small queue promoted (nothing was read): the small
    # queue's last entries survive, as many as fit beside main.
    survivors = present(core, keys("c", 40))
    assert survivors == keys("c", 19, start=21)
    assert core.get(b"a00") is not None


def test_a_large_unproven_entry_goes_first_rather_than_the_small_ones_behind_it(core_class):
    core = new_core(core_class)
    small = keys("a", 19)
    write(core, *small)
    core.set(b"big", b"x" * 27)  # 30 bytes, more than the small queue's 20: a00, a01 go
    assert core.get(b"big") == b"x" * 27  # stored all the same: a set always stores
    core.get(b"big")
    core.delete(b"big")
    core.set(b"big", b"x" * 27)  # written again, unread: at the small queue's head
    write(core, b"c00")  # needs 10 bytes: the large entry goes, not three small ones
    assert core.get(b"big") is None
    assert present(core, small) == small[2:]
    assert core.evictions == 3


def test_a_deleted_key_written_again_waits_its_new_turn(core_class):
    core = new_core(core_class)
    first = keys("a", 20)
    write(core, *first)
    core.delete(b"a05")
    write(core, b"a05")  # its old place in the queue is stale, its new one last
    write(core, *keys("b", 6))
    # a00..a04 go, a05's old place is skipped, a06 goes.
    assert present(core, first) == [key for key in first if key not in keys("a", 5) + [b"a06"]]
    assert core.evictions == 6


def test_expired_entries_go_before_any_live_one(core_class):
    clock = FakeClock()
    core = new_core(core_class, clock=clock)
    hot, cold = keys("h", 10), keys("s", 10)
    write(core, *hot, ttl=5)
    for key in hot:
        core.get(key)
    write(core, *cold)
    write(core, b"t00")  # promotes the read entries to main, evicts s00
    clock.now += 5  # every hot entry expires, unseen: main would keep them a while
    fresh = keys("u", 10)
    write(core, *fresh)
    assert (core.expirations, core.evictions) == (10, 1)
    assert present(core, cold[1:] + [b"t00"] + fresh) == cold[1:] + [b"t00"] + fresh


def test_a_group_of_short_ttls_keeps_its_budget_for_live_entries(core_class):
    # Every entry is read right after its write, so each looks worth keeping, and lives
    # 3 s; fifteen are live at any time, and the budget holds twenty.
    clock = FakeClock()
    core = new_core(core_class, clock=clock)
    for second in range(50):
        clock.now += 1
        batch = keys("k%02d-" % second, 5)
        write(core, *batch, ttl=3)
        for key in batch * 3:
            assert core.get(key) is not None
    live = [key for second in (47, 48, 49) for key in keys("k%02d-" % second, 5)]
    # All fifteen are kept: the expired ones made room for them, none was evicted.
    assert present(core, live) == live
    assert core.evictions == 0


def test_a_get_returns_the_stored_value_itself(core_class):
    value = b"x" * 100_000
    core = core_class(10**6, FakeClock())
    core.set(b"ttl", value, ttl=60)
    core.set(b"plain", value)
    assert core.get(b"ttl") is value
    assert core.get(b"plain") is value
    core.get(b"ttl")  # a read moves it between states: still the same object
    assert core.get(b"ttl") is value


def test_drained_state_dicts_give_back_their_tables():
    # Every entry is read once, moving them all from the dict of unread entries to the
    # dict of read ones: the emptied dict's table must not stay sized for all of them.
    # (The pure twin's layout; the compiled one keeps each entry in one place, and
    # tests/storage_node/cores/test_adaptive_twins.py checks that it gives back what deletes emptied.)
    entries = [b"%06d" % i for i in range(20_000)]
    core = PureAdaptiveCore(10**9, FakeClock())

    def table_bytes():
        return sum(sys.getsizeof(level) for level in (core._fresh, core._read, *core._counts))

    for key in entries:
        core.set(key, b"")
    written = table_bytes()
    for key in entries:
        core.get(key)
    assert table_bytes() > 1.9 * written  # two tables sized for 20,000 entries
    core._upkeep()  # as the next evictions do, every sixteenth of the entries
    assert table_bytes() < 1.1 * written


# --- bookkeeping under random use -------------------------------------------------------


def check_consistent(core, now: float) -> None:
    """Every entry in exactly one state, each queue holding each of its live keys once
    after its stale places, and the byte counts equal to what the entries are charged."""
    state = snapshot(core)
    entries = state["entries"]
    small = {key for key, (where, _, _) in entries.items() if where in ("fresh", "read")}
    main = entries.keys() - small
    for queue, order, stale in ((small, state["small_order"], state["stale"][0]),
                                (main, state["main_order"], state["stale"][1])):
        seen: dict[bytes, int] = {}
        for key in order:
            seen[key] = seen.get(key, 0) + 1
        assert {k: n - (k in queue) for k, n in seen.items() if n - (k in queue)} == stale
        assert all(seen.get(key, 0) >= 1 for key in queue)
    ttl_overhead = core.TTL_OVERHEAD if core.entry_overhead else 0
    charge = {key: len(key) + len(value) + core.entry_overhead
              + (ttl_overhead if deadline is not None else 0)
              for key, (_, value, deadline) in entries.items()}
    assert core.nbytes == sum(charge.values()) <= core.max_bytes
    assert state["small_bytes"] == sum(charge[key] for key in small)
    assert len(core) == len(charge) == state["count"]


@pytest.mark.parametrize("overhead", [0, 23])
def test_long_random_use_keeps_the_bookkeeping_exact(core_class, overhead):
    rng = random.Random(f"adaptive-{overhead}")
    clock = FakeClock()
    core = core_class(600 + 20 * overhead, clock, entry_overhead=overhead, hash=stable_hash)
    last: dict[bytes, bytes | None] = {}
    names = [b"k%03d" % i for i in range(120)]
    for step in range(20_000):
        key = names[min(int(rng.expovariate(0.03)), len(names) - 1)]
        action = rng.random()
        if action < 0.55:
            got = core.get(key)
            assert got is None or got == last.get(key)
        elif action < 0.9:
            value = b"%d" % step * rng.randrange(1, 12)
            ttl = rng.choice([None, None, 0, 1, 3, 20, -1])
            core.set(key, value, ttl)
            last[key] = value if ttl is None or ttl >= 0 else None
        elif action < 0.95:
            core.delete(key)
            last[key] = None
        elif action < 0.98:
            core.touch(key, rng.choice([None, 2, 5]))
        else:
            clock.now += rng.choice([0.5, 1, 3])
        check_consistent(core, clock.now)
    assert core.evictions > 1000 and core.expirations > 100


def test_a_value_with_a_ttl_is_kept_with_its_deadline(core_class):
    core = new_core(core_class)
    core.set(b"k", b"value", ttl=5)
    assert snapshot(core)["entries"] == {b"k": ("fresh", b"value", 1005.0)}
