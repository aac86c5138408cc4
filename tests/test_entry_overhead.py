"""Each core's ENTRY_OVERHEAD and TTL_OVERHEAD are what an entry really costs in RSS.

The node charges these per entry (storage_node/node.py), so they decide how far a node's
RSS follows --max-memory: too low and the node outgrows its budget, too high and it
wastes it. Measured in a process of its own (tests/entry_memory.py), after enough writes
to churn the core's tables; a dict's table costs between 1 and 2 times its least as it
grows, so the measure may sit anywhere in that band, and the figure must hold its top.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from storage_node.cores import CORES
from tests.helpers import ROOT


def measured(policy: str, ttl: int) -> int:
    out = subprocess.run([sys.executable, "-m", "tests.entry_memory", policy, str(ttl)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout)


@pytest.mark.parametrize("policy", sorted(CORES))
def test_the_overheads_are_what_an_entry_costs(policy):
    core_class = CORES[policy]
    plain, with_ttl = measured(policy, 0), measured(policy, 300)
    assert 0.7 * core_class.ENTRY_OVERHEAD <= plain <= 1.05 * core_class.ENTRY_OVERHEAD
    ttl_overhead = with_ttl - plain
    assert 0.5 * core_class.TTL_OVERHEAD <= ttl_overhead <= 1.5 * core_class.TTL_OVERHEAD
