"""Leases and grace on real processes: two routers of two workers each (four router
processes, each with its own singleflight table) in front of two nodes, reading through
a python source whose loads take 0.3 s and which counts them in a file.

- One origin load per cold key for 1,000 readers spread over the four processes.
- No lost write: 1,000 keys each raced, a set during its load through another router;
  and 1,000 more, a database update then a delete during the load: no later get
  answers the older value. (The source holds its loads until the writes are in, so each
  trial is a real race, not a hope of one.)
- A router SIGKILLed holding a lease: a reader on another router gets the value within
  the lease's life plus one load, without an error.
- stale_if_error: with the origin failing, every key past its ttl is answered, 0 errors.
- stale_while_revalidate: an expired key is answered as fast as a hit while its source
  takes 0.3 s, and exactly one refresh brings the new value.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import RINGCACHE, free_port, port_open, start_process, stop_process, wait_for

pytestmark = pytest.mark.integration

SOURCE = '''
import os

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

HERE = os.path.dirname(os.path.abspath(__file__))
LOG, DB = os.path.join(HERE, "loads.log"), os.path.join(HERE, "db")
HOLD, FAIL = os.path.join(HERE, "hold"), os.path.join(HERE, "fail")
_held = []
_poll = None


def _release():
    global _poll
    if os.path.exists(HOLD):
        return
    _poll.stop()
    _poll = None
    waiting, _held[:] = list(_held), []
    for d in waiting:
        d.callback(None)


async def load(key):
    """The database: db/KEY if written, else old-KEY, read as the load starts; then 0.3 s,
    and longer while the hold file exists."""
    global _poll
    with open(LOG, "a") as f:
        f.write(key + "\\n")
    path = os.path.join(DB, key)
    value = open(path).read() if os.path.exists(path) else "old-" + key
    await task.deferLater(reactor, 0.3, lambda: None)
    if os.path.exists(HOLD):
        d = Deferred()
        _held.append(d)
        if _poll is None:
            _poll = task.LoopingCall(_release)
            _poll.start(0.02)
        await d
    if os.path.exists(FAIL):
        raise RuntimeError("the origin is down")
    return value
'''

GROUPS = """
groups:
  scores:
    source: {python: origin:load, timeout: 10s, concurrency: 2000, queue: 2000}
  killed:
    source: {python: origin:load, timeout: 1s}
  sie:
    ttl: 1s
    stale_if_error: 1m
    source: {python: origin:load, timeout: 2s}
  swr:
    ttl: 1s
    stale_while_revalidate: 1m
    source: {python: origin:load, timeout: 2s}
"""


class Cluster:
    """Two nodes, and routers started from one topology file on ports of their own."""

    def __init__(self, directory):
        self.dir = directory
        (directory / "origin.py").write_text(SOURCE)
        (directory / "db").mkdir()
        self.node_ports = [free_port(), free_port()]
        self.nodes, self.routers = [], []

    def topology(self, name: str, workers: int) -> str:
        nodes = "\n".join(f"  - {{name: node-{i}, address: 127.0.0.1:{port}}}"
                          for i, port in enumerate(self.node_ports))
        path = self.dir / name
        path.write_text(textwrap.dedent(f"""\
            router:
              timeout: 500ms
              default_group: scores
              workers: {workers}
            """) + f"nodes:\n{nodes}\n" + GROUPS)
        return str(path)

    def start(self) -> Cluster:
        for port in self.node_ports:
            self.nodes.append(start_process([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}"],
                                            lambda port=port: port_open(port), timeout=30))
        shared = self.topology("topology.yaml", 2)
        for _ in range(2):
            self.add_router(shared)
        return self

    def add_router(self, topology: str) -> Router:
        router = Router(free_port(), free_port())
        router.proc = start_process(
            [*RINGCACHE, "router", "-c", topology, "--memcache", f"127.0.0.1:{router.memcache}",
             "--http", f"127.0.0.1:{router.http}"], router.ready, timeout=30)
        self.routers.append(router)
        return router

    def stop(self) -> None:
        for proc in [r.proc for r in self.routers] + self.nodes:
            if proc is not None:
                stop_process(proc)

    def loads(self, key=None) -> list[str]:
        log = self.dir / "loads.log"
        keys = log.read_text().split() if log.exists() else []
        return keys if key is None else [k for k in keys if k == key]

    def hold(self, on: bool) -> None:
        if on:
            (self.dir / "hold").touch()
        else:
            (self.dir / "hold").unlink()

    def write_db(self, key: str, value: str) -> None:
        (self.dir / "db" / key).write_text(value)

    def node_leases(self) -> dict:
        """Each node's lease counters, from a router's /v1/stats."""
        nodes = self.routers[0].json("/v1/stats")["nodes"]
        return {name: stats["leases"] for name, stats in nodes.items()}


class Router:
    def __init__(self, memcache: int, http: int):
        self.memcache, self.http, self.proc = memcache, http, None

    def json(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return r.status, r.read(), r.headers.get("Cache-Status")

    def ready(self) -> bool:
        if not (port_open(self.http) and port_open(self.memcache)):
            return False
        try:
            ring = self.json("/v1/ring")
        except OSError:
            return False
        return all(n["healthy"] for n in ring["nodes"]) and all(
            w["up"] for w in ring.get("workers") or [])

    def pids(self) -> list[int]:
        return [w["pid"] for w in self.json("/v1/ring").get("workers") or []] + [self.proc.pid]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("leases")).start()
    yield c
    c.stop()


# -- a memcached client of many connections at once (asyncio) --------------------------------


async def _exchange(port: int, commands: list[bytes], answers: int) -> bytes:
    """Send ``commands`` on one connection and read until ``answers`` END/STORED/... lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(commands))
    await writer.drain()
    out, seen = b"", 0
    while seen < answers:
        line = await asyncio.wait_for(reader.readline(), 30)
        assert line, out
        out += line
        if line in (b"END\r\n", b"STORED\r\n", b"DELETED\r\n", b"NOT_FOUND\r\n") or (
                line.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR"))):
            seen += 1
    writer.close()
    return out


def values(answer: bytes) -> dict[str, str]:
    """{key: value} of the VALUE lines of get answers."""
    lines = answer.split(b"\r\n")
    return {lines[i].split()[1].decode(): lines[i + 1].decode()
            for i in range(len(lines)) if lines[i].startswith(b"VALUE ")}


def gets(cluster, router: int, keys: list[str], connections: int = 8) -> dict[str, str]:
    """Every key read through router ``router``, spread over ``connections`` connections."""
    async def run():
        port = cluster.routers[router].memcache
        shares = [keys[i::connections] for i in range(connections)]
        outs = await asyncio.gather(*[_exchange(port, [b"get %s\r\n" % k.encode() for k in share],
                                                len(share)) for share in shares if share])
        found = {}
        for out in outs:
            assert b"ERROR" not in out, out
            found.update(values(out))
        return found
    return asyncio.run(run())


# -- one load per key, across every router process ------------------------------------------


def test_a_thousand_readers_over_four_router_processes_make_one_origin_load(cluster):
    async def run():
        conns = [await asyncio.open_connection("127.0.0.1", cluster.routers[i % 2].memcache)
                 for i in range(1000)]
        for _, writer in conns:  # all of them, before any answer can come back
            writer.write(b"get herd\r\n")
        await asyncio.gather(*[writer.drain() for _, writer in conns])
        answers = await asyncio.gather(*[reader.readuntil(b"END\r\n") for reader, _ in conns])
        for _, writer in conns:
            writer.close()
        return answers

    answers = asyncio.run(run())
    assert all(a == b"VALUE herd 0 8\r\nold-herd\r\nEND\r\n" for a in answers)
    assert cluster.loads("herd") == ["herd"]
    # Readers of other processes waited at the node for the one load: at most one per
    # process (singleflight), at least one (they came from four processes at once).
    leases = cluster.node_leases()
    assert sum(int(n.get("granted", 0)) for n in leases.values()) >= 1
    assert 1 <= sum(int(n.get("parked", 0)) for n in leases.values()) <= 3


# -- no lost writes ------------------------------------------------------------------------------


def _race(cluster, keys: list[str], write) -> dict[str, str]:
    """Start a load of every key through router 0, hold the loads, ``write(keys)``
    through router 1, let the loads go; then what both routers answer."""
    cluster.hold(True)

    async def first_reads():
        return await asyncio.gather(*[
            _exchange(cluster.routers[0].memcache, [b"get %s\r\n" % k.encode() for k in share],
                      len(share)) for share in (keys[i::10] for i in range(10))])

    async def run():
        reads = asyncio.ensure_future(first_reads())
        await asyncio.to_thread(wait_for, lambda: set(keys) <= set(cluster.loads()), 60)
        await write(keys)  # every key's load is under way, held
        cluster.hold(False)
        return await reads

    outs = asyncio.run(run())
    assert all(b"ERROR" not in out for out in outs)
    later = {}
    for router in (0, 1):
        later[router] = gets(cluster, router, keys)
    assert later[0] == later[1]
    return later[0]


def test_a_set_during_a_load_through_another_router_is_never_lost(cluster):
    keys = [f"set-{i}" for i in range(1000)]

    async def set_all(keys):
        stored = await asyncio.gather(*[
            _exchange(cluster.routers[1].memcache,
                      [b"set %s 0 0 3\r\nnew\r\n" % k.encode() for k in share], len(share))
            for share in (keys[i::10] for i in range(10))])
        assert sum(out.count(b"STORED\r\n") for out in stored) == len(keys)

    after = _race(cluster, keys, set_all)
    lost = [k for k in keys if after.get(k) != "new"]
    assert lost == []
    assert len(cluster.loads()) >= len(keys)  # each trial raced a real load


def test_a_database_update_then_delete_during_a_load_is_never_lost(cluster):
    keys = [f"del-{i}" for i in range(1000)]

    async def update_then_delete(keys):
        for key in keys:
            cluster.write_db(key, "new-" + key)
        deleted = await asyncio.gather(*[
            _exchange(cluster.routers[1].memcache,
                      [b"delete %s\r\n" % k.encode() for k in share], len(share))
            for share in (keys[i::10] for i in range(10))])
        assert all(b"ERROR" not in out for out in deleted)

    after = _race(cluster, keys, update_then_delete)
    stale = [k for k in keys if after.get(k) != "new-" + k]
    assert stale == []
    dropped = sum(int(n.get("fills_dropped", 0)) for n in cluster.node_leases().values())
    assert dropped >= len(keys)  # the loads that read the old row were not cached


# -- a lease holder that dies ----------------------------------------------------------------------


def test_a_router_killed_holding_a_lease_delays_a_reader_elsewhere_by_one_lease(cluster):
    doomed = cluster.add_router(cluster.topology("single.yaml", 1))
    cluster.hold(True)
    try:
        async def run():
            holder = asyncio.ensure_future(_exchange(doomed.memcache, [b"get killed:k\r\n"], 1))
            await asyncio.to_thread(wait_for, lambda: cluster.loads("k"), 30)
            reader = asyncio.ensure_future(_exchange(cluster.routers[0].memcache,
                                                     [b"get killed:k\r\n"], 1))
            await asyncio.sleep(0.2)  # the reader is waiting at the node
            for pid in doomed.pids():
                os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            cluster.hold(False)
            answer = await reader
            holder.cancel()
            return answer, time.monotonic() - started

        answer, waited = asyncio.run(run())
    finally:
        if (cluster.dir / "hold").exists():
            cluster.hold(False)
        doomed.proc.wait(10)
    assert answer == b"VALUE killed:k 0 5\r\nold-k\r\nEND\r\n"
    # The lease lives the source's timeout (1 s) and the margin (1 s); then the reader is
    # handed it and loads (0.3 s).
    assert waited < 2.0 + 0.3 + 1.5
    assert cluster.loads("k") == ["k", "k"]
    assert sum(int(n.get("handed_on", 0)) for n in cluster.node_leases().values()) >= 1


# -- grace ------------------------------------------------------------------------------------------


def test_with_the_origin_failing_every_key_within_stale_if_error_is_answered(cluster):
    keys = [f"sie:s{i}" for i in range(50)]
    assert gets(cluster, 0, keys) == {k: "old-" + k.split(":")[1] for k in keys}
    time.sleep(1.2)  # past every key's ttl
    (cluster.dir / "fail").touch()
    try:
        for router in (0, 1):
            assert gets(cluster, router, keys) == {k: "old-" + k.split(":")[1] for k in keys}
        status, body, cache_status = cluster.routers[1].get("/v1/sie/s0")
        assert (status, body) == (200, b"old-s0")
        assert cache_status == "ringcache; fwd=stale; detail=stale-if-error"
        # A key never loaded has nothing stale to answer: the origin really is down.
        with pytest.raises(urllib.error.HTTPError) as failed:
            cluster.routers[0].get("/v1/sie/never")
        assert failed.value.code == 502
    finally:
        (cluster.dir / "fail").unlink()
    stale = cluster.routers[0].json("/v1/stats")["router"]["groups"]["sie"]["stale_answers"]
    assert stale.get("if_error", 0) >= 1


def test_within_stale_while_revalidate_an_expired_key_is_answered_at_once_and_refreshed_once(cluster):
    router = cluster.routers[0]
    assert router.get("/v1/swr/k")[1] == b"old-k"
    cluster.write_db("k", "new-k")
    time.sleep(1.2)  # past its ttl
    before = len(cluster.loads("k"))
    cluster.hold(True)  # the refresh cannot end until the test says so
    try:
        for i in range(10):
            started = time.monotonic()
            status, body, cache_status = cluster.routers[i % 2].get("/v1/swr/k")
            # Answered while the refresh is held: it did not wait for the source at all.
            assert (status, body) == (200, b"old-k")
            assert cache_status == "ringcache; hit; detail=stale-while-revalidate"
            assert time.monotonic() - started < 1.0
        assert len(cluster.loads("k")) == before + 1  # one refresh for all of them
    finally:
        cluster.hold(False)
    wait_for(lambda: router.get("/v1/swr/k")[1] == b"new-k")
    assert len(cluster.loads("k")) == before + 1  # exactly one refresh
    status, body, cache_status = router.get("/v1/swr/k")
    assert (body, cache_status) == (b"new-k", "ringcache; hit")
    stale = router.json("/v1/stats")["router"]["groups"]["swr"]["stale_answers"]
    assert stale.get("revalidate", 0) >= 1
