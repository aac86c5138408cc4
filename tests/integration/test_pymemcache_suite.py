"""pymemcache 4.0.0's own integration suite (pymemcache/test/test_integration.py of its
sdist) against a real memcached 1.6 and against a router with real nodes: every test
that passes on memcached must pass on the router.

The sdist is fetched once with pip (`pip download pymemcache==4.0.0 --no-binary :all:`)
into build/pymemcache/ (ignored by git) and run with its own conftest's --server/--port.
Needs Debian's memcached (`make system-deps`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, port_open, start_process, stop_process
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

VERSION = "4.0.0"
CACHE = ROOT / "build" / "pymemcache"
GROUPS = """
groups:
  scores: {}
  sessions: {}
"""


def suite() -> Path:
    """The unpacked sdist, downloaded on first use."""
    source = CACHE / f"pymemcache-{VERSION}"
    if not (source / "pymemcache" / "test" / "test_integration.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"pymemcache=={VERSION}",
                        "--no-binary", ":all:", "--no-deps", "--quiet", "-d", str(CACHE)],
                       check=True, timeout=300)
        with tarfile.open(CACHE / f"pymemcache-{VERSION}.tar.gz") as sdist:
            sdist.extractall(CACHE, filter="data")
    return source


def outcomes(port: int, tmp_path: Path, name: str) -> dict[str, str]:
    """{test id: "passed", "failed" or "skipped"} of one run of the suite against port."""
    report = tmp_path / f"{name}.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-o", "addopts=", "-m", "integration", "pymemcache/test/test_integration.py",
                    "--server", "127.0.0.1", "--port", str(port), f"--junitxml={report}"],
                   cwd=suite(), capture_output=True, timeout=600)
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = ("failed" if kinds & {"failure", "error"} else
                   "skipped" if "skipped" in kinds else "passed")
        found[f"{case.get('classname')}.{case.get('name')}"] = outcome
    return found


@pytest.fixture(scope="module")
def memcached_port():
    memcached = shutil.which("memcached")
    assert memcached, "memcached is missing: run `make system-deps` as root"
    port = free_port()
    proc = start_process([memcached, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                          "-u", "nobody", "-m", "64"], lambda: port_open(port))
    yield port
    stop_process(proc)


def test_the_router_passes_whatever_memcached_passes(memcached_port, tmp_path):
    reference = outcomes(memcached_port, tmp_path, "memcached")
    passed = {test for test, outcome in reference.items() if outcome == "passed"}
    assert len(passed) >= 100, reference  # the suite really ran
    cluster = Cluster(tmp_path, groups=GROUPS).start()
    try:
        ours = outcomes(cluster.memcache_port, tmp_path, "router")
    finally:
        cluster.stop()
    assert {test: ours.get(test) for test in passed if ours.get(test) != "passed"} == {}
