"""The built-in eviction cores: the shared contract, each policy's order, the loader, and
random operations compared with a plain reference model."""

from __future__ import annotations

import importlib
import random
import sys
import tracemalloc

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from storage_node.cores import (
    CORES,
    AdaptiveCore,
    PolicyError,
    PureAdaptiveCore,
    load_core,
)
from storage_node.cores.base import Expiring
from storage_node.cores.lfu import MAX_FREQUENCY, LFUCore
from storage_node.cores.lru import LRUCore
from tests.fakes import FakeClock
from tests.storage_node.cores.adaptive_state import compiled_class
from tests.storage_node.cores.core_contract import (
    CoreContract,
    FifoCore,
    RequiredCoreContract,
)


class TestAdaptiveContract(CoreContract):
    """The compiled twin (storage_node/cores/_adaptive.c)."""

    @property
    def core_class(self):
        return compiled_class()


class TestPureAdaptiveContract(CoreContract):
    core_class = PureAdaptiveCore


class TestLRUContract(CoreContract):
    core_class = LRUCore


class TestLFUContract(CoreContract):
    core_class = LFUCore


# The same contract with an overhead charged per entry, as the node runs the cores: an
# odd number, so that no budget comes out right by accident.


class TestAdaptiveContractWithOverhead(TestAdaptiveContract):
    entry_overhead = 37


class TestPureAdaptiveContractWithOverhead(TestPureAdaptiveContract):
    entry_overhead = 37


class TestLRUContractWithOverhead(TestLRUContract):
    entry_overhead = 37


class TestLFUContractWithOverhead(TestLFUContract):
    entry_overhead = 37


NOT_A_CLASS = 42


class TestRequiredContractFitsAMinimalUserCore(RequiredCoreContract):
    core_class = FifoCore


# --- policy order --------------------------------------------------------------------
# Entries are 10 bytes and the budget holds exactly the entries written first, so every
# later write of n * 10 bytes evicts exactly n entries.


def filled(core_class, keys):
    """A core whose budget is exactly ``keys``, written in that order, 10 bytes each."""
    core = core_class(10 * len(keys), FakeClock())
    for key in keys:
        core.set(key, b"v" * (10 - len(key)))
    return core


def read(core, key, times):
    for _ in range(times):
        assert core.get(key) is not None


def survivors(core, keys):
    return [key for key in keys if core.get(key) is not None]


def test_lru_evicts_the_least_recently_used():
    core = filled(LRUCore, [b"a", b"b", b"c", b"d"])
    core.get(b"a")
    core.set(b"e", b"v" * 9)
    core.set(b"f", b"v" * 9)
    assert survivors(core, [b"a", b"b", b"c", b"d", b"e", b"f"]) == [b"a", b"d", b"e", b"f"]
    assert core.evictions == 2


def test_lru_a_write_and_a_touch_are_uses_a_miss_is_not():
    core = filled(LRUCore, [b"a", b"b", b"c", b"d"])
    core.set(b"a", b"w" * 9)
    core.touch(b"b", 5)
    core.get(b"zz")
    core.set(b"e", b"v" * 9)
    assert survivors(core, [b"a", b"b", b"c", b"d", b"e"]) == [b"a", b"b", b"d", b"e"]


# The LFU order tests keep every read key at level 5 or above: the aging hand visits levels
# 2, 3, 4 during the first three evictions and so touches none of them.


@pytest.mark.parametrize("evicted, kept", [(1, [b"a", b"b", b"d"]), (2, [b"a", b"d"]),
                                           (3, [b"a"])])
def test_lfu_evicts_the_least_frequently_used_first(evicted, kept):
    core = filled(LFUCore, [b"a", b"b", b"c", b"d"])
    read(core, b"a", 9)  # frequency 10
    read(core, b"b", 5)  # 6
    read(core, b"d", 7)  # 8; c stays at 1
    core.set(b"new", b"v" * (10 * evicted - 3))
    assert survivors(core, [b"a", b"b", b"c", b"d"]) == kept
    assert core.get(b"new") is not None


def test_lfu_breaks_ties_by_least_recent_use():
    core = filled(LFUCore, [b"a", b"b", b"c", b"d"])
    read(core, b"d", 7)
    for _ in range(5):
        for key in (b"b", b"a", b"c"):  # all at frequency 6, b used least recently
            core.get(key)
    core.set(b"new", b"v" * 17)  # two must go: b, then a
    assert survivors(core, [b"a", b"b", b"c", b"d", b"new"]) == [b"c", b"d", b"new"]


def test_lfu_a_write_keeps_the_frequency_and_refreshes_recency():
    core = filled(LFUCore, [b"a", b"b", b"c"])
    read(core, b"a", 5)
    read(core, b"b", 5)  # both at 6, a older
    core.set(b"a", b"w" * 9)  # still 6, now newer than b; a reset to 1 would go first
    core.set(b"new", b"v" * 17)  # c (1), then b
    assert survivors(core, [b"a", b"b", b"c", b"new"]) == [b"a", b"new"]
    assert core.get(b"a") == b"w" * 9


def test_lfu_counts_stop_at_the_cap():
    core = filled(LFUCore, [b"a", b"b", b"c"])
    read(core, b"b", MAX_FREQUENCY - 1)
    read(core, b"a", 100)
    read(core, b"b", 1)  # a was read far more often, but both sit at the cap; a is older
    core.set(b"new", b"v" * 17)  # c, then a
    assert survivors(core, [b"a", b"b", b"c", b"new"]) == [b"b", b"new"]


def test_lfu_keeps_a_hot_set_through_a_scan_that_flushes_lru():
    hot = [b"h%d" % i for i in range(5)]
    cold = [b"c%02d" % i for i in range(15)]
    scan = [b"s%03d" % i for i in range(100)]  # five times the cache, never reused
    kept = {}
    for core_class in (LRUCore, LFUCore):
        core = filled(core_class, hot + cold)  # 20 entries
        for _ in range(20):
            for key in hot:
                core.get(key)
        for key in scan:
            core.set(key, b"v" * 6)
        assert core.evictions == 100
        kept[core_class.name] = survivors(core, hot)
    assert kept == {"lru": [], "lfu": hot}


@pytest.mark.parametrize("fresh_writes, kept", [(191, True), (192, False)])
def test_lfu_aging_lets_an_idle_hot_key_go_after_a_fixed_number_of_evictions(fresh_writes, kept):
    # k0 at the cap among nine keys at frequency 1, then only fresh writes (one eviction
    # each). The hand, one level per eviction round 2..15, meets k0 at level 15 at
    # eviction 14 and then one level lower every 13 evictions, so k0 drops to level 1 at
    # eviction 14 + 13 * 13 = 183, behind 8 older entries there: eviction 192 takes it.
    keys = [b"k%d" % i for i in range(10)]
    core = filled(LFUCore, keys)
    read(core, b"k0", MAX_FREQUENCY)
    for i in range(fresh_writes):
        core.set(b"f%03d" % i, b"v" * 6)
    assert core.evictions == fresh_writes
    assert (core.get(b"k0") is not None) is kept


def test_lfu_levels_do_not_keep_the_tables_of_entries_that_left():
    # Every entry climbs through all the levels; each level's dict once held them all.
    keys = [b"%06d" % i for i in range(5_000)]
    core = LFUCore(10**9, FakeClock())
    tracemalloc.start()
    try:
        for key in keys:
            core.set(key, b"")
        filled_bytes = tracemalloc.get_traced_memory()[0]
        for _ in range(MAX_FREQUENCY):
            read_all = [core.get(key) for key in keys]
            assert read_all == [b""] * len(keys)
            del read_all
        climbed_bytes = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One level's table plus the _freq dict; without freeing drained levels it is ~11x.
    assert climbed_bytes < 2 * filled_bytes


def test_lfu_a_level_that_drained_gives_back_its_table():
    # All entries climb to level 2, then all but ten on to level 3: level 2 keeps ten
    # entries in a table sized for 5,000 until the upkeep of evicting writes copies it.
    keys = [b"%06d" % i for i in range(5_000)]
    core = LFUCore(10**9, FakeClock())
    for key in keys:
        core.set(key, b"")
    for key in keys + keys[10:]:
        core.get(key)
    drained = sys.getsizeof(core._levels[2])
    core._upkeep()  # as every sixteenth of the entries' worth of evicting writes does
    assert len(core._levels[2]) == 10
    assert sys.getsizeof(core._levels[2]) < 5_000 < drained / 10
    assert survivors(core, keys[:10]) == keys[:10]


# --- load_core ------------------------------------------------------------------------




def test_builtin_policies():
    assert CORES == {"adaptive": AdaptiveCore, "lru": LRUCore, "lfu": LFUCore}
    assert (load_core("adaptive"), load_core("lru"), load_core("lfu")) == (AdaptiveCore, LRUCore, LFUCore)
    assert all(cls.name == name for name, cls in CORES.items())


def test_a_user_class_by_module_and_name_when_allowed():
    name = "python:tests.storage_node.cores.core_contract:FifoCore"
    assert load_core(name, allowed=[name]) is FifoCore


def test_a_user_class_not_allowed_is_refused_before_any_import(monkeypatch):
    def import_module(name):
        raise AssertionError(f"imported {name}")

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(PolicyError, match=r"^policy 'python:signal:signal' is not allowed on this "
                                          r"node \(start it with --allow-policy python:signal:signal\)$"):
        load_core("python:signal:signal", allowed=["python:tests.storage_node.cores.core_contract:FifoCore"])


@pytest.mark.parametrize("policy, message", [
    ("fifo", "unknown policy 'fifo' (known: adaptive, lfu, lru, or python:module:Class)"),
    ("LRU", "unknown policy 'LRU'"),
    ("", "unknown policy ''"),
    ("python:", "expected python:module:Class"),
    ("python:tests.storage_node.cores.test_cores", "expected python:module:Class"),
    ("python::FifoCore", "expected python:module:Class"),
    ("python:tests.storage_node.cores.test_cores:", "expected python:module:Class"),
    ("python:no_such_module_here:Core",
     "cannot import no_such_module_here: ModuleNotFoundError: No module named"),
    ("python:tests.storage_node.cores.test_cores:Missing", "tests.storage_node.cores.test_cores has no Missing"),
    ("python:tests.storage_node.cores.test_cores:NOT_A_CLASS", "NOT_A_CLASS is not a class"),
])
def test_a_bad_policy_names_the_problem(policy, message):
    with pytest.raises(PolicyError) as raised:
        load_core(policy, allowed=[policy])
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_module_that_fails_on_import_is_a_policy_error(monkeypatch):
    def import_module(name):
        raise SyntaxError("invalid syntax (cores.py, line 3)")

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(PolicyError, match=r"^policy 'python:mycores:Core': cannot import mycores: "
                                          r"SyntaxError: invalid syntax \(cores.py, line 3\)$"):
        load_core("python:mycores:Core", allowed=["python:mycores:Core"])


# --- against a reference model --------------------------------------------------------


class ModelCore:
    """The policies said plainly, O(n) per operation: each entry has a frequency and the
    time of its last use; LRU evicts the smallest last use, LFU the smallest (frequency,
    last use) after one step of the aging hand. Accounting is recomputed, never kept."""

    def __init__(self, policy: str, max_bytes: int, clock):
        self.lfu = policy == "lfu"
        self.max_bytes, self.clock = max_bytes, clock
        self.entries: dict[bytes, list] = {}  # key -> [value, deadline, frequency, last use]
        self.uses = 0
        self.hand = 1
        self.evictions = self.expirations = 0

    @property
    def nbytes(self):
        return sum(len(key) + len(entry[0]) for key, entry in self.entries.items())

    def __len__(self):
        return len(self.entries)

    def get(self, key):
        if self._remove_if_expired(key) or key not in self.entries:
            return None
        entry = self.entries[key]
        self._use(key, min(entry[2] + 1, MAX_FREQUENCY) if self.lfu else 1)
        return entry[0]

    def set(self, key, value, ttl=None):
        frequency = self._remove(key) or 1
        if ttl is not None and ttl < 0:
            return
        size = len(key) + len(value)
        if size > self.max_bytes:
            raise ValueError(size)
        deadline = self.clock() + ttl if ttl else None
        while self.nbytes + size > self.max_bytes:
            if self.lfu and self._age():
                continue
            victim = min(self.entries, key=lambda k: self.entries[k][2:])
            if self._remove(victim):
                self.evictions += 1
        self.entries[key] = [value, deadline, frequency, None]
        self._use(key, frequency)

    def delete(self, key):
        return self._remove(key) > 0

    def touch(self, key, ttl):
        value = self.get(key)
        if value is None:
            return False
        self.set(key, value, ttl)
        return True

    def clear(self):
        self.entries.clear()
        self.hand = 1

    def _use(self, key, frequency):
        self.uses += 1
        self.entries[key][2:] = [frequency, self.uses]

    def _remove_if_expired(self, key):
        deadline = self.entries[key][1] if key in self.entries else None
        if deadline is not None and self.clock() >= deadline:
            del self.entries[key]
            self.expirations += 1
            return True
        return False

    def _remove(self, key):
        if key not in self.entries or self._remove_if_expired(key):
            return 0
        return self.entries.pop(key)[2]

    def _age(self):
        """One step of the hand; True if it dropped an expired entry."""
        self.hand = self.hand + 1 if self.hand < MAX_FREQUENCY else 2
        level = [key for key, entry in self.entries.items() if entry[2] == self.hand]
        if not level:
            return False
        oldest = min(level, key=lambda k: self.entries[k][3])
        if self._remove_if_expired(oldest):
            return True
        self._use(oldest, self.hand - 1)
        return False


def eviction_order(core) -> list[tuple]:
    """(key, value, deadline, frequency) of every stored entry, next victim first. Reads
    the cores' private layout on purpose: that order is what the model checks."""
    if isinstance(core, ModelCore):
        entries = sorted(core.entries.items(), key=lambda item: item[1][2:])
        return [(key, value, deadline, freq) for key, (value, deadline, freq, _) in entries]
    levels = core._levels if isinstance(core, LFUCore) else [{}, core._data]
    return [(key, getattr(entry, "value", entry), float(entry) if type(entry) is Expiring else None,
             freq)
            for freq, level in enumerate(levels) for key, entry in level.items()]


def assert_same_state(core, model):
    assert eviction_order(core) == eviction_order(model)
    assert (len(core), core.nbytes, core.evictions, core.expirations) == \
        (len(model), model.nbytes, model.evictions, model.expirations)


MODEL_BUDGET = 40
KEYS = [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
TTLS = [None, 0, 1, 2.5, 10, -1]


def same_outcome(core_call, model_call):
    """Run both; they must return the same thing or both raise ValueError."""
    try:
        expected = model_call()
    except ValueError:
        with pytest.raises(ValueError):
            core_call()
        return
    assert core_call() == expected


class CoreAgainstModel(RuleBasedStateMachine):
    policy = ""

    def __init__(self):
        super().__init__()
        self.clock = FakeClock()
        self.core = CORES[self.policy](MODEL_BUDGET, self.clock)
        self.model = ModelCore(self.policy, MODEL_BUDGET, self.clock)
        self.writes = 0

    @rule(key=st.sampled_from(KEYS), size=st.integers(0, 32), ttl=st.sampled_from(TTLS))
    def set(self, key, size, ttl):
        self.writes += 1
        value = bytes([self.writes % 256]) * size  # each write's value differs
        same_outcome(lambda: self.core.set(key, value, ttl),
                     lambda: self.model.set(key, value, ttl))

    @rule(key=st.sampled_from(KEYS))
    def get(self, key):
        assert self.core.get(key) == self.model.get(key)

    @rule(key=st.sampled_from(KEYS), repeat=st.integers(1, MAX_FREQUENCY + 2))
    def get_often(self, key, repeat):
        for _ in range(repeat):
            self.get(key)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key):
        assert self.core.delete(key) == self.model.delete(key)

    @rule(key=st.sampled_from(KEYS), ttl=st.sampled_from(TTLS))
    def touch(self, key, ttl):
        assert self.core.touch(key, ttl) == self.model.touch(key, ttl)

    @rule(seconds=st.sampled_from([0.5, 1, 2.5, 10]))
    def advance(self, seconds):
        self.clock.now += seconds

    @rule()
    def clear(self):
        self.core.clear()
        self.model.clear()

    @invariant()
    def same_state(self):
        assert_same_state(self.core, self.model)
        assert self.core.nbytes <= MODEL_BUDGET


class LRUAgainstModel(CoreAgainstModel):
    policy = "lru"


class LFUAgainstModel(CoreAgainstModel):
    policy = "lfu"


MODEL_SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestLRUAgainstModel = MODEL_SETTINGS(LRUAgainstModel).TestCase
TestLFUAgainstModel = MODEL_SETTINGS(LFUAgainstModel).TestCase


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_long_random_run_matches_the_model(policy):
    # Hypothesis explores short histories; this one runs long enough for the LFU hand to
    # go round many times, with keys read often enough to climb to the cap.
    rng = random.Random(f"ringcache-{policy}")
    clock = FakeClock()
    core = CORES[policy](200, clock)
    model = ModelCore(policy, 200, clock)
    keys = [b"k%02d" % i for i in range(40)]
    for step in range(20_000):
        key = keys[min(int(rng.expovariate(0.1)), len(keys) - 1)]  # a few keys are hot
        action = rng.random()
        if action < 0.5:
            assert core.get(key) == model.get(key)
        elif action < 0.9:
            value = b"%d" % step * rng.randrange(1, 8)
            ttl = rng.choice(TTLS)
            same_outcome(lambda: core.set(key, value, ttl), lambda: model.set(key, value, ttl))
        elif action < 0.95:
            assert core.delete(key) == model.delete(key)
        elif action < 0.98:
            ttl = rng.choice(TTLS)
            assert core.touch(key, ttl) == model.touch(key, ttl)
        else:
            clock.now += rng.choice([0.5, 1, 3])
        assert_same_state(core, model)
    assert core.evictions > 1000 and core.expirations > 100
