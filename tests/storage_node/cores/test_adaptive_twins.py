"""The compiled adaptive core against its pure-Python twin: the same random operations, the
same answers, and the same state after every one (tests/storage_node/cores/adaptive_state.py: every entry's
state, value and deadline, both queues' order with their stale places, the small queue's
target, the ghosts' table and counts, the expiry bands). Then what only the compiled twin
has: its own memory upkeep, its refusal of reentrant calls, and bytes-only keys and values.
"""

from __future__ import annotations

import gc
import hashlib
import random
import tracemalloc
import weakref

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from storage_node.cores.adaptive import AdaptiveCore as PureAdaptiveCore
from tests.fakes import FakeClock
from tests.storage_node.cores.adaptive_state import TWINS, compiled_class, observable, snapshot, twin
from tests.storage_node.cores.core_contract import walk_all


def stable_hash(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True)


def wide_hash(key: bytes) -> int:
    """Wider than 64 bits and negative: the ghosts read the low 64 bits, as Python's & does."""
    return -(stable_hash(key) << 80 | 12345)


HASHES = {"builtin": hash, "blake2b": stable_hash, "wide": wide_hash}


def twins(budget: int, clock, overhead: int = 0, hash=hash):
    """(pure, compiled) on one clock; the pure one charges the compiled one's TTL_OVERHEAD,
    so that with an overhead their byte counts can be compared too."""
    compiled = compiled_class()

    class Pure(PureAdaptiveCore):
        TTL_OVERHEAD = compiled.TTL_OVERHEAD

    return (Pure(budget, clock, entry_overhead=overhead, hash=hash),
            compiled(budget, clock, entry_overhead=overhead, hash=hash))


def outcome(call):
    """What a call returned ("nan" for NaN), or the type and text of what it raised."""
    try:
        result = call()
        return "ok", "nan" if result != result else result
    except (ValueError, OverflowError) as exc:
        return type(exc), str(exc)


def same_outcome(pure, compiled, call):
    expected, got = outcome(lambda: call(pure)), outcome(lambda: call(compiled))
    assert got == expected
    if isinstance(expected[1], bytes):
        assert got[1] is expected[1]  # the stored value itself, never a copy


def assert_same_state(pure, compiled):
    assert observable(compiled) == observable(pure)
    assert snapshot(compiled) == snapshot(pure)


KEYS = [b"", b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i"]
TTLS = [None, 0, 1, 2.5, 10, -1, 0.5, 3, float("inf"), float("nan")]


class TwinsAgree(RuleBasedStateMachine):
    """Random gets, sets (sizes 0 to 40 bytes, ttls among them), deletes, touches, ttl_left,
    clock advances and clears, on a budget of a few entries so that evictions, ghosts and
    expiry all happen."""

    @initialize(budget=st.sampled_from([40, 120, 400]), overhead=st.sampled_from([0, 23]),
                hashing=st.sampled_from(sorted(HASHES)), int_clock=st.booleans())
    def start(self, budget, overhead, hashing, int_clock):
        self.clock = FakeClock(1000 if int_clock else 1000.0)
        self.int_clock = int_clock
        self.pure, self.compiled = twins(budget + 10 * overhead, self.clock, overhead, HASHES[hashing])
        self.writes = 0

    @rule(key=st.sampled_from(KEYS))
    def get(self, key):
        same_outcome(self.pure, self.compiled, lambda core: core.get(key))

    @rule(key=st.sampled_from(KEYS), size=st.integers(0, 40), ttl=st.sampled_from(TTLS))
    def set(self, key, size, ttl):
        self.writes += 1
        value = bytes([self.writes % 256]) * size  # one object, given to both
        same_outcome(self.pure, self.compiled, lambda core: core.set(key, value, ttl))

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key):
        same_outcome(self.pure, self.compiled, lambda core: core.delete(key))

    @rule(key=st.sampled_from(KEYS), ttl=st.sampled_from([None, 0, 2, 5, -1]))
    def touch(self, key, ttl):
        same_outcome(self.pure, self.compiled, lambda core: core.touch(key, ttl))

    @rule(key=st.sampled_from(KEYS))
    def ttl_left(self, key):
        same_outcome(self.pure, self.compiled, lambda core: core.ttl_left(key))

    @rule(seconds=st.sampled_from([0.5, 1, 2.5, 10]))
    def advance(self, seconds):
        self.clock.now += int(seconds) or 1 if self.int_clock else seconds

    @rule()
    def clear(self):
        self.pure.clear()
        self.compiled.clear()

    @rule(chunk=st.sampled_from([1, 3, 100]))
    def walk(self, chunk):
        assert walk_all(self.compiled, chunk) == walk_all(self.pure, chunk)

    @rule(key=st.sampled_from(KEYS), size=st.integers(0, 40), ttl=st.sampled_from(TTLS),
          rank=st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, -1]))
    def restore(self, key, size, ttl, rank):
        self.writes += 1
        value = bytes([self.writes % 256]) * size
        same_outcome(self.pure, self.compiled, lambda core: core.restore(key, value, ttl, rank))

    @invariant()
    def same_state(self):
        assert_same_state(self.pure, self.compiled)


TestTwinsAgree = settings(max_examples=300, stateful_step_count=60, deadline=None)(TwinsAgree).TestCase


def random_use(pure, compiled, clock, rng, names, steps, compare_every):
    """Skewed random operations on both twins, answers compared at every step and the
    whole state every ``compare_every`` steps."""
    for step in range(steps):
        key = names[min(int(rng.expovariate(8 / len(names))), len(names) - 1)]
        action = rng.random()
        if action < 0.5:
            same_outcome(pure, compiled, lambda core: core.get(key))
        elif action < 0.88:
            value = b"%d" % step * rng.randrange(1, 12)
            ttl = rng.choice([None, None, None, 0, 1, 3, 20, -1])
            same_outcome(pure, compiled, lambda core: core.set(key, value, ttl))
        elif action < 0.94:
            same_outcome(pure, compiled, lambda core: core.delete(key))
        elif action < 0.97:
            ttl = rng.choice([None, 2, 5])
            same_outcome(pure, compiled, lambda core: core.touch(key, ttl))
        elif action < 0.98:
            same_outcome(pure, compiled, lambda core: core.ttl_left(key))
        elif action < 0.985:
            value = b"r%d" % step
            rank = rng.choice([None, 0, 1, 2, 3, 4, 5])
            same_outcome(pure, compiled, lambda core: core.restore(key, value, 5, rank))
        elif action < 0.986:
            assert walk_all(compiled, 50) == walk_all(pure, 50)
        else:
            clock.now += rng.choice([0.5, 1, 3])
        if step % compare_every == 0:
            assert_same_state(pure, compiled)
    assert_same_state(pure, compiled)


@pytest.mark.parametrize("hashing, overhead", [("builtin", 0), ("blake2b", 23)])
def test_a_long_random_run_keeps_the_twins_in_step(hashing, overhead):
    # Long enough for many ghost epochs and upkeeps, a ghost table that grows as the
    # cache fills, and keys that come back after their eviction.
    rng = random.Random(f"twins-{hashing}")
    clock = FakeClock()
    pure, compiled = twins(6_000 + 400 * overhead, clock, overhead, HASHES[hashing])
    names = [b"key:%04d" % i for i in range(3_000)]
    random_use(pure, compiled, clock, rng, names, 40_000, compare_every=97)
    assert compiled.evictions > 2_000 and compiled.expirations > 1_000


MANY_KEYS = [b"%08d" % i for i in range(20_000)]
BIG_KEYS = [b"big%05d" % i for i in range(4_000)]


def deletes_then_large_writes(*cores):
    """20,000 entries, all but 1,000 deleted, then large values: a few fill the budget. The
    deleted keys' places stay in the queue (as the pure core's keys stay in its deques)
    until they reach its head."""
    keys = MANY_KEYS
    small, large = b"v" * 52, b"w" * 2_000  # made once: what is measured is the core's
    for key in keys:
        for core in cores:
            core.set(key, small)
    yield
    for key in keys[1_000:]:
        assert {core.delete(key) for core in cores} == {True}
    for key in BIG_KEYS:
        for core in cores:
            core.set(key, large)
    yield


def test_deletes_then_evictions_keep_the_twins_in_step():
    pure, compiled = twins(20_000 * 60, FakeClock())
    for _ in deletes_then_large_writes(pure, compiled):
        assert_same_state(pure, compiled)
    assert len(compiled) < 1_000 and compiled.evictions > 3_000


@pytest.mark.parametrize("name", TWINS)
def test_a_walk_survives_the_core_compacting_under_it(name):
    # The compiled twin moves its entries down when deletes emptied most of its table:
    # a walk in progress must follow them to their new places.
    core = twin(name)(20_000 * 60, FakeClock())
    small, large = b"v" * 52, b"w" * 2_000
    for key in MANY_KEYS:
        core.set(key, small)
    kept = MANY_KEYS[-1_000:]
    for key in kept:
        core.get(key)  # read: promoted at the small queue's head, not evicted
    cursor = core.walk()
    got = cursor.take(500)
    for key in MANY_KEYS[:-1_000]:
        core.delete(key)
    for key in BIG_KEYS[:800]:  # past the budget: evictions, upkeep, compaction
        core.set(key, large)
    while batch := cursor.take(700):
        got += batch
    walked = {key: value for key, value, _, _ in got}
    assert set(kept) <= set(walked)
    assert all(walked[key] == small for key in kept)
    deleted_after_the_start = set(MANY_KEYS[:-1_000]) - {key for key, *_ in got[:500]}
    assert not deleted_after_the_start & set(walked)
    assert len(got) == 500 + 1_000


def test_the_compiled_twin_gives_back_what_deletes_emptied():
    tracemalloc.start()
    try:
        core = compiled_class()(20_000 * 60, FakeClock())
        steps = deletes_then_large_writes(core)
        next(steps)
        full = tracemalloc.get_traced_memory()[0]
        next(steps, None)
        left = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Its entries, index and queues were sized for 20,000; now for under 1,000.
    assert left < full / 4


def test_a_clock_that_calls_the_core_is_refused():
    core = compiled_class()(1000, lambda: core.get(b"k") or 1000.0)
    with pytest.raises(RuntimeError, match="called from its own clock or hash"):
        core.set(b"k", b"v", ttl=5)
    core.set(b"k", b"v")  # the core is usable again, with what it held
    assert core.get(b"k") == b"v"


def test_a_hash_that_calls_the_core_is_refused():
    core = compiled_class()(20, FakeClock(), hash=lambda key: core.delete(key) or 7)
    with pytest.raises(RuntimeError, match="called from its own clock or hash"):
        core.set(b"k", b"v")
    assert (len(core), core.nbytes) == (0, 0)


@pytest.mark.parametrize("key, value", [("str", b"v"), (b"k", "str"), (b"k", bytearray(b"v")),
                                        (memoryview(b"k"), b"v")])
def test_keys_and_values_are_bytes(key, value):
    core = compiled_class()(1000, FakeClock())
    with pytest.raises(TypeError, match="bytes"):
        core.set(key, value)
    if not isinstance(key, bytes):
        for call in (core.get, core.delete, core.ttl_left):
            with pytest.raises(TypeError, match="bytes"):
                call(key)
    assert (len(core), core.nbytes) == (0, 0)


def test_a_core_in_a_cycle_with_its_clock_is_collected():
    class Clock:
        def __call__(self):
            return 1000.0

    clock = Clock()
    clock.core = compiled_class()(1000, clock)
    clock.core.set(b"k", b"v", ttl=5)
    gone = weakref.ref(clock)
    del clock
    gc.collect()
    assert gone() is None


def test_the_counters_and_limits_are_read_only():
    core = compiled_class()(1000, FakeClock(), entry_overhead=5)
    assert (core.max_bytes, core.entry_overhead, core.nbytes) == (1000, 5, 0)
    for name in ("max_bytes", "entry_overhead", "nbytes", "evictions", "expirations"):
        with pytest.raises(AttributeError):
            setattr(core, name, 1)
