"""Hit ratios of the built-in cores against Belady's OPT and published policies, with each
core's speed and memory per entry.

Usage: .venv/bin/python bench/eviction.py            (5 to 7 minutes on 2 CPUs)
       .venv/bin/python bench/eviction.py --quick    (about 1 minute: shorter traces)
       .venv/bin/python bench/eviction.py --full     (the whole 5M-request orm-night trace)

Every trace (bench/eviction_traces.py: the real ones in bench/traces and seeded
synthetic ones) is replayed as a read-through cache sees it: a get, and on a miss a set,
at cache sizes of 0.1%, 1% and 10% of the trace's working set (its keys; for the sized
trace, the bytes of its keys). Through the same replay go Belady's OPT and reference
implementations of LRU, LFU, SIEVE, S3-FIFO and W-TinyLFU (bench/eviction_refs.py,
bench/belady.py). A core charges key + value, so an object of the unsized traces is a
9-byte key and a 91-byte value, and the budget is 100 bytes an object.

Printed per trace: object hit ratios (%), and byte hit ratios for the sized trace; the
default core's share of OPT and its distance to the best reference policy. Then per
core: the replay's requests per second; gets per second (the trace replayed again as
gets only, on the cache the replay left) and sets per second (fresh keys, each one
evicting), at the 1% size; and the bytes per entry its structures hold after the
replay at the 10% size (tracemalloc, beyond the key and value objects, which are made
before tracing starts). Rates are per CPU second of the worker process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import belady, eviction_refs, eviction_traces  # noqa: E402
from storage_node.cores import CORES  # noqa: E402
from storage_node.node import DEFAULT_POLICY  # noqa: E402

SIZES = (0.001, 0.01, 0.1)
OBJECT_BYTES = 100  # key + value of an object of an unsized trace
KEY_FORMAT = b"%09d"
REFERENCES = ["LRU", "LFU", "SIEVE", "S3-FIFO", "W-TinyLFU 1%", "W-TinyLFU"]


def load_traces(quick: bool, full: bool) -> list[eviction_traces.Trace]:
    requests = 100_000 if quick else 500_000
    orm = None if full else (200_000 if quick else 1_000_000)
    return [eviction_traces.real("orm-night", limit=orm), eviction_traces.real("web07"),
            eviction_traces.real("web12"), *eviction_traces.synthetic(requests)]


def capacity(trace: eviction_traces.Trace, share: float) -> int:
    """The cache size in the trace's units: objects, or bytes for a sized trace."""
    return max(1, round(share * (trace.working_set_bytes if trace.sizes else trace.universe)))


def references(trace, units: int) -> list:
    mean = trace.working_set_bytes / trace.distinct if trace.sizes else 1
    return [eviction_refs.LRU(units), eviction_refs.LFU(units), eviction_refs.SIEVE(units),
            eviction_refs.S3FIFO(units), eviction_refs.WTinyLFU(units, mean, climb=False),
            eviction_refs.WTinyLFU(units, mean)]


class CoreReplay:
    """A core fed the trace's keys as bytes and values that make each object its size."""

    def __init__(self, trace):
        self.trace = trace
        self.keys = [KEY_FORMAT % i for i in range(trace.distinct)]
        shared: dict[int, bytes] = {}  # one value object per size: values cost no memory
        sizes = trace.sizes or [OBJECT_BYTES] * trace.distinct
        self.values = [shared.setdefault(s, b"v" * (s - len(KEY_FORMAT % 0))) for s in sizes]

    def new_core(self, core_class, units: int):
        return core_class(units * (1 if self.trace.sizes else OBJECT_BYTES), time.monotonic)

    def run(self, core, requests=None) -> tuple[int, int]:
        """(hits, hit bytes) of a read-through replay."""
        get, set_, keys, values = core.get, core.set, self.keys, self.values
        hits = hit_bytes = 0
        for i in self.trace.keys if requests is None else requests:
            key = keys[i]
            if get(key) is None:
                try:
                    set_(key, values[i])
                except ValueError:  # larger than the whole cache: refused, like the references
                    pass
            else:
                hits += 1
                hit_bytes += len(values[i])
        return hits, hit_bytes


def hit_ratios(job) -> tuple[str, float, dict]:
    """Object and byte hit ratios (%) of OPT, the references and the cores: name -> (obj, byte)."""
    trace, share = job
    units = capacity(trace, share)
    sizes = trace.sizes
    weight = sizes if sizes else [1] * trace.distinct
    total = sum(weight[k] for k in trace.keys)
    out = {}

    def ratios(hit_flags) -> tuple[float, float]:
        hits = sum(hit_flags)
        hit_bytes = sum(weight[k] for k, hit in zip(trace.keys, hit_flags) if hit)
        return 100 * hits / len(trace.keys), 100 * hit_bytes / total

    nexts = belady.next_uses(trace.keys)
    out["OPT"] = ratios(belady.belady(trace.keys, sizes, units, nexts))
    if sizes:  # two estimates, the better of each ratio
        other = ratios(belady.belady_size(trace.keys, sizes, units, nexts))
        out["OPT"] = (max(out["OPT"][0], other[0]), max(out["OPT"][1], other[1]))
    for policy in references(trace, units):
        flags = [policy.access(k, weight[k]) for k in trace.keys]
        out[policy.name] = ratios(flags)
    replay = CoreReplay(trace)
    for name, core_class in CORES.items():
        hits, hit_bytes = replay.run(replay.new_core(core_class, units))
        value_bytes = sum(len(replay.values[k]) for k in trace.keys)
        out[name] = (100 * hits / len(trace.keys), 100 * hit_bytes / value_bytes)
    return trace.name, share, out


def speed(job) -> tuple[str, str, dict]:
    """Requests/s of the replay, then gets/s and evicting sets/s on the cache it left."""
    trace, name = job
    replay = CoreReplay(trace)
    core = replay.new_core(CORES[name], capacity(trace, 0.01))
    start = time.process_time()
    replay.run(core)
    replay_rate = len(trace.keys) / (time.process_time() - start)
    get, keys = core.get, replay.keys
    start = time.process_time()
    for i in trace.keys:
        get(keys[i])
    get_rate = len(trace.keys) / (time.process_time() - start)
    fresh = [b"fresh:%08d" % i for i in range(min(len(trace.keys), 200_000))]
    value, set_ = replay.values[0], core.set
    before = core.evictions
    start = time.process_time()
    for key in fresh:
        set_(key, value)
    set_rate = len(fresh) / (time.process_time() - start)
    assert core.evictions > before
    return trace.name, name, {"replay": replay_rate, "get": get_rate, "set": set_rate}


def memory(job) -> tuple[str, str, float]:
    """Bytes per entry of the core's structures after a replay at the 10% size."""
    trace, name = job
    replay = CoreReplay(trace)
    requests = trace.keys[:300_000]  # plenty of churn for a cache a tenth of the keys
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        core = replay.new_core(CORES[name], capacity(trace, 0.1))
        replay.run(core, requests)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return trace.name, name, used / len(core)


def percent(value: float) -> str:
    return f"{value:.1f}"


def hit_table(trace, results: dict, column: int) -> list[str]:
    names = ["OPT", *REFERENCES, *CORES]
    header = ["cache", *names, f"{DEFAULT_POLICY}/OPT", f"{DEFAULT_POLICY} − best ref"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for share in SIZES:
        row = results[trace.name, share]
        mine = row[DEFAULT_POLICY][column]
        best = max(row[name][column] for name in REFERENCES)
        cells = [f"{100 * share:g}%", *(percent(row[n][column]) for n in names),
                 f"{mine / row['OPT'][column]:.2f}" if row["OPT"][column] else "-",
                 f"{mine - best:+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # The cores' ghosts pick slots by hash(key), which Python seeds anew per process:
        # one seed makes every run replay to the same hit.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter traces (about a minute)")
    parser.add_argument("--full", action="store_true", help="all 5M requests of orm-night")
    parser.add_argument("--traces", help="only these traces, comma-separated")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--no-speed", action="store_true", help="hit ratios only")
    args = parser.parse_args()
    started = time.monotonic()
    traces = load_traces(args.quick, args.full)
    if args.traces:
        traces = [t for t in traces if t.name in args.traces.split(",")]
    results = {}
    with Pool(args.jobs) as pool:
        for name, share, out in pool.imap(hit_ratios, [(t, s) for t in traces for s in SIZES]):
            results[name, share] = out
            print(f"... {name} at {100 * share:g}%", file=sys.stderr, flush=True)
        rates, sizes = {}, {}
        if not args.no_speed:
            for trace_name, name, out in pool.imap(speed, [(t, n) for t in traces for n in CORES]):
                rates[trace_name, name] = out
            for trace_name, name, out in pool.imap(memory, [(t, n) for t in traces for n in CORES]):
                sizes[trace_name, name] = out

    print(f"Object hit ratios (%), read-through replay; default core: {DEFAULT_POLICY}\n")
    for trace in traces:
        print(f"**{trace.name}**: {trace.about}; {len(trace.keys):,} requests, "
              f"{trace.distinct:,} keys requested")
        print("\n".join(hit_table(trace, results, 0)))
        if trace.sizes:
            print(f"\nByte hit ratios (%), {trace.name}")
            print("\n".join(hit_table(trace, results, 1)))
        print()
    if rates:
        print("Speed at the 1% size (per CPU second) and bytes per entry after a replay at 10%\n")
        print("| trace | " + " | ".join(f"{n} replay/s, get/s, set/s, B/entry" for n in CORES) + " |")
        print("|---|" + "---|" * len(CORES))
        for trace in traces:
            cells = []
            for name in CORES:
                r = rates[trace.name, name]
                cells.append(f"{r['replay'] / 1e6:.2f}M, {r['get'] / 1e6:.2f}M, {r['set'] / 1e6:.2f}M, "
                             f"{sizes[trace.name, name]:.0f}")
            print(f"| {trace.name} | " + " | ".join(cells) + " |")
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
