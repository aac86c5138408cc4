"""What `ringcache up` runs: this host's nodes and one router, following the router's ring.

Once the router serves and has tried every node, `up` prints where to connect (and which
nodes are down). Then it asks the router for its ring each second: a reload that added a
node on this host starts it; one that removed a node stops it once the router has let go
(its warm-up window over). A child that ends before it served (router/process/supervise.py)
cannot start for a reason a restart will not fix: `up` says why in one line and exits
non-zero, 2 when the child said its input was bad, else 1.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from router.cli.children import banner, node_spec, plan_children, reachable
from router.config.topology import Address, TopologyError, load_topology
from router.http.admin_token import TokenUnavailable, read_token
from router.process.supervise import LOG_PREFIX, Child

FOLLOW_EVERY = 1.0  # seconds between looks at the router's ring
FIRST_PROBE = 5.0  # seconds the banner waits for the router to have tried every node


@implementer(IPolicyForHTTPS)
class _OwnRouter:
    """HTTPS to the router `up` itself started on this host, only to learn its state: its
    certificate, which may name another host, is not checked."""

    def creatorForNetloc(self, hostname, port):
        return CertificateOptions()


class Standalone:
    def __init__(self, reactor, topology, launcher, on_this_host, write=None, env=None):
        self.reactor = reactor
        self.topology = topology
        self.launcher = launcher
        self.on_this_host = on_this_host
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        # Unbuffered, so a child's lines reach us as it writes them rather than at exit.
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.nodes: dict[str, tuple[str, Child]] = {}  # name -> (address, its child)
        self.router: Child | None = None
        self.exit_code = 0
        self.stopping = False
        self.digest: str | None = None
        tls = topology.router.http_tls is not None
        self.agent = Agent(reactor, _OwnRouter()) if tls else Agent(reactor)
        self.base = f"{'https' if tls else 'http'}://{reachable(topology.router.http)}"

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve until Ctrl-C, SIGTERM or a child that cannot start; the exit status."""
        reactor = self.reactor
        # The reactor waits for this Deferred before it stops, so every child is gone
        # when run() returns.
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        reactor.callWhenRunning(self._begin)
        reactor.run()
        return self.exit_code

    def _begin(self) -> None:
        # Replace the reactor's SIGINT/SIGTERM handlers (installed at startup) with ones that
        # act once. Children stay in our process group, so a terminal's Ctrl-C reaches them
        # too; a child that exits before we stop it is restarted only after a delay, which
        # the shutdown cancels.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.reactor.callFromThread(self.shutdown))
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self._forward_hup))
        self.start()
        Deferred.fromCoroutine(self._watch()).addErrback(self._watch_failed)

    def start(self) -> None:
        """Start this host's nodes, then the router."""
        specs, remote = plan_children(self.topology, self.launcher, self.on_this_host)
        for node in remote:
            self.write(f"{LOG_PREFIX}{node.name} at {node.address} is not on this host; "
                       "not starting it")
        for spec in specs[:-1]:
            self._start_node(spec)
        self.router = self._child(specs[-1])
        self.router.start()

    def shutdown(self, code: int | None = None) -> None:
        # Once only: a second Ctrl-C while children stop must not stop a stopped reactor.
        if code is not None and not self.exit_code:
            self.exit_code = code
        if not self.stopping:
            self.stopping = True
            self.reactor.stop()

    def stop(self) -> Deferred:
        """The router first, so that it lets go of the nodes before they go: no node is
        reported down at shutdown. Then every node."""
        router = self.router.stop() if self.router is not None else Deferred()
        if self.router is None:
            router.callback(None)
        return router.addBoth(lambda _: DeferredList(
            [child.stop() for _, child in self.nodes.values()]))

    def _child(self, spec) -> Child:
        return Child(spec, self.reactor, self.write, self.env,
                     on_failed_start=self._failed_start)

    def _start_node(self, spec) -> None:
        child = self._child(spec)
        self.nodes[spec.name] = (spec.argv[spec.argv.index("--listen") + 1], child)
        child.start()

    def _failed_start(self, child: Child, status: str, code: int | None) -> None:
        if self.stopping:
            return
        why = f": {child.last_line}" if child.last_line else ""
        self.write(f"{LOG_PREFIX}{child.spec.name} could not start ({status} before it "
                   f"was serving){why}")
        self.shutdown(2 if code == 2 else 1)

    def _forward_hup(self) -> None:
        if self.router is not None and self.router.signal("HUP"):
            self.write(f"{LOG_PREFIX}forwarded SIGHUP to the router (pid {self.router.pid}): "
                       "reloading the topology")

    def _watch_failed(self, failure) -> None:
        if not self.stopping:
            self.write(f"{LOG_PREFIX}stopped following the topology: {failure.getErrorMessage()}")

    # -- following the router ----------------------------------------------------------

    async def _watch(self) -> None:
        while (await self._get("/healthz"))[0] != 200:
            await deferLater(self.reactor, 0.2)
        ring = await self._ring()
        deadline = self.reactor.seconds() + FIRST_PROBE
        while ring is not None and self.reactor.seconds() < deadline and any(
                n["state"] in ("connecting", "probing") for n in ring["nodes"]):
            await deferLater(self.reactor, 0.2)
            ring = await self._ring()
        down = {n["name"]: n.get("down_reason") or n["state"] for n in (ring or {}).get("nodes", [])
                if n["state"] != "up"}
        self.digest = ring["digest"] if ring else None
        print(banner(self.topology, len(self.nodes), self.digest, down), end="", flush=True)
        while not self.stopping:
            await deferLater(self.reactor, FOLLOW_EVERY)
            ring = await self._ring()
            if ring is not None and not self.stopping:
                self.follow(ring)

    def follow(self, ring: dict) -> None:
        """Start this host's nodes the ring has and `up` does not run; stop those it
        no longer has, once its warm-up (which still reads them) is over."""
        if ring["digest"] != self.digest:
            self.digest = ring["digest"]
            try:
                self.topology = load_topology(self.topology.path)
            except TopologyError:
                pass  # edited again since the reload: the ring says what the router runs
        wanted = {n["name"]: n["address"] for n in ring["nodes"]
                  if n["name"] in self.nodes or self.on_this_host(Address.parse(n["address"]).host)}
        for name, address in wanted.items():
            running = self.nodes.get(name)
            if running is not None and running[0] == address:
                continue
            if running is not None:
                self.write(f"{LOG_PREFIX}{name} moved to {address}; restarting it there")
                running[1].stop()
            else:
                self.write(f"{LOG_PREFIX}{name} joined the ring; starting it")
            self._start_node(node_spec(self.topology, name, address, self.launcher))
        if (ring.get("warmup") or {}).get("active"):
            return
        for name in [n for n in self.nodes if n not in wanted]:
            self.write(f"{LOG_PREFIX}{name} left the ring; stopping it")
            self.nodes.pop(name)[1].stop()

    async def _ring(self) -> dict | None:
        code, body = await self._get("/v1/ring")
        try:
            return json.loads(body) if code == 200 else None
        except ValueError:
            return None

    async def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """Status and body of GET ``path`` from our router; status 0 when there is no answer."""
        headers = Headers()
        try:
            token = read_token(self.topology.security.token_file, os.environ)
        except TokenUnavailable:
            token = None
        if token is not None:
            headers.addRawHeader(b"Authorization", b"Bearer " + token)
        request = self.agent.request(b"GET", (self.base + path).encode(), headers)
        request.addCallback(lambda response: readBody(response).addCallback(
            lambda body: (response.code, body)))
        try:
            return await request.addTimeout(timeout, self.reactor)
        except Exception:  # refused, reset or timed out: the router is not up (yet)
            return 0, b""

