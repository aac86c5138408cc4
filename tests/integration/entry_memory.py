"""What an entry of a core costs in a process's RSS beyond its key and value bytes.

Run as ``python -m tests.integration.entry_memory POLICY TTL`` (TTL 0: none): it fills a fresh core of
that policy with 100,000 node-like entries (8-byte keys, a 1-byte value behind the node's
flag byte), writes twice as many more so that evictions churn its tables, and prints
(RSS growth) / entries - (key + value bytes). tests/integration/test_entry_overhead.py runs it in a
process of its own, so nothing else in the RSS moves.
"""

from __future__ import annotations

import gc
import os
import sys

from shared import entry
from storage_node.cores import CORES

ENTRIES = 100_000
PAYLOAD = 8 + 2


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(policy: str, ttl: float | None) -> float:
    core = CORES[policy](ENTRIES * PAYLOAD, lambda: 1000.0)  # no overhead: ENTRIES fit
    before = rss()
    for i in range(3 * ENTRIES):
        core.set(b"%08d" % i, entry.pack(b"x"), ttl)
    gc.collect()
    assert len(core) == ENTRIES
    return (rss() - before) / ENTRIES - PAYLOAD


if __name__ == "__main__":
    print(f"{main(sys.argv[1], float(sys.argv[2]) or None):.0f}")
