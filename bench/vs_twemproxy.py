#!/usr/bin/env python3
"""ringcache against twemproxy (nutcracker) + memcached: same keys, same C load generator, runs alternating.

Usage: bench/vs_twemproxy.py [--rounds 3] [--seconds 3] [--nodes 1,3] [--workers 1]
                              [--value-size 100] [--depth 32] [--conns 4] [--floor]
                              [--one-hop] [--epoll-floor] [--lean] [--json FILE]
                              [--zipf S] [--near-cache]

Installs Debian's memcached and nutcracker when missing (as root), compiles
bench/loadgen.c into bench/build/, and for each topology (ringcache router + N nodes
against nutcracker + N memcached) preloads the same keys with 100-byte values and runs
each scenario A B A B ...: memcached GET hits over 4 connections, not pipelined,
pipelined 32 deep, and multi-gets of 10 keys. It prints ops/s (keys fetched per second)
per side, the median of the per-round ratios ours/theirs, the CPU seconds the servers
spend per 100k keys (router + nodes against nutcracker + memcached), and p50/p99 latency
of single gets sent open-loop at a fixed moderate rate, with memcached alone as the floor.
With --zipf S every get draws its keys Zipf(S) (key 0 the hottest) on both sides instead
of in turn; --near-cache turns on ours' near cache of hot keys (near_cache: NEAR_CACHE).
Every server runs on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    RINGCACHE, EpollFloor, LeanCluster, Memcached, OneHop, RingcacheCluster, TwemproxyCluster,
    TwistedFloor, build_loadgen, cpu_seconds, ensure_packages, loadgen, memcached_command, nutcracker_path,
    preload)

# name, load generator options, goal for the ratio ours/theirs (issue 12, on 2 vCPUs)
def scenarios(args) -> list:
    conns, depth = args.conns, args.depth
    return [
        ("serial get", {"conns": conns, "depth": 1, "multi": 1}, 0.6),
        (f"pipelined get x{depth}", {"conns": conns, "depth": depth, "multi": 1}, 1.2),
        ("multi-get 10 keys", {"conns": conns, "depth": 1, "multi": 10}, 0.8),
    ]


CPU_GOAL = 2.0  # ours may spend at most this many times their CPU per key
NEAR_CACHE = "{max_bytes: 16MiB, ttl: 2s}"  # --near-cache
ADDED_P99_GOAL_US = 500.0
LATENCY = {"conns": 4, "depth": 1, "multi": 1}
# Extra sides of the throughput rounds (lean ones in every topology, the rest with 1 node):
# what each is, for the printed line.
EXTRAS = {
    "floor": ("Twisted floor", "byte-copying proxy + memcached"),
    "one-hop": ("one hop", "bench/one_hop.py: router + node in one process"),
    "epoll-floor": ("epoll floor", "bench/epoll_floor.py: byte-copying proxy on bare epoll"),
    "epoll-parse": ("epoll + parse", "bench/epoll_floor.py --parse: get keys hashed too"),
    "lean": ("lean router", "bench/lean_router.py on bare epoll + ringcache nodes"),
    "lean-nodes": ("lean router + lean nodes", "bench/lean_router.py + bench/lean_node.py"),
}


def measure(servers, seconds: float, keys: int, **options) -> dict:
    """One load generator run, with the CPU the servers spent during it."""
    before = cpu_seconds(servers.pids)
    result = loadgen(servers.port, seconds=seconds, keys=keys, **options)
    cpu = cpu_seconds(servers.pids) - before
    if result["errors"] or result["hits"] != result["ops"]:
        raise RuntimeError(f"{servers.name}: not every get was a hit: {result}")
    result["server_cpu_s"] = cpu
    result["cpu_s_per_100k"] = cpu / result["ops"] * 1e5
    return result


def median(runs: list[dict], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def compare(ours, theirs, extras: dict, args) -> dict:
    """Every scenario A B A B ..., then open-loop latency A B C A B C ... (C: memcached alone).

    ``extras`` are more sides in the throughput rounds, named as in EXTRAS: "floor", a
    byte-copying Twisted proxy in front of memcached (the most any Twisted router could
    do here), "one-hop", the one-process prototype, which also joins the latency runs, and
    "epoll-floor"/"epoll-parse", the byte-copying proxy on a bare epoll loop, without and
    with a router's least parsing, and "lean"/"lean-nodes", the data-plane prototype on a
    bare epoll loop in front of ringcache nodes or of nodes on a bare epoll loop too.
    """
    out = {"scenarios": {}, "latency": {}}
    sides = {"ours": ours, "theirs": theirs, **extras}
    size = args.value_size
    for name, options, goal in scenarios(args):
        for side in sides.values():  # warm-up: connections, caches, branch predictors
            loadgen(side.port, seconds=1, keys=args.keys, value_size=size, zipf=args.zipf,
                    **options)
        rounds = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, servers in sides.items():
                rounds[side].append(measure(servers, args.seconds, args.keys,
                                            value_size=size, zipf=args.zipf, **options))
        ratios = [a["ops_per_s"] / b["ops_per_s"] for a, b in zip(rounds["ours"], rounds["theirs"])]
        cpu_ratio = median(rounds["ours"], "cpu_s_per_100k") / median(rounds["theirs"], "cpu_s_per_100k")
        out["scenarios"][name] = {"options": options, "goal": goal, "rounds": rounds,
                                  "ratio": statistics.median(ratios), "cpu_ratio": cpu_ratio}
        show_scenario(name, out["scenarios"][name])
    with Memcached() as alone:
        preload(alone.port, args.keys, size)
        sides = {"ours": ours, "theirs": theirs, "memcached alone": alone}
        if "one-hop" in extras:
            sides["one-hop"] = extras["one-hop"]
        runs = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, servers in sides.items():
                runs[side].append(measure(servers, args.latency_seconds, args.keys,
                                          rate=args.rate, value_size=size, zipf=args.zipf,
                                          **LATENCY))
    for side, side_runs in runs.items():
        out["latency"][side] = {"runs": side_runs, "p50_us": median(side_runs, "p50_us"),
                                "p99_us": median(side_runs, "p99_us"),
                                "cpu_s_per_100k": median(side_runs, "cpu_s_per_100k")}
    out["added_p99_us"] = out["latency"]["ours"]["p99_us"] - out["latency"]["theirs"]["p99_us"]
    if "one-hop" in runs:
        out["one_hop_added_p99_us"] = (out["latency"]["one-hop"]["p99_us"]
                                       - out["latency"]["theirs"]["p99_us"])
    show_latency(out, args.rate)
    return out


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def us_per_key(runs: list[dict]) -> float:
    """Median CPU the servers spent per key fetched, in microseconds."""
    return median(runs, "cpu_s_per_100k") * 10


def show_scenario(name: str, s: dict) -> None:
    ours, theirs = s["rounds"]["ours"], s["rounds"]["theirs"]
    print(f"  {name:<18} {median(ours, 'ops_per_s'):>11,.0f} {median(theirs, 'ops_per_s'):>11,.0f}"
          f" {s['ratio']:>6.2f} {'>=' + format(s['goal'], 'g'):>5} {verdict(s['ratio'] >= s['goal']):<6}"
          f" {us_per_key(ours):>8.1f} {us_per_key(theirs):>8.1f}"
          f" {s['cpu_ratio']:>5.1f}x {verdict(s['cpu_ratio'] <= CPU_GOAL)}", flush=True)
    print("  " + " " * 18 + "   rounds ours/theirs ops/s: " + ", ".join(
        f"{a['ops_per_s']:,.0f}/{b['ops_per_s']:,.0f}" for a, b in zip(ours, theirs)), flush=True)
    for side, (label, what) in EXTRAS.items():
        if side not in s["rounds"]:
            continue
        runs = s["rounds"][side]
        ratio = statistics.median(r["ops_per_s"] / b["ops_per_s"] for r, b in zip(runs, theirs))
        cpu = us_per_key(runs)
        print("  " + " " * 18 + f"   {label}: {median(runs, 'ops_per_s'):,.0f} ops/s, "
              f"ratio {side}/theirs {ratio:.2f}, CPU {cpu:.1f} us/key"
              f" ({cpu / us_per_key(theirs):.1f}x theirs)"
              f" ({what}); rounds: " + ", ".join(f"{r['ops_per_s']:,.0f}" for r in runs),
              flush=True)


def show_latency(out: dict, rate: float) -> None:
    print(f"  open-loop single gets at {rate:g} req/s, 4 connections (median of rounds):")
    for side, lat in out["latency"].items():
        print(f"    {side:<16} p50 {lat['p50_us']:>7.0f} us   p99 {lat['p99_us']:>7.0f} us"
              f"   CPU {lat['cpu_s_per_100k'] * 10:.1f} us/request")
    added = out["added_p99_us"]
    print(f"    added p99 (ours - theirs): {added:.0f} us, goal < {ADDED_P99_GOAL_US:.0f} us:"
          f" {verdict(added < ADDED_P99_GOAL_US)}", flush=True)
    if "one_hop_added_p99_us" in out:
        added = out["one_hop_added_p99_us"]
        print(f"    added p99 (one-hop - theirs): {added:.0f} us:"
              f" {verdict(added < ADDED_P99_GOAL_US)}", flush=True)


def versions() -> dict:
    def first_line(cmd):
        done = subprocess.run(cmd, capture_output=True, text=True)
        return (done.stdout or done.stderr).splitlines()[0]

    return {
        "memcached": first_line(["memcached", "-V"]),
        "nutcracker": first_line([nutcracker_path(), "-V"]).removeprefix("This is "),
        "python": first_line([RINGCACHE[0], "-VV"]),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs per scenario")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one run")
    parser.add_argument("--nodes", default="1,3", help="topologies: storage nodes (and memcacheds)")
    parser.add_argument("--keys", type=int, default=10000, help="keys preloaded and read")
    parser.add_argument("--rate", type=float, default=2000.0, help="open-loop requests per second")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--workers", type=int, default=1,
                        help="router.workers of ours (processes sharing the memcached port)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value")
    parser.add_argument("--depth", type=int, default=32, help="gets in flight, pipelined")
    parser.add_argument("--conns", type=int, default=4, help="load generator connections")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench/twisted_floor.py (1-node topology only)")
    parser.add_argument("--one-hop", action="store_true",
                        help="also measure bench/one_hop.py, router and node in one process "
                             "(1-node topology only)")
    parser.add_argument("--epoll-floor", action="store_true",
                        help="also measure bench/epoll_floor.py, a byte-copying proxy without "
                             "Twisted, plain and with --parse (1-node topology only)")
    parser.add_argument("--lean", action="store_true",
                        help="also measure bench/lean_router.py, a router data plane on a bare "
                             "epoll loop, in front of ringcache nodes and of bench/lean_node.py "
                             "nodes (every topology)")
    parser.add_argument("--zipf", type=float, default=0.0, metavar="S",
                        help="draw each get's keys Zipf(S), key 0 the hottest (default: in turn)")
    parser.add_argument("--near-cache", action="store_true",
                        help=f"ours with the near cache of hot keys on: near_cache: {NEAR_CACHE}")
    args = parser.parse_args()

    ensure_packages()
    build_loadgen()
    info = versions()
    print(f"ringcache vs twemproxy + memcached: {info['memcached']}, {info['nutcracker']}, "
          f"{info['python'].split()[0]} {info['python'].split()[1]}")
    print(f"NOTE: {info['cpus']} CPUs shared by the load generator and every server process; "
          "the client takes CPU from the servers, so absolute figures are low and the ratios "
          "are what to read.")
    print(f"{args.keys} keys of {args.value_size} bytes, {args.conns} connections, "
          f"{args.rounds} rounds of {args.seconds:g}s per side, alternating; ops = keys fetched; "
          f"keys {'drawn Zipf(%g)' % args.zipf if args.zipf else 'in turn'}; near cache "
          f"{'on: ' + NEAR_CACHE if args.near_cache else 'off'}; "
          f"CPU = server processes' user+sys in microseconds per key; ours: {args.workers} "
          f"router worker(s); memcached: {' '.join(memcached_command(0)[-4:])}, else Debian's "
          f"defaults (4 threads)")
    results = {"versions": info, "args": {k: str(v) for k, v in vars(args).items()}, "topologies": {}}
    for n in (int(x) for x in args.nodes.split(",")):
        print(f"\nringcache router + {n} node{'s' * (n > 1)}  vs  nutcracker + {n} memcached")
        print(f"  {'scenario':<18} {'ours ops/s':>11} {'theirs':>11} {'ratio':>6} {'goal':>5} {'':<6}"
              f" {'us/key':>8} {'theirs':>8} {'x':>6} (goal <= {CPU_GOAL:g}x)")
        with ExitStack() as stack:
            ours = stack.enter_context(RingcacheCluster(
                n, workers=args.workers, near_cache=NEAR_CACHE if args.near_cache else None))
            theirs = stack.enter_context(TwemproxyCluster(n))
            extras = {}
            if n == 1 and args.floor:
                extras["floor"] = stack.enter_context(TwistedFloor())
            if n == 1 and args.one_hop:
                extras["one-hop"] = stack.enter_context(OneHop())
            if n == 1 and args.epoll_floor:
                extras["epoll-floor"] = stack.enter_context(EpollFloor())
                extras["epoll-parse"] = stack.enter_context(EpollFloor(parse=True))
            if args.lean:
                extras["lean"] = stack.enter_context(LeanCluster(n))
                extras["lean-nodes"] = stack.enter_context(LeanCluster(n, lean_nodes=True))
            for side in (ours, theirs, *extras.values()):
                preload(side.port, args.keys, args.value_size)
            results["topologies"][f"{n} node(s)"] = compare(ours, theirs, extras, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"\nevery figure: {args.json}")


if __name__ == "__main__":
    main()
