"""Speed and memory of the built-in eviction cores, in process, against their goals.

Usage: python bench/cores.py      (about 30 s)

The table, per core, for 100k entries of 12-byte keys and 100-byte values:
- get hits per second on hot entries (read 20 times before) and on entries read for
  the first time (for LFU each such hit moves the entry up a level: its slowest path);
- sets per second when the cache is full and every set evicts one entry;
- bytes per entry taken by the core's own structures (tracemalloc; keys and values
  are made before tracing starts) after writing the entries into an empty core,
  without and with a ttl.
Rates are per second of this process's CPU time, so other load on the machine skews
them less than wall time would. Keys are visited in the order they were written, which
is kind to CPU caches; the lines below the table repeat the hot gets in random order,
next to a bare dict.get as the machine's ceiling, and show what a long-running cache
pays in memory: dicts that resize while full re-grow to 3x their entries, and an LFU
entry read once costs a ``_freq`` dict entry.

``adaptive`` is the compiled core when it is built (storage_node/cores/_adaptive.c);
``adaptive-py``, its pure-Python twin, runs beside it. The last lines hold both to the
default core's goals (issue 14): 2M hot gets/s, 1M evicting sets/s, and at most 120
bytes of structure per entry after the churn.
"""

from __future__ import annotations

import random
import time
import tracemalloc

from storage_node.cores import CORES, PureAdaptiveCore

ENTRIES = 100_000
VALUE_SIZE = 100
GOAL_GET = 1_000_000
GOAL_SET = 300_000
GOAL_BYTES = 150
# The default core's own goals (issue 14).
DEFAULT_GOAL_GET = 2_000_000
DEFAULT_GOAL_SET = 1_000_000
DEFAULT_GOAL_CHURN_BYTES = 120

KEYS = [b"key:%08d" % i for i in range(2 * ENTRIES)]
VALUES = [b"%0*d" % (VALUE_SIZE, i) for i in range(2 * ENTRIES)]
ENTRY_SIZE = len(KEYS[0]) + len(VALUES[0])
IN_ORDER = KEYS[:ENTRIES]
SHUFFLED = random.Random(0).sample(IN_ORDER, ENTRIES)


def cpu_seconds(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def filled(core_class):
    core = core_class(ENTRIES * ENTRY_SIZE, time.monotonic)
    for key, value in zip(IN_ORDER, VALUES):
        core.set(key, value)
    return core


def read_all(get, keys) -> None:
    for key in keys:
        get(key)


def hot_get_rate(core_class, keys) -> float:
    core = filled(core_class)
    for _ in range(20):  # LFU: every entry at the cap, where a hit only refreshes recency
        read_all(core.get, IN_ORDER)
    best = min(cpu_seconds(lambda: read_all(core.get, keys)) for _ in range(5))
    assert core.get(IN_ORDER[-1]) == VALUES[ENTRIES - 1]  # the gets were hits
    return ENTRIES / best


def first_get_rate(core_class) -> float:
    cores = [filled(core_class) for _ in range(3)]
    return ENTRIES / min(cpu_seconds(lambda: read_all(core.get, IN_ORDER)) for core in cores)


def dict_get_rate(keys) -> float:
    table = dict(zip(IN_ORDER, VALUES))
    return ENTRIES / min(cpu_seconds(lambda: read_all(table.get, keys)) for _ in range(5))


def write_fresh(set_) -> None:
    for key, value in zip(KEYS[ENTRIES:], VALUES[ENTRIES:]):
        set_(key, value)


def set_evict_rate(core_class) -> float:
    cores = [filled(core_class) for _ in range(3)]
    best = min(cpu_seconds(lambda: write_fresh(core.set)) for core in cores)
    assert all(core.evictions == ENTRIES for core in cores)  # each set evicted one entry
    return ENTRIES / best


def bytes_per_entry(core_class, ttl=None, churn=False, read_once=False) -> float:
    core = core_class(ENTRIES * ENTRY_SIZE, time.monotonic)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for key, value in zip(IN_ORDER, VALUES):
        core.set(key, value, ttl)
    if churn:  # enough evicting sets to make the dicts resize while full
        for key, value in zip(KEYS[ENTRIES:], VALUES[ENTRIES:]):
            core.set(key, value, ttl)
    if read_once:
        read_all(core.get, IN_ORDER)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(core) == ENTRIES
    return used / ENTRIES


def measured_cores() -> dict[str, type]:
    """CORES, with the adaptive core's pure twin beside the compiled one."""
    cores = {}
    for name, core_class in CORES.items():
        cores[name] = core_class
        if name == "adaptive" and core_class is not PureAdaptiveCore:
            cores["adaptive-py"] = PureAdaptiveCore
    return cores


def verdict(goals: dict[str, bool]) -> str:
    return ", ".join(f"{goal} {'met' if met else 'MISSED'}" for goal, met in goals.items())


def main() -> None:
    cores = measured_cores()
    print(f"{ENTRIES} entries of {ENTRY_SIZE} bytes (key {len(KEYS[0])}, value {VALUE_SIZE})")
    print(f"{'core':<11} {'get hot/s':>10} {'get 1st/s':>10} {'set+evict/s':>12} {'B/entry':>8}"
          f" {'B/entry ttl':>12}  goals")
    speeds, churned = {}, {}
    for name, core_class in cores.items():
        hot, first = hot_get_rate(core_class, IN_ORDER), first_get_rate(core_class)
        set_evict = set_evict_rate(core_class)
        plain, ttl = bytes_per_entry(core_class), bytes_per_entry(core_class, ttl=300)
        goals = {
            f"get>={GOAL_GET / 1e6:g}M": min(hot, first) >= GOAL_GET,
            f"set+evict>={GOAL_SET / 1e6:g}M": set_evict >= GOAL_SET,
            f"B<={GOAL_BYTES}": plain <= GOAL_BYTES,
            f"B(ttl)<={GOAL_BYTES}": ttl <= GOAL_BYTES,
        }
        speeds[name] = hot, set_evict
        print(f"{name:<11} {hot / 1e6:>9.2f}M {first / 1e6:>9.2f}M {set_evict / 1e6:>11.2f}M"
              f" {plain:>8.1f} {ttl:>12.1f}  {verdict(goals)}")

    print("\nnot goals, for sizing a real node:")
    print(f"{'dict':<11} get, random order: {dict_get_rate(SHUFFLED) / 1e6:.2f}M/s (one bare lookup)")
    for name, core_class in cores.items():
        print(f"{name:<11} get hot, random order: {hot_get_rate(core_class, SHUFFLED) / 1e6:.2f}M/s")
    for name, core_class in cores.items():
        churned[name] = bytes_per_entry(core_class, churn=True)
        print(f"{name:<11} after {ENTRIES} more evicting sets: {churned[name]:.1f} B/entry, "
              f"{bytes_per_entry(core_class, ttl=300, churn=True):.1f} with ttl")
    lfu = CORES["lfu"]
    print(f"{'lfu':<11} after one read of each entry: "
          f"{bytes_per_entry(lfu, read_once=True):.1f} B/entry, "
          f"{bytes_per_entry(lfu, ttl=300, read_once=True):.1f} with ttl")

    print("\nthe default core's goals (issue 14):")
    for name in (n for n in cores if n.startswith("adaptive")):
        hot, set_evict = speeds[name]
        print(f"{name:<11} " + verdict({
            f"get hot>={DEFAULT_GOAL_GET / 1e6:g}M": hot >= DEFAULT_GOAL_GET,
            f"set+evict>={DEFAULT_GOAL_SET / 1e6:g}M": set_evict >= DEFAULT_GOAL_SET,
            f"B after churn<={DEFAULT_GOAL_CHURN_BYTES}": churned[name] <= DEFAULT_GOAL_CHURN_BYTES,
        }))


if __name__ == "__main__":
    main()
