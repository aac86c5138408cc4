"""The ring digest is the same in another process, whatever its hash seed: routers that load
one topology agree on one ring."""

import json
import os
import subprocess
import sys

from router.cluster.ring import HashRing
from tests.helpers import ROOT

BASE = [("node-a", 1), ("node-b", 1), ("node-c", 2)]


def test_same_in_another_process():
    code = (
        "import json, sys; from router.cluster.ring import HashRing; "
        "print(HashRing(json.loads(sys.argv[1])).digest)"
    )
    for seed in ("0", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(BASE)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed}, cwd=ROOT,
        )
        assert out.stdout.strip() == HashRing(BASE).digest
