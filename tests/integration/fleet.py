"""A fleet of real routers on one etcd key, in front of real storage nodes: for the etcd tests.

Every router runs `ringcache router -c etcd://.../KEY --memcache ... --http ...`: one
document, each router on ports of its own (as on many hosts), relative paths resolving in
``--base-dir`` (the test's directory, where the source module lives).
"""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import RINGCACHE, Process, free_port, port_open, start_process, stop_process
from tests.integration.cluster import SOURCE_MODULE


@dataclass
class RouterProc:
    memcache_port: int
    http_port: int
    proc: Process | None = None
    args: list[str] = field(default_factory=list)

    def http_json(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def digest(self) -> str | None:
        try:
            return self.http_json("/v1/ring")["digest"]
        except (OSError, ValueError):
            return None

    def memcache(self):
        from pymemcache.client.base import Client

        return Client(("127.0.0.1", self.memcache_port), timeout=5, connect_timeout=5)


class Fleet:
    def __init__(self, directory: Path, etcd, routers: int = 3, nodes: int = 2,
                 key: str = "/ringcache/topology", router_args: tuple[str, ...] = (),
                 env: dict | None = None, router_extra: str = ""):
        self.dir = directory
        self.etcd = etcd
        self.key = key
        self.url = etcd.url(key)
        self.env = env
        self.router_extra = router_extra
        self.node_names = [f"node-{i}" for i in range(nodes)]
        self.node_ports = {name: free_port() for name in self.node_names}
        self.nodes: dict[str, Process] = {}
        self.routers = [RouterProc(free_port(), free_port()) for _ in range(routers)]
        self.router_args = list(router_args)
        (directory / "sources_for_tests.py").write_text(SOURCE_MODULE)

    def document(self, names=None, vnodes: int = 160, default_group: str = "scores") -> bytes:
        names = self.node_names if names is None else names
        nodes = "\n".join(f"  - {{name: {n}, address: 127.0.0.1:{self.node_ports[n]}}}"
                          for n in names)
        return (textwrap.dedent(f"""\
            router:
              vnodes: {vnodes}
              timeout: 500ms
              default_group: {default_group}
            """) + self.router_extra + f"nodes:\n{nodes}\n" + textwrap.dedent("""\
            groups:
              scores:
                source: {python: sources_for_tests:value}
              sessions: {}
            """)).encode()

    def write(self, name: str, document: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(document)
        return path

    # -- processes -----------------------------------------------------------------------

    def start(self, document: bytes | None = None) -> Fleet:
        try:
            for name, port in self.node_ports.items():
                self.nodes[name] = start_process(
                    [*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}"], lambda p=port: port_open(p))
            self.etcd.put(self.key, document or self.document())
            for router in self.routers:
                self.start_router(router)
        except BaseException:
            self.stop()
            raise
        return self

    def start_router(self, router: RouterProc) -> RouterProc:
        router.args = [*RINGCACHE, "router", "-c", self.url,
                       "--memcache", f"127.0.0.1:{router.memcache_port}",
                       "--http", f"127.0.0.1:{router.http_port}", "--base-dir", str(self.dir),
                       *self.router_args]
        router.proc = start_process(router.args, lambda: self._ready(router), timeout=30,
                                    env=self.env)
        return router

    def _ready(self, router: RouterProc) -> bool:
        if not port_open(router.http_port) or not port_open(router.memcache_port):
            return False
        try:
            ring = router.http_json("/v1/ring")
        except (OSError, ValueError):
            return False
        return all(n["healthy"] for n in ring["nodes"])

    def stop(self) -> None:
        for proc in [r.proc for r in self.routers] + list(self.nodes.values()):
            if proc is not None:
                stop_process(proc)

    # -- what the routers say ---------------------------------------------------------

    def digests(self) -> list[str | None]:
        return [router.digest() for router in self.routers]

    def wait_for_digest(self, digest: str, timeout: float) -> float | None:
        """Seconds until every router serves ``digest``, or None past ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if all(d == digest for d in self.digests()):
                return time.monotonic() - started
            time.sleep(0.01)
        return None

    def push(self, path: Path, *flags: str, stdin=subprocess.DEVNULL, env=None):
        """`ringcache topology push FILE URL` as a user runs it."""
        return subprocess.run([*RINGCACHE, "topology", "push", str(path), self.url, *flags],
                              stdin=stdin, capture_output=True, text=True, timeout=60,
                              env=env or self.env)


def gateway_put(etcd, key: str, value: bytes) -> int:
    """A write straight to etcd's JSON gateway (what a push does last): its revision."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{etcd.port}/v3/kv/put", data=body)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.loads(response.read())["header"]["revision"])


def digest_of(document: bytes) -> str:
    from router.cluster.plan import ring_for
    from router.config.topology import parse_topology_text

    return ring_for(parse_topology_text(document.decode(), "doc")).digest


__all__ = ["Fleet", "RouterProc", "digest_of", "gateway_put", "urllib"]
