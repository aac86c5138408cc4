"""The committed wire module is exactly what the schema generates."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_generated_module_matches_schema(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"--python_out={tmp_path}",
         str(ROOT / "shared" / "ringcache.proto")],
        check=True, capture_output=True)
    generated = (tmp_path / "shared" / "ringcache_pb2.py").read_text()
    committed = (ROOT / "shared" / "ringcache_pb2.py").read_text()
    assert generated == committed, "shared/ringcache_pb2.py is stale: run `make proto`"


