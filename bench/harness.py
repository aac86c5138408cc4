"""Benchmark processes on loopback ports: ringcache, memcached behind twemproxy, and the C load generator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "bench" / "build"  # compiled load generator; ignored by git (build/)
LOADGEN_SOURCE = ROOT / "bench" / "loadgen.c"
# The servers run in the project's virtualenv even when this script is run by another Python.
_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
RINGCACHE = [str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable, "-m", "shared.cli"]
KEY_PREFIX = "bench:key-"  # "bench:" names ringcache's group; twemproxy hashes the whole key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_serving(port: int, timeout: float = 20.0) -> None:
    """Until a set through ``port`` is STORED: a proxy listens before its backends answer."""
    wait_port(port, timeout)
    deadline = time.monotonic() + timeout
    answer = b""
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"set bench:probe 0 0 1\r\nx\r\n")
            answer = s.recv(100)
        if answer == b"STORED\r\n":
            return
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port} does not store: {answer!r}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes, all threads (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _descendants(pid: int) -> list[int]:
    found = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return found
    for child in children:
        found += [child, *_descendants(child)]
    return found


class Servers:
    """Server processes started in order, stopped together by ``close`` (also on error)."""

    name = "servers"

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.procs: list[subprocess.Popen] = []
        try:
            self.port = self._start()
            wait_serving(self.port)
        except BaseException:
            self.close()
            raise

    def _start(self) -> int:
        """Start every process; the port clients use."""
        raise NotImplementedError

    def _spawn(self, args: list[str], ready_port: int | None = None) -> None:
        log = open(self.dir / f"{len(self.procs)}.log", "wb")
        self.procs.append(subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL))
        if ready_port is not None:
            try:
                wait_port(ready_port)
            except RuntimeError:
                raise RuntimeError(f"{args[0]} did not start: "
                                   f"{(self.dir / f'{len(self.procs) - 1}.log').read_text()}")

    @property
    def pids(self) -> list[int]:
        """Every process serving: those started, and their children (router workers)."""
        pids = [p.pid for p in self.procs]
        return pids + [child for pid in pids for child in _descendants(pid)]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RingcacheCluster(Servers):
    """A ringcache router and ``nodes`` storage nodes."""

    name = "ringcache"

    def __init__(self, nodes: int = 1, workers: int = 1, near_cache: str | None = None):
        """``near_cache``: the bench group's near_cache block as YAML (None: off)."""
        self.nodes = nodes
        self.workers = workers
        self.near_cache = near_cache
        super().__init__()

    def _start(self) -> int:
        memcache_port, topology = self._topology()
        self._start_nodes()
        self._spawn([*RINGCACHE, "router", "-c", str(topology)], memcache_port)
        return memcache_port

    def _topology(self) -> tuple[int, Path]:
        """Write the bench topology (group ``bench``, ``nodes`` nodes on free ports); its memcache port and path."""
        self.node_ports = [free_port() for _ in range(self.nodes)]
        memcache_port, http_port = free_port(), free_port()
        self.http_port = http_port
        near = getattr(self, "near_cache", None)
        group = "{max_bytes: 512MiB" + (f", near_cache: {near}" if near else "") + "}"
        node_lines = "\n".join(f"  - {{name: node-{i}, address: 127.0.0.1:{p}}}"
                               for i, p in enumerate(self.node_ports))
        (self.dir / "topology.yaml").write_text(
            f"router:\n  memcache: 127.0.0.1:{memcache_port}\n"
            f"  http: 127.0.0.1:{http_port}\n  default_group: bench\n"
            f"  workers: {getattr(self, 'workers', 1)}\n"
            f"nodes:\n{node_lines}\n"
            f"groups:\n  bench: {group}\n")
        return memcache_port, self.dir / "topology.yaml"

    def _start_nodes(self) -> None:
        for port in self.node_ports:
            self._spawn([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}",
                         "--max-memory", "1GiB"], port)


class LeanCluster(RingcacheCluster):
    """bench/lean_router.py (the epoll data-plane prototype) in front of ``nodes`` storage nodes.

    The topology is RingcacheCluster's. The nodes are ``ringcache node`` processes, or
    with ``lean_nodes`` bench/lean_node.py (the same Node on a bare epoll loop).
    """

    def __init__(self, nodes: int = 1, lean_nodes: bool = False):
        self.lean_nodes = lean_nodes
        self.name = "lean-router-lean-nodes" if lean_nodes else "lean-router"
        super().__init__(nodes)

    def _start(self) -> int:
        memcache_port, topology = self._topology()
        if self.lean_nodes:
            for port in self.node_ports:
                self._spawn([RINGCACHE[0], str(ROOT / "bench" / "lean_node.py"), "--listen",
                             f"127.0.0.1:{port}"], port)
        else:
            self._start_nodes()
        self._spawn([RINGCACHE[0], str(ROOT / "bench" / "lean_router.py"), str(topology)],
                    memcache_port)
        return memcache_port


def memcached_command(port: int) -> list[str]:
    # Debian's defaults (4 threads) but for a larger memory cap, no UDP and loopback only.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # memcached refuses to run as root
    return ["memcached", *user, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "1024"]


class TwemproxyCluster(Servers):
    """twemproxy (nutcracker) in front of ``servers`` memcached processes."""

    name = "twemproxy"

    def __init__(self, servers: int = 1):
        self.servers = servers
        super().__init__()

    def _start(self) -> int:
        ports = [free_port() for _ in range(self.servers)]
        for port in ports:
            self._spawn(memcached_command(port), port)
        proxy_port, stats_port = free_port(), free_port()
        server_lines = "\n".join(f"    - 127.0.0.1:{p}:1" for p in ports)
        conf = self.dir / "nutcracker.yml"
        conf.write_text(
            "bench:\n"
            f"  listen: 127.0.0.1:{proxy_port}\n"
            "  hash: fnv1a_64\n"
            "  distribution: ketama\n"
            "  auto_eject_hosts: false\n"
            f"  servers:\n{server_lines}\n")
        self._spawn([nutcracker_path(), "-c", str(conf), "-s", str(stats_port), "-a", "127.0.0.1",
                     "-o", str(self.dir / "nutcracker.log"), "-p", str(self.dir / "pid")],
                    proxy_port)
        return proxy_port


class TwistedFloor(Servers):
    """bench/twisted_floor.py (a byte-copying Twisted proxy) in front of one memcached."""

    name = "twisted-floor"

    def _start(self) -> int:
        backend, port = free_port(), free_port()
        self._spawn(memcached_command(backend), backend)
        self._spawn([RINGCACHE[0], str(ROOT / "bench" / "twisted_floor.py"), str(port),
                     str(backend)], port)
        return port


class EpollFloor(Servers):
    """bench/epoll_floor.py (a byte-copying proxy on a bare epoll loop) in front of one memcached.

    ``parse`` adds its --parse mode: get lines split and their keys hashed before forwarding.
    """

    def __init__(self, parse: bool = False):
        self.parse = parse
        self.name = "epoll-parse" if parse else "epoll-floor"
        super().__init__()

    def _start(self) -> int:
        backend, port = free_port(), free_port()
        self._spawn(memcached_command(backend), backend)
        self._spawn([RINGCACHE[0], str(ROOT / "bench" / "epoll_floor.py"), str(port),
                     str(backend), *(["--parse"] if self.parse else [])], port)
        return port


class OneHop(RingcacheCluster):
    """bench/one_hop.py: a router with its one node in the same process (a prototype).

    The topology is RingcacheCluster's with one node, whose address is never dialled:
    the node is joined in memory.
    """

    name = "one-hop"

    def __init__(self):
        super().__init__(nodes=1)

    def _start(self) -> int:
        memcache_port, topology = self._topology()
        self._spawn([RINGCACHE[0], str(ROOT / "bench" / "one_hop.py"), str(topology)],
                    memcache_port)
        return memcache_port


class Memcached(Servers):
    """One memcached, spoken to directly: the floor under both proxies."""

    name = "memcached"

    def _start(self) -> int:
        port = free_port()
        self._spawn(memcached_command(port), port)
        return port


def nutcracker_path() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    return shutil.which("nutcracker") or shutil.which("nutcracker", path="/usr/sbin:/sbin") or "nutcracker"


def ensure_packages() -> None:
    """Install Debian's memcached and nutcracker with apt-get when either is missing (root only)."""
    missing = [pkg for pkg, found in (("memcached", shutil.which("memcached")),
                                      ("nutcracker", shutil.which(nutcracker_path())))
               if not found]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {' and '.join(missing)}: run as root, or apt-get install {' '.join(missing)}")
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def build_loadgen() -> Path:
    """bench/build/loadgen, compiled from bench/loadgen.c when missing or older than it."""
    binary = BUILD / "loadgen"
    if not binary.exists() or binary.stat().st_mtime < LOADGEN_SOURCE.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(LOADGEN_SOURCE), "-lm"],
                       check=True)
    return binary


def loadgen(port: int, *, conns: int = 4, depth: int = 1, multi: int = 1, seconds: float = 3.0,
            keys: int = 10000, rate: float = 0.0, preload: bool = False,
            value_size: int = 100, zipf: float = 0.0) -> dict:
    """Run the load generator once against 127.0.0.1:``port``; its JSON result. ``zipf``
    S > 0 draws the keys Zipf(S) (key 0 the hottest) instead of in turn."""
    args = [str(build_loadgen()), "--port", str(port), "--conns", str(conns), "--depth",
            str(depth), "--multi", str(multi), "--seconds", str(seconds), "--keys", str(keys),
            "--prefix", KEY_PREFIX, "--rate", str(rate), "--value-size", str(value_size)]
    if zipf > 0 and not preload:
        args += ["--zipf", str(zipf)]
    if preload:
        args.append("--set")
    done = subprocess.run(args, check=True, capture_output=True, text=True,
                          timeout=seconds + 60)
    return json.loads(done.stdout)


def preload(port: int, keys: int, value_size: int = 100) -> None:
    result = loadgen(port, depth=32, keys=keys, preload=True, value_size=value_size)
    if result["errors"] or result["requests"] != keys:
        raise RuntimeError(f"preload through port {port} failed: {result}")
