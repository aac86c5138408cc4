"""`ringcache router`: one router process serving memcached and HTTP from a topology file."""

from __future__ import annotations

import signal
import sys

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger

from router.core import Router
from router.http_api import build_site
from router.memcache_server import MemcacheFactory
from router.security import secure
from router.topology import TopologyError, load_topology
from router.watch import FileWatch
from shared.cli import ArgumentParser, start_logging
from shared.connections import fd_headroom
from shared.net import tcp_server

log = Logger()


class RouterProcess:
    """The running router: listeners, the core, the file watch, and signal handling."""

    def __init__(self, router: Router, reactor):
        self.router = router
        self.reactor = reactor
        self.ports = []
        self.memcache = None
        self.watch = FileWatch(router.topology.path, self.reload, reactor)

    async def start(self) -> None:
        cfg = self.router.topology.router
        self.router.stats.attach(self.router)
        self.memcache = MemcacheFactory(self.router, self.reactor, self.router.topology.limits,
                                        fd_headroom())
        self.ports = await gatherResults([
            tcp_server(self.reactor, cfg.memcache.host, cfg.memcache.port,
                       cfg.memcache_tls).listen(self.memcache),
            tcp_server(self.reactor, cfg.http.host, cfg.http.port, cfg.http_tls).listen(
                build_site(self.router)),
        ], consumeErrors=True)
        self.router.start()
        self.watch.start()
        print(f"ringcache router: memcached on {cfg.memcache}, HTTP on http://{cfg.http}, "
              f"{len(self.router.clients)} nodes, ring digest {self.router.ring.digest}",
              flush=True)

    def reload(self):
        try:
            result = self.router.reload()
        except Exception:
            return None  # refused: Router.reload logged it and recorded it for /v1/stats
        if self.memcache is not None:
            self.memcache.apply_limits(self.router.topology.limits)
        return result

    async def stop(self) -> None:
        self.watch.stop()
        # Stop accepting first, then close node connections: reverse order of start.
        await gatherResults([port.stopListening() for port in self.ports], consumeErrors=True)
        self.router.stop()


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="ringcache router", description="Run one ringcache router.")
    parser.add_argument("-c", "--config", default="topology.yaml", help="topology file")
    args = parser.parse_args(argv)
    try:
        topology = load_topology(args.config)
    except TopologyError as exc:
        print(f"ringcache router: {exc}", file=sys.stderr)
        return 2

    from twisted.internet import reactor

    start_logging()
    try:
        router = Router(topology, reactor)
        secure(router, reactor, lambda line: log.warn("{line}", line=line))
    except (ValueError, ImportError) as exc:
        print(f"ringcache router: {exc}", file=sys.stderr)
        return 2
    process = RouterProcess(router, reactor)
    status = {"code": 0}

    def started_failed(failure):
        if failure.check(FirstError):
            failure = failure.value.subFailure
        print(f"ringcache router: cannot start: {failure.getErrorMessage()}", file=sys.stderr)
        status["code"] = 1
        reactor.stop()

    def startup():
        Deferred.fromCoroutine(process.start()).addErrback(started_failed)

    def on_hup(signum, frame):
        reactor.callFromThread(process.reload)

    signal.signal(signal.SIGHUP, on_hup)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(process.stop()))
    reactor.callWhenRunning(startup)
    reactor.run()
    return status["code"]
