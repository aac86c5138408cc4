"""Router workers: N processes serving the memcached port, one control process for the rest.

With ``router.workers: N`` (N > 1) ``ringcache router`` becomes the control plane: it serves
the HTTP API (with a Router of its own for HTTP reads and writes), watches the topology
file, and supervises N worker processes. Each worker is a whole router data plane -- its
own ring built from the same topology text (so the same digest), its own node connections
and singleflight table -- listening on the memcached port with SO_REUSEPORT, so the kernel
spreads client connections over them. Python runs one core per process; this is how a
router uses a many-core host.

Control and workers speak AMP over a Unix socket in a private directory: a worker says
Hello when it starts; the control sends Reload (the topology text it has just applied,
so every worker parses the very same bytes) and asks for Stats, which /v1/stats and
/metrics add up. A worker that dies is restarted with backoff; one that loses the control
connection exits (its control is gone).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

from router.process.supervise import DIE_WITH_PARENT, Child, ChildSpec
from shared.backlog import DEFAULT_BACKLOG

log = Logger()


class Hello(amp.Command):
    arguments = [(b"index", amp.Integer()), (b"pid", amp.Integer()), (b"digest", amp.Unicode())]
    response = []


class Reload(amp.Command):
    arguments = [(b"text", amp.Unicode()), (b"path", amp.Unicode())]
    response = [(b"digest", amp.Unicode())]
    errors = {ValueError: b"REFUSED"}


class Stats(amp.Command):
    arguments = []
    response = [(b"document", amp.Unicode())]  # JSON: see worker_stats


# -- the memcached listener every worker shares ---------------------------------------


def reuseport_listen(reactor, host: str, port: int, factory, tls=None,
                     backlog: int = DEFAULT_BACKLOG):
    """Listen on host:port with SO_REUSEPORT, so that several processes share the port and
    the kernel balances new connections over them, each with a listen backlog of
    ``backlog``. With ``tls`` (topology.TLSFiles) the connections speak TLS, as
    tcp_server's do."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        if tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            from shared.tls import server_options

            factory = TLSMemoryBIOFactory(server_options(tls.cert, tls.key, tls.ca), False,
                                          factory)
        # The reactor takes a descriptor of its own; ours is closed right after.
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()


# -- the control side ------------------------------------------------------------------


class _ControlProtocol(amp.AMP):
    def __init__(self, pool: WorkerPool):
        super().__init__()
        self.pool = pool
        self.index: int | None = None

    @Hello.responder
    def hello(self, index: int, pid: int, digest: str):
        self.index = index
        self.pool._joined(index, pid, digest, self)
        return {}

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.index is not None:
            self.pool._left(self.index, self)


class WorkerPool:
    """The control process's N workers: started, restarted, reloaded and asked for stats."""

    def __init__(self, count: int, topology, flags: list[str], reactor, write=None):
        """``topology`` is the one the control serves; ``flags`` give each worker the
        control's way of reading it (router/config/origin.py Reader.flags)."""
        self.count = count
        self.reactor = reactor
        self.flags = list(flags)
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._dir = tempfile.mkdtemp(prefix="ringcache-control-")  # 0700: ours alone
        self.socket_path = os.path.join(self._dir, "control.sock")
        # A worker (re)starts from the document the control applied last, whatever its
        # origin (a file since changed, an etcd key), so it builds the control's ring.
        self.config_path = os.path.join(self._dir, "topology.yaml")
        self._keep(topology.text)
        self.links: dict[int, _ControlProtocol] = {}
        self.info: dict[int, dict] = {}
        self._children: list[Child] = []
        self._port = None

    async def start(self) -> None:
        factory = Factory.forProtocol(lambda: _ControlProtocol(self))
        factory.noisy = False
        self._port = await UNIXServerEndpoint(self.reactor, self.socket_path).listen(factory)
        launcher = (sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()))
        for index in range(self.count):
            spec = ChildSpec(f"worker-{index}", (*launcher, "router", "-c", self.config_path,
                                                 *self.flags, "--worker", str(index),
                                                 "--control", self.socket_path))
            child = Child(spec, self.reactor, self._write, os.environ,
                          prefix="ringcache router: ")
            self._children.append(child)
            child.start()

    async def stop(self) -> None:
        await DeferredList([child.stop() for child in self._children])
        if self._port is not None:
            await self._port.stopListening()
        for path in (self.socket_path, self.config_path):
            try:
                os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass

    def _keep(self, text: str) -> None:
        partial = self.config_path + ".new"
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(partial, self.config_path)

    def _joined(self, index: int, pid: int, digest: str, link: _ControlProtocol) -> None:
        self.links[index] = link
        self.info[index] = {"index": index, "pid": pid, "digest": digest, "up": True}

    def _left(self, index: int, link: _ControlProtocol) -> None:
        if self.links.get(index) is link:
            del self.links[index]
            self.info[index] = {**self.info[index], "up": False}

    def workers(self) -> list[dict]:
        """Each worker as /v1/ring shows it: index, pid, ring digest, whether it is up."""
        return [self.info.get(i, {"index": i, "pid": None, "digest": None, "up": False})
                for i in range(self.count)]

    def reload(self, text: str, path: str) -> Deferred:
        """Every connected worker applies ``text``; fires with {index: digest or error}."""
        self._keep(text)
        indexes = sorted(self.links)
        ds = [self.links[i].callRemote(Reload, text=text, path=path) for i in indexes]

        def collect(results):
            out = {}
            for index, (ok, value) in zip(indexes, results):
                if ok:
                    out[index] = value["digest"]
                    self.info[index]["digest"] = value["digest"]
                else:
                    out[index] = f"refused: {value.getErrorMessage()}"
                    log.error("worker {index} refused the topology: {why}", index=index,
                              why=value.getErrorMessage())
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(collect)

    def stats(self) -> Deferred:
        """Every connected worker's stats document (see worker_stats), in index order."""
        indexes = sorted(self.links)
        if not indexes:
            return succeed([])
        ds = [self.links[i].callRemote(Stats) for i in indexes]

        def collect(results):
            return [json.loads(value["document"]) for ok, value in results if ok]

        return DeferredList(ds, consumeErrors=True).addCallback(collect)


# -- the worker side -------------------------------------------------------------------


class WorkerLink(amp.AMP):
    """A worker's connection to its control process."""

    def __init__(self, process, index: int, on_lost):
        super().__init__()
        self.process = process  # router.process.main.RouterProcess
        self.index = index
        self.on_lost = on_lost

    def connectionMade(self):
        super().connectionMade()
        self.callRemote(Hello, index=self.index, pid=os.getpid(),
                        digest=self.process.router.ring.digest)

    @Reload.responder
    def reload(self, text: str, path: str):
        result = self.process.apply(self.process.reader.parse(text, path))
        return {"digest": result["digest"]}

    @Stats.responder
    def stats(self):
        return {"document": json.dumps(worker_stats(self.process))}

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.on_lost()


def connect_to_control(reactor, path: str, process, index: int, on_lost) -> Deferred:
    factory = Factory.forProtocol(lambda: WorkerLink(process, index, on_lost))
    factory.noisy = False
    return UNIXClientEndpoint(reactor, path).connect(factory)


def worker_stats(process) -> dict:
    """What the control adds up for /v1/stats and /metrics: this worker's /v1/stats
    router section, and its Prometheus samples (counters and histograms are summed over
    the workers)."""
    from router.http.hot import hot_document
    from router.http.metrics import router_document

    router = process.router
    stats = router.stats
    memcache = process.memcache
    return {
        "pid": os.getpid(),
        "digest": router.ring.digest,
        "router": router_document(router),
        "hot": hot_document(router),
        "connections": memcache.connections if memcache is not None else 0,
        "total_connections": memcache.total_connections if memcache is not None else 0,
        "metrics": [
            [family.name, family.type, family.documentation,
             [[s.name, s.labels, s.value] for s in family.samples]]
            for family in stats.registry.collect()
        ],
    }


# -- adding up -------------------------------------------------------------------------


def add_up(document: dict, workers: list[dict], pool: WorkerPool) -> dict:
    """/v1/stats over every process: the control's ``document`` with each worker's
    router section added in, and a ``workers`` list."""
    for doc in workers:
        _add_into(document["router"], doc["router"])
    by_pid = {doc["pid"]: doc for doc in workers}
    document["workers"] = [
        {**w, "connections": by_pid[w["pid"]]["connections"] if w["pid"] in by_pid else 0}
        for w in pool.workers()]
    return document


def _add_into(total: dict, more: dict) -> None:
    """Numbers summed, mappings merged key by key; anything else (a node's state) stays
    as the control has it, or as the first worker that has it says."""
    for key, value in more.items():
        mine = total.get(key)
        if isinstance(value, dict):
            if not isinstance(mine, dict):
                mine = total[key] = {}
            _add_into(mine, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
                mine is None or isinstance(mine, (int, float))):
            total[key] = (mine or 0) + value
        elif key not in total:
            total[key] = value
