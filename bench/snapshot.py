#!/usr/bin/env python3
"""Snapshots of a storage node (`ringcache node --data-dir`): how long one takes to write and
to load, how large the file is, what serving sees while they are written, and the two ways
of writing one while serving, side by side: an incremental walk of the cores (what the
node does) against a forked child (what Redis does).

    .venv/bin/python bench/snapshot.py                      # 1,000,000 entries of 100 B
    .venv/bin/python bench/snapshot.py --entries 200000 --seconds 5 --json /tmp/snap.json

Parts: ``node`` (a real node process: fill, periodic snapshot, SIGTERM, restart, hits, and
get latency with and without snapshots running) and ``fork`` (in this process: the same
walk sliced as the node runs it, against fork + the whole walk in the child).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared import entry  # noqa: E402
from shared import ringcache_pb2 as pb  # noqa: E402
from tests.helpers import (RINGCACHE, NodeConnection, free_port, port_open,  # noqa: E402
                           rss_bytes, start_process, stop_process)

GROUP = "g"
KEY = b"key:%012d"  # 16 bytes


def entry_bytes(args) -> int:
    return args.entries * (len(KEY % 0) + args.value_size)


def fill(conn, args) -> None:
    value = b"v" * args.value_size
    for start in range(0, args.entries, 2000):
        conn.call(*[pb.Request(id=i, op=pb.SET, group=GROUP, key=KEY % i, value=value,
                               ttl=3600 if i % 2 else 0) for i in range(start, min(start + 2000, args.entries))])


def configure(conn) -> None:
    conn.call(pb.Request(id=1, op=pb.CONFIGURE, groups=[
        pb.GroupConfig(name=GROUP, policy="adaptive", max_bytes=3 << 30)]))


def stats(conn) -> pb.NodeStats:
    return conn.call(pb.Request(id=1, op=pb.STATS))[0].stats


def latencies(port: int, n: int, seconds: float, stop_when=None) -> tuple[list[float], int]:
    """Single gets of random keys for ``seconds``, one in flight: each one's latency."""
    conn = NodeConnection(port)
    out, errors, rng = [], 0, random.Random(1)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop_when and stop_when()):
        key = KEY % rng.randrange(n)
        t = time.perf_counter()
        (answer,) = conn.call(pb.Request(id=1, op=pb.GET, group=GROUP, key=key))
        out.append(time.perf_counter() - t)
        errors += answer.status != pb.OK
    conn.close()
    return out, errors


def percentile(values, p) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


def node_part(args, figures: dict) -> None:
    data = Path(tempfile.mkdtemp(prefix="ringcache-snap-"))
    port = free_port()
    flags = ["--max-memory", "4GiB", "--data-dir", str(data / "n"), "--snapshot-every", "0"]
    argv = [*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}"]
    try:
        proc = start_process(argv + flags, lambda: port_open(port), timeout=60)
        conn = NodeConnection(port)
        configure(conn)
        t = time.monotonic()
        fill(conn, args)
        print(f"filled {args.entries:,} entries ({entry_bytes(args) / 1e6:.0f} MB of keys and "
              f"values) in {time.monotonic() - t:.1f} s; node RSS {rss_bytes(proc.pid) / 2**20:.0f} MiB")
        conn.close()
        t = time.monotonic()
        assert stop_process(proc, timeout=120) == 0
        stop = time.monotonic() - t
        size = (data / "n" / "snapshot.rcs").stat().st_size
        t = time.monotonic()
        proc = start_process(argv + flags, lambda: port_open(port), timeout=120)
        up = time.monotonic() - t
        conn = NodeConnection(port)
        s = stats(conn).snapshot
        hits = 0
        for start in range(0, args.entries, 5000):
            (answer,) = conn.call(pb.Request(id=1, op=pb.GET_MANY, group=GROUP, keys=[
                KEY % i for i in range(start, min(start + 5000, args.entries))]))
            hits += sum(1 for v in answer.values if v)
        figures.update(final_snapshot_stop_s=stop, file_bytes=size,
                       file_ratio=size / entry_bytes(args), restart_to_listening_s=up,
                       load_s=s.restore_seconds, restored=s.restored_entries,
                       hit_ratio_after_restart=hits / args.entries)
        print(f"SIGTERM to exit (the final snapshot): {stop:.2f} s; file {size / 1e6:.0f} MB = "
              f"{size / entry_bytes(args):.3f} x the entries' bytes")
        print(f"restart: loaded {s.restored_entries:,} entries in {s.restore_seconds:.2f} s "
              f"({up:.2f} s to listening); {hits / args.entries:.2%} of the keys hit")
        conn.close()
        assert stop_process(proc, timeout=120) == 0
        # Serving: the same node, gets one at a time, without and with snapshots running.
        for label, every in (("no snapshot", "0"), ("snapshots every 1s", "1s")):
            flags[-1] = every
            proc = start_process(argv + flags, lambda: port_open(port), timeout=120)
            conn = NodeConnection(port)
            configure(conn)
            base = rss_bytes(proc.pid)
            peak = [base]
            done = threading.Event()

            def watch():
                while not done.wait(0.05):
                    peak[0] = max(peak[0], rss_bytes(proc.pid))

            watcher = threading.Thread(target=watch)
            watcher.start()
            lat, errors = latencies(port, args.entries, args.seconds)
            done.set()
            watcher.join()
            s = stats(conn).snapshot
            conn.close()
            assert stop_process(proc, timeout=120) == 0
            key = label.split()[0]
            figures[f"{key}_get_p50_ms"] = percentile(lat, 0.5) * 1e3
            figures[f"{key}_get_p99_ms"] = percentile(lat, 0.99) * 1e3
            figures[f"{key}_get_max_ms"] = max(lat) * 1e3
            figures[f"{key}_errors"] = errors
            figures[f"{key}_extra_rss_mib"] = (peak[0] - base) / 2**20
            if every != "0":
                figures.update(snapshots_written=s.written, snapshot_s=s.last_seconds,
                               snapshot_failures=s.failures)
            print(f"{label:>20}: {len(lat):,} gets, p50 {percentile(lat, 0.5) * 1e3:.2f} ms, "
                  f"p99 {percentile(lat, 0.99) * 1e3:.2f} ms, max {max(lat) * 1e3:.1f} ms, "
                  f"{errors} errors, RSS +{(peak[0] - base) / 2**20:.0f} MiB at most"
                  + (f"; {s.written} snapshots written, the last in {s.last_seconds:.2f} s"
                     if every != "0" else ""))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def smaps(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def fork_part(args, figures: dict) -> None:
    """The two ways side by side on one filled node, in this process."""
    from storage_node.groups import GroupSpec
    from storage_node.node import Node
    from storage_node.snapshot.files import SnapshotFile
    from storage_node.snapshot.service import TURN
    from storage_node.snapshot.writer import SnapshotWalk

    node = Node(4 << 30)
    node.configure([GroupSpec(GROUP, "adaptive", 3 << 30)])
    core = node.groups.get(GROUP).core
    value = b"v" * args.value_size
    keys = [KEY % i for i in range(args.entries)]
    for i, key in enumerate(keys):
        core.set(key, entry.pack(value, 0, i + 1), 3600 if i % 2 else None)
    directory = Path(tempfile.mkdtemp(prefix="ringcache-fork-"))
    rng = random.Random(2)
    try:
        # The incremental walk, as the node runs it: TURN seconds of walking per turn, and
        # between turns the gets a turn of serving would do (here 200).
        # The turn's own CPU time tells what the walk costs; its wall time adds what the
        # scheduler took on a shared machine.
        before = rss_bytes(os.getpid())
        peak, turns, longest, longest_cpu = before, 0, 0.0, 0.0
        walk = SnapshotWalk.of(list(node.groups), "bench", time.time, time.monotonic)
        file = SnapshotFile(directory)
        file.write(walk.header_block())
        started = time.perf_counter()
        while not walk.done:
            t, cpu = time.perf_counter(), time.thread_time()
            for block in walk.step(TURN):
                file.write(block)
            longest = max(longest, time.perf_counter() - t)
            longest_cpu = max(longest_cpu, time.thread_time() - cpu)
            turns += 1
            for _ in range(200):
                core.get(keys[rng.randrange(len(keys))])
            peak = max(peak, rss_bytes(os.getpid()))
        file.write(walk.trailer_block(0))
        file.commit()
        total = time.perf_counter() - started
        figures.update(walk_total_s=total, walk_longest_turn_ms=longest * 1e3, walk_turns=turns,
                       walk_longest_turn_cpu_ms=longest_cpu * 1e3,
                       walk_extra_rss_mib=(peak - before) / 2**20)
        print(f"incremental walk: {total:.2f} s in {turns:,} turns, the longest "
              f"{longest * 1e3:.1f} ms ({longest_cpu * 1e3:.1f} ms of CPU, the first: its copy "
              f"of the order); RSS +{(peak - before) / 2**20:.0f} MiB at most")

        # A forked child writes the whole walk; the parent serves gets (each read of a
        # value touches its object's reference count, so its page is copied).
        before = smaps(os.getpid(), "Pss")
        read, write = os.pipe()
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: walk, write, report both sides' memory, exit
            os.close(read)
            walk = SnapshotWalk.of(list(node.groups), "bench", time.time, time.monotonic)
            file = SnapshotFile(directory)
            file.write(walk.header_block())
            for block in walk.step():
                file.write(block)
            file.write(walk.trailer_block(0))
            file.commit()
            report = json.dumps({"child_pss": smaps(os.getpid(), "Pss"),
                                 "parent_pss": smaps(os.getppid(), "Pss")})
            os.write(write, report.encode())
            os._exit(0)
        paused = time.perf_counter() - t
        os.close(write)
        gets = 0
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            for _ in range(200):
                core.get(keys[rng.randrange(len(keys))])
            gets += 200
        total = time.perf_counter() - t
        report = json.loads(os.read(read, 4096) or b"{}")
        os.close(read)
        extra = report.get("child_pss", 0) + report.get("parent_pss", 0) - before
        figures.update(fork_pause_ms=paused * 1e3, fork_total_s=total,
                       fork_extra_mib=extra / 2**20, fork_parent_gets=gets)
        print(f"forked child: fork() held the parent {paused * 1e3:.1f} ms; the child took "
              f"{total:.2f} s; both together +{extra / 2**20:.0f} MiB (pages copied on write, "
              f"{gets:,} gets served meanwhile)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100 - len(KEY % 0),
                        help="bytes of each value (default: key + value = 100 B)")
    parser.add_argument("--seconds", type=float, default=10.0, help="of gets, each way")
    parser.add_argument("--part", choices=["node", "fork", "all"], default="all")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min); {os.cpu_count()} CPUs")
    figures: dict = {"entries": args.entries, "entry_bytes": entry_bytes(args)}
    if args.part in ("node", "all"):
        node_part(args, figures)
    if args.part in ("fork", "all"):
        fork_part(args, figures)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
