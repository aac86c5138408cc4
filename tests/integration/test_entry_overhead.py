"""Each core's ENTRY_OVERHEAD and TTL_OVERHEAD are what an entry really costs in RSS.

The node charges these per entry (storage_node/node.py), so they decide how far a node's
RSS follows --max-memory: too low and the node outgrows its budget, too high and it
wastes it. Measured in a process of its own (tests/integration/entry_memory.py), after enough writes
to churn the core's tables; a dict's table costs between 1 and 2 times its least as it
grows, so the measure may sit anywhere in that band, and the figure must hold its top.
The adaptive core's twins differ in layout, so each has its own figures: the pure one is
measured with RINGCACHE_PURE_PYTHON=1.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from storage_node.cores import CORES, PureAdaptiveCore
from tests.helpers import ROOT


def measured(policy: str, ttl: int, pure: bool) -> int:
    env = {**os.environ, "RINGCACHE_PURE_PYTHON": "1"} if pure else None
    out = subprocess.run([sys.executable, "-m", "tests.integration.entry_memory", policy, str(ttl)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout)


@pytest.mark.parametrize("policy, pure", [*((policy, False) for policy in sorted(CORES)),
                                          ("adaptive", True)],
                         ids=[*sorted(CORES), "adaptive-pure"])
def test_the_overheads_are_what_an_entry_costs(policy, pure):
    core_class = PureAdaptiveCore if pure else CORES[policy]
    plain, with_ttl = measured(policy, 0, pure), measured(policy, 300, pure)
    assert 0.7 * core_class.ENTRY_OVERHEAD <= plain <= 1.05 * core_class.ENTRY_OVERHEAD
    ttl_overhead = with_ttl - plain
    assert 0.5 * core_class.TTL_OVERHEAD <= ttl_overhead <= 1.5 * core_class.TTL_OVERHEAD
