"""`ringcache router`: one router process serving memcached and HTTP from a topology file."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from pathlib import Path

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger

from router.cluster.router import Router
from router.http.api import build_site
from router.memcache.server import MemcacheFactory
from router.process.security import secure
from router.config.topology import TopologyError, load_topology
from router.config.watch import FileWatch
from router.process.workers import WorkerPool, connect_to_control, reuseport_listen
from shared.backlog import capped_warning
from shared.cli import ArgumentParser, start_logging
from shared.connections import RESERVED_FDS, fd_headroom, presize_fd_table
from shared.net import tcp_server

log = Logger()


class RouterProcess:
    """The running router: listeners, the core, the file watch, and signal handling.

    ``mode`` is "single" (one process serves everything: the default), "control" (with
    ``router.workers`` > 1: the HTTP API, the file watch and the workers, which serve the
    memcached port) or "worker" (one of those: the memcached port only, reloaded by its
    control process). See router/process/workers.py.
    """

    def __init__(self, router: Router, reactor, mode: str = "single"):
        self.router = router
        self.reactor = reactor
        self.mode = mode
        self.ports = []
        self.backlog = router.topology.limits.backlog  # the listeners' (shared/backlog.py)
        self.memcache = None
        self.pool = None
        self.watch = FileWatch(router.topology.path, self.reload, reactor)

    async def start(self) -> None:
        cfg = self.router.topology.router
        backlog = self.backlog
        self.router.stats.attach(self.router)
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
            self.pool = self.router.workers = WorkerPool(cfg.workers, self.router.topology.path,
                                                         self.reactor)
            await self.pool.start()
        if self.mode != "worker":
            self.watch.start()
            serving = (f"memcached on {cfg.memcache} ({cfg.workers} workers)"
                       if self.mode == "control" else f"memcached on {cfg.memcache}")
            scheme = "https" if cfg.http_tls else "http"
            print(f"ringcache router: {serving}, HTTP on {scheme}://{cfg.http}, "
                  f"{len(self.router.clients)} nodes, ring digest {self.router.ring.digest}",
                  flush=True)

    def reload(self):
        """Re-read the topology file (SIGHUP, the file watch); None when it is refused."""
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

    def _pass_on(self, topology) -> None:
        self._relisten(topology.limits.backlog)
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
        self.watch.stop()
        if self.pool is not None:
            await self.pool.stop()
        # Stop accepting first, then close node connections: reverse order of start.
        await gatherResults([port.stopListening() for port in self.ports], consumeErrors=True)
        self.router.stop()


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="ringcache router", description="Run one ringcache router.")
    parser.add_argument("-c", "--config", default="topology.yaml", help="topology file")
    # Set by a control process for its workers (router/process/workers.py), not by people.
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--control", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        topology = load_topology(args.config)
    except TopologyError as exc:
        print(f"ringcache router: {exc}", file=sys.stderr)
        return 2

    from shared.reactor import install

    install()  # the data plane's reactor, before anything imports one
    from twisted.internet import reactor

    start_logging()
    if args.worker is not None:
        mode = "worker"
    else:
        mode = "control" if topology.router.workers > 1 else "single"
    try:
        router = Router(topology, reactor)
        secure(router, reactor, lambda line: log.warn("{line}", line=line))
    except (ValueError, ImportError) as exc:
        print(f"ringcache router: {exc}", file=sys.stderr)
        return 2
    process = RouterProcess(router, reactor, mode)
    status = {"code": 0}

    def started_failed(failure):
        if failure.check(FirstError):
            failure = failure.value.subFailure
        print(f"ringcache router: cannot start: {failure.getErrorMessage()}", file=sys.stderr)
        status["code"] = 1
        reactor.stop()

    async def start():
        await process.start()
        if mode == "worker":
            # Its control process drives it: reloads come from there, and without it the
            # worker has no business serving.
            await connect_to_control(reactor, args.control, process, args.worker,
                                     on_lost=lambda: reactor.running and reactor.stop())

    def startup():
        Deferred.fromCoroutine(start()).addErrback(started_failed)

    def on_hup(signum, frame):
        reactor.callFromThread(process.reload)

    if mode == "worker":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the control process reloads us
    else:
        signal.signal(signal.SIGHUP, on_hup)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(process.stop()))
    reactor.callWhenRunning(startup)
    reactor.run()
    return status["code"]
