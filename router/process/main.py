"""`ringcache router`: one router process serving memcached and HTTP from a topology
kept in a file or in an etcd key (router/config/origin.py)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from pathlib import Path

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger

from router.cluster.router import Router
from router.config import etcd
from router.config.origin import FileOrigin, Reader
from router.config.topology import Address, TopologyError
from router.http import metrics
from router.http.api import build_site
from router.memcache.server import MemcacheFactory
from router.process.security import secure
from router.process.workers import WorkerPool, connect_to_control, reuseport_listen
from shared.backlog import capped_warning
from shared.cli import ArgumentParser, start_logging
from shared.connections import RESERVED_FDS, fd_headroom, presize_fd_table
from shared.net import tcp_server

log = Logger()


class RouterProcess:
    """The running router: listeners, the Router, the file watch, and signal handling.

    ``mode`` is "single" (one process serves everything: the default), "control" (with
    ``router.workers`` > 1: the HTTP API, the topology's watch and the workers, which serve
    the memcached port) or "worker" (one of those: the memcached port only, reloaded by its
    control process). See router/process/workers.py.
    """

    def __init__(self, router: Router, reactor, mode: str = "single", reader: Reader = Reader()):
        self.router = router
        self.reactor = reactor
        self.mode = mode
        self.reader = reader  # how this process parses a document (workers: what the control sends)
        self.ports = []
        self.backlog = router.topology.limits.backlog  # the listeners' (shared/backlog.py)
        self.memcache = None
        self.pool = None
        self._watching = False  # whether the topology's origin is being watched

    async def start(self) -> None:
        cfg = self.router.topology.router
        backlog = self.backlog
        metrics.attach(self.router)
        if self.mode != "worker":  # one line per router, not per worker
            self._warn_if_capped(backlog)
        listening = []
        if self.mode != "control":
            self.memcache = MemcacheFactory(self.router, self.reactor,
                                            self.router.topology.limits, fd_headroom())
            presize_fd_table(self.router.topology.limits.max_connections + RESERVED_FDS)
        # What start-up made lives as long as the process: frozen out of the collector's
        # sight, a full collection walks only what came since. Unfrozen, it walked the
        # whole start-up heap each time (20 ms of the reactor's time idle, up to 470 ms on
        # a loaded host, measured), long enough for a burst of new connections to overflow
        # the listen backlog. The price: start-up objects that become cyclic garbage
        # later (the first topology's, replaced by a reload) are never collected, a cost
        # bounded by what start-up made.
        gc.collect()
        gc.freeze()
        if self.mode == "single":
            listening.append(tcp_server(self.reactor, cfg.memcache.host, cfg.memcache.port,
                                        cfg.memcache_tls, backlog).listen(self.memcache))
        if self.mode == "worker":
            # Bound at once: the port is shared with the other workers (SO_REUSEPORT).
            self.ports.append(reuseport_listen(self.reactor, cfg.memcache.host,
                                               cfg.memcache.port, self.memcache,
                                               cfg.memcache_tls, backlog))
        else:
            listening.append(tcp_server(self.reactor, cfg.http.host, cfg.http.port,
                                        cfg.http_tls, backlog).listen(build_site(self.router)))
        self.ports += await gatherResults(listening, consumeErrors=True)
        self.router.start()
        self.router.reload_hooks.append(self._pass_on)
        if self.mode == "control":
            topology = self.router.topology
            self.pool = self.router.workers = WorkerPool(
                cfg.workers, topology, self.reader.flags(topology.base_dir), self.reactor)
            await self.pool.start()
        if self.mode != "worker":
            self._watch_origin(self.router.topology)
            serving = (f"memcached on {cfg.memcache} ({cfg.workers} workers)"
                       if self.mode == "control" else f"memcached on {cfg.memcache}")
            scheme = "https" if cfg.http_tls else "http"
            revision = self.router.topology.revision
            print(f"ringcache router: {serving}, HTTP on {scheme}://{cfg.http}, "
                  f"{len(self.router.clients)} nodes, ring digest {self.router.ring.digest}"
                  + (f", topology from {self.router.origin.name} at revision {revision}"
                     if revision is not None else ""), flush=True)

    def reload(self):
        """Re-read the topology (SIGHUP, the file watch, a new etcd revision); None when
        it is refused."""
        try:
            return self.router.reload()
        except Exception:
            return None  # refused: Router.reload logged it and recorded it for /v1/stats

    def apply(self, topology) -> dict:
        """A worker applies the topology its control process has just applied."""
        return self.router.reload(topology)

    @staticmethod
    def _warn_if_capped(backlog: int) -> None:
        warning = capped_warning(backlog)
        if warning:
            log.warn("{warning}", warning=warning)

    def _relisten(self, backlog: int) -> None:
        """A reload's limits.backlog: listen() again on a listening socket sets its backlog."""
        if backlog == self.backlog:
            return
        self.backlog = backlog
        if self.mode != "worker":
            self._warn_if_capped(backlog)
        for port in self.ports:
            port.socket.listen(backlog)

    def _watch_origin(self, topology) -> None:
        """An etcd key is always watched; a file only when ``router.watch`` asks (SIGHUP
        and POST /v1/reload always reload it), and a reload may turn that on or off."""
        origin = self.router.origin
        wanted = origin.kind != "file" or topology.router.watch
        if wanted and not self._watching:
            origin.watch(self.reactor, self.reload)
        elif not wanted and self._watching:
            origin.stop()
        self._watching = wanted

    def _pass_on(self, topology) -> None:
        self._relisten(topology.limits.backlog)
        if self.mode != "worker":
            self._watch_origin(topology)
        if self.memcache is not None:
            self.memcache.apply_limits(topology.limits)
            presize_fd_table(topology.limits.max_connections + RESERVED_FDS)
        if self.pool is not None:
            if topology.router.workers != self.pool.count:
                log.warn("router.workers is {new} in the new topology; the {old} workers "
                         "running keep serving until the router restarts",
                         new=topology.router.workers, old=self.pool.count)
            text = topology.text or Path(topology.path).read_text(encoding="utf-8")
            self.pool.reload(text, topology.path)

    async def stop(self) -> None:
        self.router.origin.stop()
        if self.pool is not None:
            await self.pool.stop()
        # Stop accepting first, then close node connections: reverse order of start.
        await gatherResults([port.stopListening() for port in self.ports], consumeErrors=True)
        self.router.stop()


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="ringcache router", description="Run one ringcache router.")
    parser.add_argument("-c", "--config", default="topology.yaml", metavar="FILE|URL",
                        help="topology file, or etcd://HOST:PORT/KEY (etcd+https:// for TLS): "
                             "read and watched")
    parser.add_argument("--memcache", metavar="ADDR", type=_address,
                        help="listen here for memcached clients instead of router.memcache")
    parser.add_argument("--http", metavar="ADDR", type=_address,
                        help="serve the HTTP API here instead of router.http")
    parser.add_argument("--base-dir", metavar="DIR",
                        help="where relative paths and python: sources in the topology resolve "
                             "(default: the file's directory; for etcd, the working directory)")
    etcd.add_arguments(parser)
    # Set by a control process for its workers (router/process/workers.py), not by people.
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--control", default=None, help=argparse.SUPPRESS)
    return parser


def _address(text: str) -> Address:
    try:
        return Address.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    reader = Reader(args.base_dir, args.memcache, args.http)
    if args.base_dir is not None and not Path(args.base_dir).is_dir():
        print(f"ringcache router: --base-dir {args.base_dir}: no such directory", file=sys.stderr)
        return 2
    from_etcd = etcd.is_etcd_url(args.config)
    topology = None
    try:
        if from_etcd:
            url, credentials = etcd.EtcdURL.parse(args.config), etcd.credentials_from(args)
        else:
            topology = reader.load(args.config)  # a bad file stops us before anything starts
    except (TopologyError, ValueError) as exc:
        print(f"ringcache router: {exc}", file=sys.stderr)
        return 2

    from shared.reactor import install

    install()  # the data plane's reactor, before anything imports one
    from twisted.internet import reactor

    start_logging()
    if from_etcd:
        try:
            from router.config.etcd_origin import EtcdOrigin

            origin = EtcdOrigin(etcd.EtcdClient(url, reactor, credentials), reader, reactor)
        except ValueError as exc:
            print(f"ringcache router: {exc}", file=sys.stderr)
            return 2
    else:
        origin = FileOrigin(args.config, reader)
    status = {"code": 0}
    running: dict = {}

    def refuse(message, code: int = 2) -> None:
        print(f"ringcache router: {message}", file=sys.stderr)
        status["code"] = code
        reactor.stop()

    def started_failed(failure):
        if failure.check(FirstError):
            failure = failure.value.subFailure
        refuse(f"cannot start: {failure.getErrorMessage()}", 1)

    async def start():
        first = topology
        if first is None:
            try:
                first = await origin.first()  # waits for etcd and for a document at the key
            except TopologyError as exc:
                origin.stop()
                return refuse(exc)
        if args.worker is not None:
            mode = "worker"
        else:
            mode = "control" if first.router.workers > 1 else "single"
        try:
            router = Router(first, reactor, origin=origin)
            secure(router, reactor, lambda line: log.warn("{line}", line=line))
        except (ValueError, ImportError) as exc:
            origin.stop()
            return refuse(exc)
        process = running["process"] = RouterProcess(router, reactor, mode, reader)
        await process.start()
        if mode == "worker":
            # Its control process drives it: reloads come from there, and without it the
            # worker has no business serving.
            await connect_to_control(reactor, args.control, process, args.worker,
                                     on_lost=lambda: reactor.running and reactor.stop())

    def startup():
        Deferred.fromCoroutine(start()).addErrback(started_failed)

    def on_hup(signum, frame):
        if "process" in running:
            reactor.callFromThread(running["process"].reload)

    def shutdown():
        if "process" in running:
            return Deferred.fromCoroutine(running["process"].stop())
        origin.stop()

    if args.worker is not None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the control process reloads us
    else:
        signal.signal(signal.SIGHUP, on_hup)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.callWhenRunning(startup)
    reactor.run()
    return status["code"]
