"""The behaviour every eviction core owes the storage node, as reusable test mixins.

To check your own core (for ``policy: python:mypkg.cores:MyCore``), write a test file:

    from tests.storage_node.cores.core_contract import CoreContract

    class TestMyCore(CoreContract):
        core_class = MyCore

and run pytest on it. Override ``make_core(max_bytes, clock)`` if your class takes other
arguments. ``CoreContract`` is the contract of the built-in cores: the SPEC interface
plus ``touch``, ``max_bytes``, the ``evictions``/``expirations`` counters and the
``entry_overhead`` keyword (each entry is charged key + value + overhead; a subclass
sets ``entry_overhead`` to run every test with one). A core with only the SPEC interface
(the storage node falls back for the rest) subclasses ``RequiredCoreContract`` instead.
The tests know nothing of the policy: they never assume which entry is evicted, only
that evictions make room and keep the accounting exact. Time is a FakeClock the tests
move by hand.
"""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock


def size(key: bytes, value: bytes) -> int:
    return len(key) + len(value)


class RequiredCoreContract:
    """What SPEC.md "Eviction cores" asks of every core, built in or plugged in."""

    core_class: type
    entry_overhead = 0  # bytes charged per entry beyond key + value (CoreContract sets it)
    ttl_overhead = 0  # and charged on top for an entry with a ttl

    def make_core(self, max_bytes: int, clock: FakeClock):
        return self.core_class(max_bytes, clock)

    def charge(self, *entries: int) -> int:
        """What entries of these key + value sizes are charged, together."""
        return sum(entries) + self.entry_overhead * len(entries)

    def new(self, max_bytes: int | None = None):
        """A core on a fresh FakeClock; by default room for 100 bytes and ten overheads."""
        if max_bytes is None:
            max_bytes = 100 + 10 * (self.entry_overhead + self.ttl_overhead)
        self.clock = FakeClock()
        return self.make_core(max_bytes, self.clock)

    def present(self, core, keys) -> list[bytes]:
        """The keys that still answer, in the order given (each get is an access)."""
        return [key for key in keys if core.get(key) is not None]

    def test_has_a_name(self):
        assert isinstance(self.core_class.name, str) and self.core_class.name

    def test_a_new_core_is_empty(self):
        core = self.new()
        assert core.get(b"k") is None
        assert len(core) == 0
        assert core.nbytes == 0

    def test_set_then_get_charges_key_plus_value(self):
        core = self.new()
        core.set(b"k1", b"hello")
        core.set(b"key2", b"")
        assert core.get(b"k1") == b"hello"
        assert core.get(b"key2") == b""  # an empty value is a value, not a miss
        assert len(core) == 2
        assert core.nbytes == self.charge(2 + 5, 4 + 0)

    def test_set_on_a_key_replaces_it_and_recharges(self):
        core = self.new()
        core.set(b"k", b"short")
        core.set(b"k", b"much longer")
        assert core.get(b"k") == b"much longer"
        assert (len(core), core.nbytes) == (1, self.charge(1 + 11))
        core.set(b"k", b"s")
        assert (core.get(b"k"), len(core), core.nbytes) == (b"s", 1, self.charge(2))

    def test_delete(self):
        core = self.new()
        core.set(b"a", b"1234")
        core.set(b"b", b"5678")
        assert core.delete(b"a") is True
        assert core.get(b"a") is None
        assert (len(core), core.nbytes) == (1, self.charge(5))
        assert core.delete(b"a") is False
        assert core.delete(b"never") is False
        assert core.get(b"b") == b"5678"

    def test_clear_empties_the_core_and_resets_nbytes(self):
        core = self.new(max_bytes=self.charge(*[12] * 5))
        for i in range(5):
            core.set(b"k%d" % i, b"v" * 10, ttl=5 if i % 2 else None)
        core.clear()
        assert (len(core), core.nbytes) == (0, 0)
        assert self.present(core, [b"k%d" % i for i in range(5)]) == []
        core.set(b"again", b"v")
        assert (core.get(b"again"), len(core), core.nbytes) == (b"v", 1, self.charge(6))

    def test_an_entry_expires_at_exactly_its_deadline(self):
        core = self.new()
        core.set(b"k", b"v", ttl=10)
        self.clock.now += 9.999
        assert core.get(b"k") == b"v"
        self.clock.now += 0.001
        assert core.get(b"k") is None
        assert core.get(b"k") is None

    def test_ttl_none_and_zero_never_expire(self):
        core = self.new()
        core.set(b"none", b"v", ttl=None)
        core.set(b"zero", b"v", ttl=0)
        core.set(b"default", b"v")
        self.clock.now += 1e9
        assert self.present(core, [b"none", b"zero", b"default"]) == [b"none", b"zero", b"default"]

    def test_a_set_replaces_the_ttl_too(self):
        core = self.new()
        core.set(b"a", b"v", ttl=5)
        core.set(b"a", b"w")  # no ttl now
        core.set(b"b", b"v")
        core.set(b"b", b"w", ttl=5)  # a ttl now
        core.set(b"c", b"v", ttl=5)
        self.clock.now += 3
        core.set(b"c", b"w", ttl=5)  # counts from now
        self.clock.now += 4
        assert [core.get(k) for k in (b"a", b"b", b"c")] == [b"w", None, b"w"]
        self.clock.now += 1
        assert core.get(b"c") is None

    def test_an_expired_entry_is_invisible_to_delete_and_set(self):
        core = self.new()
        core.set(b"k", b"old", ttl=1)
        self.clock.now += 1
        assert core.delete(b"k") is False
        core.set(b"j", b"old", ttl=1)
        self.clock.now += 1
        core.set(b"j", b"new")
        assert core.get(b"j") == b"new"
        assert (len(core), core.nbytes) == (1, self.charge(4))

    def test_an_oversized_entry_is_refused_and_nothing_else_changes(self):
        core = self.new(max_bytes=self.charge(20))
        core.set(b"a", b"x" * 9)
        with pytest.raises(ValueError):
            core.set(b"big", b"x" * 18)  # 3 + 18 = 21 > 20
        assert core.get(b"big") is None
        assert core.get(b"a") == b"x" * 9
        assert (len(core), core.nbytes) == (1, self.charge(10))

    def test_an_oversized_write_removes_the_old_value_under_its_key(self):
        # The client meant to replace the value; the old one must not stay visible.
        core = self.new(max_bytes=self.charge(10, 10))
        core.set(b"k", b"old")
        core.set(b"other", b"x")
        with pytest.raises(ValueError):
            core.set(b"k", b"x" * (20 + self.entry_overhead))
        assert core.get(b"k") is None
        assert core.get(b"other") == b"x"
        assert (len(core), core.nbytes) == (1, self.charge(6))

    def test_an_entry_of_exactly_max_bytes_fits_alone(self):
        core = self.new(max_bytes=self.charge(20))
        for i in range(4):
            core.set(b"k%d" % i, b"xxx")
        core.set(b"big", b"x" * 17)
        assert core.get(b"big") == b"x" * 17
        assert (len(core), core.nbytes) == (1, self.charge(20))

    def test_set_evicts_to_fit_and_accounting_stays_exact(self):
        budget = self.charge(*[10] * 10)
        core = self.new(max_bytes=budget)
        keys = [b"key%02d" % i for i in range(40)]  # 5-byte keys, 10 bytes per entry
        for key in keys:
            core.set(key, b"v" * 5)
            assert core.nbytes <= budget
            assert core.get(key) == b"v" * 5  # the entry just written always fits
        alive = self.present(core, keys)
        assert len(alive) == len(core) == 10
        assert core.nbytes == budget

    def test_a_big_entry_evicts_as_many_as_it_needs(self):
        budget = self.charge(*[10] * 10)
        core = self.new(max_bytes=budget)
        keys = [b"k%d" % i for i in range(10)]  # 2 + 8 = 10 bytes each
        for key in keys:
            core.set(key, b"v" * 8)
        big = budget - self.charge(10, 10, 10, 10) - self.entry_overhead + 1
        core.set(b"big", b"v" * (big - 3))  # leaves room for three at most: seven must go
        assert core.get(b"big") == b"v" * (big - 3)
        alive = self.present(core, keys)
        assert len(alive) <= 3
        assert len(core) == len(alive) + 1
        assert core.nbytes == self.charge(big, *[10] * len(alive)) <= budget

    def test_expired_entries_do_not_hold_budget_forever(self):
        # Even an entry read often before it expired (which a frequency policy values)
        # must give its bytes back once fresh writes need them.
        budget = self.charge(*[10] * 10)
        core = self.new(max_bytes=budget)
        core.set(b"hot", b"v" * 47, ttl=10)  # 50 bytes
        for _ in range(50):
            assert core.get(b"hot") is not None
        self.clock.now += 10
        for i in range(1000):
            core.set(b"f%04d" % i, b"v" * 5)  # 10 bytes each
        # Ten fresh entries fill the budget: none of it is left to the expired one.
        assert (len(core), core.nbytes) == (10, budget)


def walk_all(core, chunk: int = 1_000_000) -> list[tuple]:
    """Every entry a fresh walk of ``core`` yields, taken ``chunk`` at a time."""
    cursor, out = core.walk(), []
    while batch := cursor.take(chunk):
        assert len(batch) <= chunk
        out += batch
    assert cursor.take(chunk) == []  # over is over
    return out


class WalkContract:
    """walk() and restore() (storage_node/cores/walk.py), as every built-in core has them:
    a snapshot of a node lists a core's entries coldest first while it serves, and puts
    them back in that order."""

    def filled(self, n: int = 12, max_bytes: int | None = None):
        """A core holding n entries, some with a ttl, some read since."""
        core = self.new(max_bytes if max_bytes is not None
                        else n * (self.charge_with_ttl(8) + 8) * 2)
        for i in range(n):
            core.set(b"k%02d" % i, b"v%03d" % i, ttl=100 + i if i % 3 == 0 else None)
        for i in range(0, n, 2):
            core.get(b"k%02d" % i)
        return core

    def test_a_walk_yields_every_live_entry_once_with_its_value_and_ttl(self):
        core = self.filled()
        self.clock.now += 10
        walked = walk_all(core)
        assert sorted((key, value, ttl) for key, value, ttl, _ in walked) == [
            (b"k%02d" % i, b"v%03d" % i, float(100 + i - 10) if i % 3 == 0 else None)
            for i in range(12)]
        assert all(isinstance(rank, int) for *_, rank in walked)

    def test_an_empty_core_walks_to_nothing(self):
        assert walk_all(self.new()) == []

    def test_walking_is_not_an_access_and_changes_nothing(self):
        core = self.filled()
        before = (len(core), core.nbytes, core.evictions, core.expirations)
        first = walk_all(core)
        assert walk_all(core) == first
        assert (len(core), core.nbytes, core.evictions, core.expirations) == before

    def test_a_walk_in_small_steps_yields_what_one_step_does(self):
        core = self.filled()
        assert walk_all(core, chunk=1) == walk_all(core, chunk=5) == walk_all(core)

    def test_expired_entries_are_not_walked(self):
        core = self.filled()
        self.clock.now += 100  # k00 (ttl 100) is due now, k03 (103) and the others not
        keys = [key for key, *_ in walk_all(core)]
        assert b"k00" not in keys and b"k03" in keys and len(keys) == 11

    def test_a_walk_survives_the_core_changing_under_it(self):
        core = self.filled(n=30)
        cursor = core.walk()
        first = cursor.take(5)
        seen = {key for key, *_ in first}
        rest = [b"k%02d" % i for i in range(30) if b"k%02d" % i not in seen]
        deleted, rewritten, read = rest[:4], rest[4:8], rest[8:12]
        for key in deleted:
            core.delete(key)
        for key in rewritten:
            core.set(key, b"new")
        for key in read:
            core.get(key)
        for i in range(5):
            core.set(b"added%d" % i, b"x")
        out = first
        while batch := cursor.take(3):
            out += batch
        got = {}
        for key, value, _, _ in out:
            got.setdefault(key, []).append(value)
        assert not set(deleted) & set(got)
        for key in rewritten:  # written after the start: its new value, or not at all
            assert got.get(key, [b"new"])[-1] == b"new"
        untouched = set(rest[12:]) | set(read)
        assert untouched <= set(got)
        assert all(values[-1] == b"v%03d" % int(key[1:]) for key, values in got.items()
                   if key in untouched)

    def test_clear_ends_a_walk(self):
        core = self.filled()
        cursor = core.walk()
        cursor.take(2)
        core.clear()
        core.set(b"after", b"clear")
        assert cursor.take(100) == []

    def test_restoring_a_walk_rebuilds_its_order_and_ranks(self):
        core = self.filled(n=40, max_bytes=self.charge_with_ttl(8) * 25)
        for i in range(40, 60):  # evictions, so the queues hold a history
            core.set(b"k%02d" % i, b"v%03d" % i)
            core.get(b"k%02d" % (i - 7))
        walked = walk_all(core)
        twin = self.make_core(core.max_bytes, self.clock)
        for key, value, ttl, rank in walked:
            twin.restore(key, value, ttl, rank)
        assert walk_all(twin) == walked
        assert (len(twin), twin.nbytes) == (len(core), core.nbytes)

    def test_restoring_into_a_smaller_budget_evicts_to_fit(self):
        core = self.filled(n=20)
        walked = walk_all(core)
        small = self.make_core(self.charge_with_ttl(8) * 6, self.clock)
        for key, value, ttl, rank in walked:
            small.restore(key, value, ttl, rank)
        assert 0 < len(small) < 20
        assert small.nbytes <= small.max_bytes
        assert small.evictions == 20 - len(small)
        hottest = walked[-1]
        assert small.get(hottest[0]) == hottest[1]  # the last restored is the last to go

    def test_restore_replaces_a_key_and_keeps_the_accounting(self):
        core = self.new()
        core.set(b"k", b"old value")
        core.restore(b"k", b"new", 5, None)
        assert core.get(b"k") == b"new"
        assert (len(core), core.nbytes) == (1, self.charge_with_ttl(1 + 3))
        assert core.ttl_left(b"k") == 5

    def test_restore_of_an_oversized_entry_is_refused(self):
        core = self.new(max_bytes=50)
        with pytest.raises(ValueError):
            core.restore(b"k", b"x" * 100, None, None)
        assert (len(core), core.nbytes) == (0, 0)

    @pytest.mark.parametrize("rank", [-1, 99, "1", 1.0])
    def test_restore_of_a_rank_the_policy_has_not_is_refused(self, rank):
        with pytest.raises(ValueError):
            self.new().restore(b"k", b"v", None, rank)


class CoreContract(WalkContract, RequiredCoreContract):
    """The contract of the built-in cores: the required one plus touch, counters, the
    per-entry overhead, and walk/restore."""

    def make_core(self, max_bytes: int, clock: FakeClock):
        return self.core_class(max_bytes, clock, entry_overhead=self.entry_overhead)

    @property
    def ttl_overhead(self) -> int:
        """A core that charges an overhead charges its TTL_OVERHEAD on top for a ttl."""
        return self.core_class.TTL_OVERHEAD if self.entry_overhead else 0

    def charge_with_ttl(self, *entries: int) -> int:
        """What entries with a ttl are charged."""
        return self.charge(*entries) + self.ttl_overhead * len(entries)

    def test_entry_overhead(self):
        core = self.new()
        assert core.entry_overhead == self.entry_overhead

    def test_ttl_left_tells_the_time_an_entry_has_left(self):
        core = self.new(max_bytes=self.charge_with_ttl(2, 2) * 10)
        core.set(b"a", b"1", ttl=10)
        core.set(b"b", b"2")
        self.clock.now += 4
        assert (core.ttl_left(b"a"), core.ttl_left(b"b"), core.ttl_left(b"none")) == (6, None, None)
        assert (core.get(b"a"), core.ttl_left(b"a")) == (b"1", 6)
        self.clock.now += 6
        assert core.get(b"a") is None

    def test_max_bytes(self):
        assert self.new(max_bytes=1234).max_bytes == 1234

    def test_touch_sets_a_new_deadline_and_keeps_the_value(self):
        core = self.new()
        core.set(b"k", b"value", ttl=5)
        self.clock.now += 4
        assert core.touch(b"k", 5) is True
        assert (core.get(b"k"), len(core), core.nbytes) == (b"value", 1, self.charge_with_ttl(6))
        self.clock.now += 4.5
        assert core.get(b"k") == b"value"
        self.clock.now += 0.5
        assert core.get(b"k") is None

    @pytest.mark.parametrize("ttl", [None, 0])
    def test_touch_with_no_ttl_removes_the_deadline(self, ttl):
        core = self.new()
        core.set(b"k", b"v", ttl=5)
        assert core.touch(b"k", ttl) is True
        self.clock.now += 1e9
        assert core.get(b"k") == b"v"

    def test_touch_gives_a_ttl_to_an_entry_without_one(self):
        core = self.new()
        core.set(b"k", b"v")
        assert core.touch(b"k", 2) is True
        self.clock.now += 2
        assert core.get(b"k") is None

    def test_touch_of_an_absent_or_expired_key_is_false(self):
        core = self.new()
        assert core.touch(b"never", 5) is False
        core.set(b"k", b"v", ttl=5)
        self.clock.now += 5
        assert core.touch(b"k", 5) is False
        assert core.get(b"k") is None
        assert core.get(b"never") is None

    def test_a_negative_ttl_is_already_past(self):
        # As in memcached: the write removes the old value and stores nothing.
        core = self.new()
        core.set(b"k", b"old")
        core.set(b"k", b"new", ttl=-1)
        assert (core.get(b"k"), len(core), core.nbytes) == (None, 0, 0)
        core.set(b"t", b"v")
        assert core.touch(b"t", -1) is True
        assert (core.get(b"t"), len(core), core.nbytes) == (None, 0, 0)

    def test_evictions_count_entries_dropped_for_room(self):
        core = self.new(max_bytes=self.charge(*[10] * 10))
        for i in range(25):
            core.set(b"key%02d" % i, b"v" * 5)  # 10 bytes each
        assert (core.evictions, core.expirations) == (15, 0)
        core.delete(b"key24")  # a delete is not an eviction
        assert core.evictions == 15

    def test_expirations_count_expired_entries_found(self):
        core = self.new()
        for key in (b"get", b"delete", b"set", b"touch"):
            core.set(key, b"v", ttl=1)
        core.set(b"live", b"v", ttl=2)
        self.clock.now += 1
        core.get(b"get")
        core.delete(b"delete")
        core.set(b"set", b"w")
        core.touch(b"touch", 5)
        core.get(b"live")
        core.delete(b"live")
        assert (core.expirations, core.evictions) == (4, 0)
        assert (len(core), core.nbytes) == (1, self.charge(4))

    def test_evicting_an_expired_entry_counts_as_an_expiration(self):
        budget = self.charge_with_ttl(*[10] * 10)
        core = self.new(max_bytes=budget)
        for i in range(10):
            core.set(b"old%02d" % i, b"v" * 5, ttl=1)  # 10 bytes each, full
        self.clock.now += 1
        for i in range(10):
            core.set(b"new%02d" % i, b"v" * 5, ttl=100)
        assert (core.expirations, core.evictions) == (10, 0)
        assert (len(core), core.nbytes) == (10, budget)

    def test_clear_keeps_the_counters(self):
        core = self.new(max_bytes=self.charge_with_ttl(10, 10))
        core.set(b"a", b"v", ttl=1)
        self.clock.now += 1
        core.get(b"a")
        for i in range(5):
            core.set(b"k%d" % i, b"v" * 8, ttl=100)
        counters = (core.evictions, core.expirations)
        assert counters == (3, 1)
        core.clear()
        assert (core.evictions, core.expirations) == counters


class FifoCore:
    """A user core with only the SPEC interface: evicts the oldest write, expires lazily.

    The smallest core the contract accepts, and a template for your own: it proves the
    required contract assumes no policy, and the node tests use it as a plugin core."""

    name = "fifo"

    def __init__(self, max_bytes, clock):
        self.max_bytes, self.clock, self.nbytes = max_bytes, clock, 0
        self.data: dict[bytes, tuple[bytes, float | None]] = {}

    def get(self, key):
        value, deadline = self.data.get(key, (None, None))
        if deadline is not None and self.clock() >= deadline:
            self._pop(key)
            return None
        return value

    def set(self, key, value, ttl=None):
        self.delete(key)
        if len(key) + len(value) > self.max_bytes:
            raise ValueError("too large")
        while self.nbytes + len(key) + len(value) > self.max_bytes:
            self._pop(next(iter(self.data)))
        self.data[key] = (value, self.clock() + ttl if ttl else None)
        self.nbytes += len(key) + len(value)

    def delete(self, key):
        if self.get(key) is None:
            return False
        self._pop(key)
        return True

    def clear(self):
        self.data.clear()
        self.nbytes = 0

    def __len__(self):
        return len(self.data)

    def _pop(self, key):
        self.nbytes -= len(key) + len(self.data.pop(key)[0])
