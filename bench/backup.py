#!/usr/bin/env python3
"""`ringcache backup` -> flush_all -> `ringcache restore` of a million entries through a
real router and two nodes: how long each takes, whether every entry comes back, and how
much the router's memory grows while it streams them.

    .venv/bin/python bench/backup.py                  # 1,000,000 entries of 100 B
    .venv/bin/python bench/backup.py --entries 100000

The cluster is filled by restoring a generated file (as fast a fill as there is), then
backed up, flushed, restored from that backup, and checked key by key with multi-gets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.cluster import transfer  # noqa: E402
from shared import entry  # noqa: E402
from shared.snapshot import GroupHeader, Header, entries_payload, block, ENTRIES  # noqa: E402
from tests.helpers import RINGCACHE, rss_bytes  # noqa: E402
from tests.integration.cluster import Cluster  # noqa: E402

GROUPS = """
groups:
  scores: {}
  sessions: {max_bytes: 1GiB}
"""
KEY = b"key:%012d"  # 16 bytes: with an 84-byte value, 100 bytes an entry


def write_file(path: Path, n: int, value_size: int) -> None:
    header = Header(node="bench", created_at=time.time(), kind="backup",
                    groups=[GroupHeader("sessions", "adaptive", 1 << 30)])
    value = b"v" * value_size
    blocks = 0
    with open(path, "wb") as f:
        f.write(transfer.file_start(header))
        for start in range(0, n, 4096):
            keys = [KEY % i for i in range(start, min(start + 4096, n))]
            stored = [entry.pack(value, 0, i + 1) for i in range(len(keys))]
            f.write(block(ENTRIES, entries_payload(0, keys, stored, bytearray(len(keys)), [])))
            blocks += 1
        f.write(transfer.file_end([n], blocks))


def timed(label: str, argv: list[str], router_pid: int) -> tuple[float, int]:
    """Run a CLI command; its seconds and the router's RSS growth at its peak meanwhile."""
    base = rss_bytes(router_pid)
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.05):
            peak[0] = max(peak[0], rss_bytes(router_pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    stop.set()
    watcher.join()
    if done.returncode != 0:
        raise SystemExit(f"{label} failed: {done.stderr}")
    print(f"{label}: {seconds:.1f} s, router RSS {base / 2**20:.0f} MiB, +{(peak[0] - base) / 2**20:.0f} "
          f"MiB at most; {done.stderr.strip()}")
    return seconds, peak[0] - base


def count_back(cluster, n: int, value_size: int) -> int:
    mc = cluster.memcache()
    expected, back = b"v" * value_size, 0
    for start in range(0, n, 200):
        names = [f"sessions:{(KEY % i).decode()}" for i in range(start, min(start + 200, n))]
        got = mc.get_many(names)
        back += sum(1 for name in names if got.get(name) == expected)
    return back


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100 - len(KEY % 0))
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min); {os.cpu_count()} CPUs")
    directory = Path(tempfile.mkdtemp(prefix="ringcache-backup-"))
    cluster = Cluster(directory, nodes=2, groups=GROUPS,
                      node_args=("--max-memory", "2GiB")).start()
    try:
        base = f"http://127.0.0.1:{cluster.http_port}"
        generated, backup = directory / "generated.rcs", directory / "backup.rcs"
        write_file(generated, args.entries, args.value_size)
        pid = cluster.router.pid
        timed("fill (restore of a generated file)",
              [*RINGCACHE, "restore", str(generated), "--router", base], pid)
        backup_s, backup_mem = timed("backup", [*RINGCACHE, "backup", str(backup), "--router", base], pid)
        cluster.memcache().flush_all()
        assert count_back(cluster, min(args.entries, 1000), args.value_size) == 0
        restore_s, restore_mem = timed("restore", [*RINGCACHE, "restore", str(backup),
                                                    "--router", base], pid)
        back = count_back(cluster, args.entries, args.value_size)
        print(f"back after backup -> flush_all -> restore: {back:,} of {args.entries:,} "
              f"({back / args.entries:.2%}); file {backup.stat().st_size / 1e6:.0f} MB")
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
