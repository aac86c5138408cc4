"""A real ringcache cluster for integration tests: node processes and a router on free ports."""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import (
    RINGCACHE,
    Process,
    free_port,
    port_open,
    start_process,
    stop_process,
)

# A source module the test topologies load (`python: sources_for_tests:NAME`). Each load
# appends the key to loads.log beside it, so a test can count loads exactly.
SOURCE_MODULE = '''
import os, time

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loads.log")

def _record(key):
    with open(LOG, "a") as f:
        f.write(key + "\\n")

def value(key):
    _record(key)
    if key.startswith("missing"):
        return None
    return "value-of-" + key

def slow(key):
    _record(key)
    time.sleep(0.5)
    return "slow-" + key

def broken(key):
    _record(key)
    raise RuntimeError("database is on fire")
'''

GROUPS = """
groups:
  scores:
    source: {python: sources_for_tests:value}
  short:
    ttl: 1s
    source: {python: sources_for_tests:value}
  slow:
    source: {python: sources_for_tests:slow, timeout: 5s}
  broken:
    source: {python: sources_for_tests:broken}
  sessions: {}
"""


class Cluster:
    """Nodes named node-0.. and one router, all real processes, from one topology file."""

    def __init__(self, directory: Path, nodes: int = 3, timeout: str = "500ms",
                 groups: str = GROUPS, node_args: tuple[str, ...] = (), security: str = "",
                 router_extra: str = "", https=None, data_dirs: bool = False):
        """``node_args`` go to every node (e.g. --secret-file); ``security`` is the
        topology's security block and ``router_extra`` more router keys, as YAML lines;
        ``https`` is the ssl context to reach an HTTP API that router_extra put on TLS;
        ``data_dirs`` gives each node a data dir of its own (DIR/data/NAME)."""
        self.dir = directory
        self.node_args = tuple(node_args)
        self.data_dirs = data_dirs
        self.security = security
        self.router_extra = router_extra
        self.https = https
        self.node_names = [f"node-{i}" for i in range(nodes)]
        self.node_ports = {name: free_port() for name in self.node_names}
        self.memcache_port = free_port()
        self.http_port = free_port()
        self.timeout = timeout
        self.groups = groups
        self.nodes: dict[str, Process] = {}
        self.router: Process | None = None
        (directory / "sources_for_tests.py").write_text(SOURCE_MODULE)
        self.topology = directory / "topology.yaml"
        self.write_topology(self.node_names)

    # -- files ---------------------------------------------------------------------------

    def topology_text(self, names, extra_router: str = "") -> str:
        nodes = "\n".join(f"  - {{name: {n}, address: 127.0.0.1:{self.node_ports[n]}}}"
                          for n in names)
        router = textwrap.dedent(f"""\
            router:
              memcache: 127.0.0.1:{self.memcache_port}
              http: 127.0.0.1:{self.http_port}
              timeout: {self.timeout}
              default_group: scores
            """) + self.router_extra + extra_router
        return f"{router}nodes:\n{nodes}\n{self.groups}{self.security}"

    def write_topology(self, names, extra_router: str = "") -> None:
        self.topology.write_text(self.topology_text(names, extra_router))

    def add_node_name(self, name: str) -> None:
        self.node_ports[name] = free_port()

    def loads(self) -> list[str]:
        log = self.dir / "loads.log"
        return log.read_text().split() if log.exists() else []

    # -- processes -----------------------------------------------------------------------

    def start_node(self, name: str) -> Process:
        port = self.node_ports[name]
        data = (["--data-dir", str(self.dir / "data" / name), "--name", name]
                if self.data_dirs else [])
        proc = start_process([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}", *self.node_args,
                              *data], lambda: port_open(port), timeout=30)
        self.nodes[name] = proc
        return proc

    def start(self) -> Cluster:
        try:
            for name in self.node_names:
                self.start_node(name)
            self.router = start_process([*RINGCACHE, "router", "-c", str(self.topology)],
                                        self._router_ready, timeout=20)
        except BaseException:
            self.stop()
            raise
        return self

    def _router_ready(self) -> bool:
        if not port_open(self.http_port) or not port_open(self.memcache_port):
            return False
        try:
            ring = self.http_json("GET", "/v1/ring")
        except OSError:
            return False
        return all(n["healthy"] for n in ring["nodes"]
                   if n["name"] in self.nodes and self.nodes[n["name"]].poll() is None)

    def stop(self) -> None:
        procs = [self.router, *self.nodes.values()]
        for proc in procs:
            if proc is not None:
                stop_process(proc)

    # -- clients -------------------------------------------------------------------------

    @property
    def http_base(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.http_port}"

    def http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.http_base + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.https) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def http_json(self, method: str, path: str, body: bytes | None = None):
        status, data = self.http(method, path, body)
        return json.loads(data) if status == 200 else {"status": status, "body": data}

    def memcache(self, **kwargs):
        from pymemcache.client.base import Client

        return Client(("127.0.0.1", self.memcache_port), timeout=5, connect_timeout=5, **kwargs)
