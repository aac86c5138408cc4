"""The built-in eviction cores: the shared contract, each policy's order, the loader, and
random operations compared with a plain reference model."""

from __future__ import annotations

import os
import subprocess
import sys

from storage_node.cores import COMPILED, AdaptiveCore, PureAdaptiveCore
from tests.helpers import ROOT
from tests.storage_node.cores.adaptive_state import compiled_class


def test_adaptive_is_the_compiled_twin_unless_pure_python_is_asked_for():
    pure = bool(os.environ.get("RINGCACHE_PURE_PYTHON"))
    assert COMPILED is not pure
    assert AdaptiveCore is (PureAdaptiveCore if pure else compiled_class())
    selected = subprocess.run(
        [sys.executable, "-c", "from storage_node.cores import CORES; print(CORES['adaptive'].__module__)"],
        env={**os.environ, "RINGCACHE_PURE_PYTHON": "1"}, cwd=ROOT, capture_output=True, text=True,
        check=True)
    assert selected.stdout.strip() == "storage_node.cores.adaptive"


