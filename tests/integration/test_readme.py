"""The README's commands, run as pasted: the demo and the Security recipe, on real processes.

Every ```sh and ```python block of README.md is preceded by a marker line:
  <!-- readme: serve -->              a command that runs until Ctrl-C (make run, ringcache up)
  <!-- readme: run NAME -->           shell lines, run in order once the one served is up
  <!-- readme: python NAME -->        a Python snippet, run with .venv/bin/python
  <!-- readme: file NAME -->          (any language) the file the prose says to save it as
  <!-- readme: not run by tests/integration/test_readme.py: WHY -->
so a new block cannot escape the test without saying why.

The blocks run in a scratch directory laid out like the repository root (the Makefile,
.venv, the packages and examples/ linked to the real ones, topology.yaml copied), with every port the README names (11211, 8080, 7001... for the demo,
11212, 8443, 7101... for the Security recipe) replaced by a free one, in the blocks and
in the files alike, so the test runs beside anything else on the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, Process, free_port, port_open, stop_process
from tests.integration.servers import require

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- readme: (.*) -->$")
PORTS = (11211, 8080, 7001, 7002, 7003, 11212, 8443, 7101, 7102)
# Linked from the repository: what `make run` reads to decide that nothing must be built
# first, and the packages themselves (the scratch directory is the children's cwd, so a
# folder of the same name there would shadow them).
LINKED = (".venv", "Makefile", "pyproject.toml", "setup.py", "shared", "router",
          "storage_node", "examples")


@dataclass
class Block:
    marker: str | None
    language: str
    text: str
    line: int
    section: str


def blocks() -> list[Block]:
    out, lines = [], README.read_text().splitlines()
    section, i = "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:]
        if line.startswith("```") and len(line) > 3:
            match = MARKER.match(lines[i - 1]) if i else None
            end = lines.index("```", i + 1)
            out.append(Block(match[1] if match else None, line[3:], "\n".join(lines[i + 1:end]) + "\n",
                             i + 1, section))
            i = end
        i += 1
    return out


def test_every_command_block_is_run_or_says_why_not():
    for block in blocks():
        if block.language in ("sh", "python"):
            assert block.marker is not None, f"README.md line {block.line}: a block without a marker"
            kind = block.marker.split()[0]
            assert kind in ("serve", "run", "python", "file") or block.marker.startswith(
                "not run by tests/integration/test_readme.py: "), block.marker


# As in a terminal: no make above us (`make test` would make ours say "make[1]: ...").
SHELL_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


class Scratch:
    """A directory laid out like the repository root, on free ports."""

    def __init__(self, path: Path):
        self.path = path
        self.ports = {port: free_port() for port in PORTS}
        for name in LINKED:
            (path / name).symlink_to(ROOT / name)
        (path / "topology.yaml").write_text(self.ported((ROOT / "topology.yaml").read_text()))
        self.served: Process | None = None

    def ported(self, text: str) -> str:
        return re.sub(r"(?<![\d.])(%s)(?!\d)" % "|".join(map(str, PORTS)),
                      lambda m: str(self.ports[int(m[1])]), text)

    def port(self, readme_port: int) -> int:
        return self.ports[readme_port]

    def serve(self, block: Block, until: str, ready_port: int) -> str:
        self.served = Process(["bash", "-c", self.ported(block.text)], cwd=self.path,
                              start_new_session=True, env=SHELL_ENV)
        deadline = time.monotonic() + 40
        while until not in self.served.read_stdout():
            assert self.served.poll() is None and time.monotonic() < deadline, self.served.describe()
            time.sleep(0.1)
        assert port_open(self.port(ready_port))
        return self.served.read_stdout()

    def run(self, block: Block) -> str:
        if block.language == "python":
            command = [str(ROOT / ".venv/bin/python"), "-c", self.ported(block.text)]
        else:
            command = ["bash", "-c", "set -euo pipefail\n" + self.ported(block.text)]
        done = subprocess.run(command, cwd=self.path, capture_output=True, text=True, timeout=60,
                              env=SHELL_ENV)
        assert done.returncode == 0, (f"README.md line {block.line} failed:\n{done.stdout}\n"
                                      f"{done.stderr}")
        return done.stdout

    def stop(self) -> str:
        """Ctrl-C, as in a terminal: the whole foreground process group."""
        if self.served is None or self.served.poll() is not None:
            return ""
        os.killpg(self.served.pid, signal.SIGINT)
        try:
            self.served.wait(timeout=20)
        finally:
            if self.served.poll() is None:
                os.killpg(self.served.pid, signal.SIGKILL)
                stop_process(self.served, signal.SIGKILL)
        return self.served.read_stderr()


@pytest.fixture
def scratch(tmp_path):
    require("curl", "nc")
    s = Scratch(tmp_path)
    yield s
    s.stop()


def section(name: str, start: str, end: str) -> dict[str, Block]:
    """The marked blocks of the README between the lines ``start`` and ``end``."""
    text = README.read_text()
    first = text.index(start)
    last = text.index(end, first)
    lines = (text[:first].count("\n") + 1, text[:last].count("\n") + 1)
    found = {}
    for block in blocks():
        if lines[0] <= block.line <= lines[1] and block.marker and not block.marker.startswith("not run"):
            key = block.marker if block.marker == "serve" else block.marker.split(None, 1)[1]
            assert key not in found, f"two {key!r} blocks in {name}"
            found[key] = block
    return found


def test_the_demo_as_pasted(scratch):
    demo = section("the demo", "## Try the demo", "## Commands")
    assert set(demo) == {"serve", "demo-http", "demo-pymemcache", "demo-nc", "demo-cli"}
    assert demo["serve"].text == "make run\n"
    # `make run` is the one command the Makefile says, with nothing to rebuild first.
    dry = subprocess.run(["make", "-n", "run"], cwd=scratch.path, capture_output=True,
                         text=True, timeout=60, env=SHELL_ENV)
    assert ".venv/bin/ringcache up -c topology.yaml" in dry.stdout
    assert "pip install" not in dry.stdout, "the install is out of date: run `make install` first"

    banner = scratch.serve(demo["serve"], "ringcache is up", 8080)
    # make echoes its command; then the banner, with every node up.
    assert banner.startswith(".venv/bin/ringcache up -c topology.yaml\n"
                             "ringcache is up: 3 nodes, router digest "), banner
    assert f"nc -q1 127.0.0.1 {scratch.port(11211)}" in banner

    out = scratch.run(demo["demo-http"])
    assert out.startswith("630630")  # loaded, then a hit
    assert '"node": "node-' in out and '"digest"' in out and '"nodes"' in out
    assert 'ringcache_requests_total{command="get",protocol="http",result="hit"} 1.0' in out
    assert 'ringcache_requests_total{command="get",protocol="http",result="miss"} 1.0' in out
    scratch.run(demo["demo-pymemcache"])
    assert scratch.run(demo["demo-nc"]) == "VALUE scores:Sam 0 3\n567\nEND\n"  # text mode: \r\n read as \n
    out = scratch.run(demo["demo-cli"])
    assert out.startswith("630\n")
    assert re.search(r"^scores/Tom is on node-[abc] \(127\.0\.0\.1:\d+, up\)$", out, re.M)
    # The ring table's row: node-a, its address, weight, share and state. Its DOWNS and
    # TIMEOUTS columns count since start: on a loaded CI box a first request may take
    # longer than the demo's 500 ms timeout, which is not the README's to promise.
    assert re.search(r"^node-a +127\.0\.0\.1:\d+ +1 +[\d.]+% +up +\d+ +\d+$", out, re.M), out
    assert re.search(r"^group scores: \d+ samples \(1 get in 32\)", out, re.M)  # ringcache hot
    assert re.search(r"^scores +\d+\.\d% ", out, re.M)  # the stats table, with a hit ratio
    assert json.loads(out[out.index("\n{") + 1:])["router"]["hits"] >= 2
    stderr = scratch.stop()
    assert "Traceback" not in stderr and "is down" not in stderr, stderr
    assert stderr.count("ringcache up: stopped ") == 4, stderr
    assert not any(port_open(scratch.port(p)) for p in (11211, 8080, 7001, 7002, 7003))


def test_the_security_recipe_as_pasted_on_one_host(scratch):
    recipe = section("the Security recipe", "**Try it on one host.**", "**On several hosts**")
    assert set(recipe) == {"secure-setup", "secure.yaml", "serve", "secure-clients",
                           "secure-pymemcache"}
    scratch.run(recipe["secure-setup"])
    assert (scratch.path / "certs" / "node.pem").is_file()
    (scratch.path / "secure.yaml").write_text(scratch.ported(recipe["secure.yaml"].text))
    assert recipe["serve"].text == ".venv/bin/ringcache up -c secure.yaml\n"

    banner = scratch.serve(recipe["serve"], "ringcache is up", 8443)
    assert banner.startswith("ringcache is up: 2 nodes, router digest "), banner  # none down
    assert f"https://127.0.0.1:{scratch.port(8443)}/" in banner

    out = scratch.run(recipe["secure-clients"])
    lines = out.splitlines()
    assert re.search(r"^node-a +127\.0\.0\.1:\d+ +1 +[\d.]+% +up ", out, re.M), out
    assert re.search(r"^node-b +127\.0\.0\.1:\d+ +1 +[\d.]+% +up ", out, re.M), out
    assert "630" in lines
    assert sum(line.startswith("applied: ring ") for line in lines) == 1
    tail = out[out.index("applied: ring "):]
    assert "630" in tail  # curl with the clients' CA
    assert "this needs the admin token" in tail  # the reload without it
    assert tail.rstrip().endswith("}") and '"applied": true' in tail
    assert scratch.run(recipe["secure-pymemcache"]) == "b'630'\n"
    stderr = scratch.stop()
    assert "Traceback" not in stderr and "authentication" not in stderr, stderr
    assert scratch.served.returncode == 0, stderr
