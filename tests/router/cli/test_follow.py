"""`ringcache up` following its router's ring, on a fake clock that also spawns processes."""

from __future__ import annotations

from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from router.cli.follow import Standalone
from router.config.topology import load_topology


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.runs = []  # (protocol, process, argv)
        self.stopped = False

    def spawnProcess(self, protocol, executable, args, env=None):
        process = FakeProcess(1000 + len(self.runs))
        protocol.makeConnection(process)
        self.runs.append((protocol, process, args))
        return process

    def stop(self):
        self.stopped = True


def standalone(tmp_path, names=("node-a",)):
    path = tmp_path / "topology.yaml"
    nodes = "".join(f"  - {{name: {n}, address: 127.0.0.1:{7001 + i}}}\n" for i, n in enumerate(names))
    path.write_text("router: {default_group: s}\nnodes:\n" + nodes + "groups: {s: {max_bytes: 1MiB}}\n")
    reactor, lines = FakeReactor(), []
    up = Standalone(reactor, load_topology(path), ("rc",), lambda host: host == "127.0.0.1",
                    write=lines.append, env={})
    return up, reactor, lines, path


def ring(digest, nodes, warmup=False):
    return {"digest": digest, "warmup": {"active": warmup},
            "nodes": [{"name": n, "address": a, "state": "up"} for n, a in nodes]}


def listens(reactor, run: int, line: bytes) -> None:
    reactor.runs[run][0].childDataReceived(1, line + b"\n")


def test_a_node_added_on_this_host_is_started_and_one_removed_is_stopped_after_warmup(tmp_path):
    up, reactor, lines, path = standalone(tmp_path)
    up.start()
    assert [run[2][1:4] for run in reactor.runs] == [("node", "--listen", "127.0.0.1:7001"),
                                                      ("router", "-c", str(path))]
    up.digest = "d1"
    up.follow(ring("d1", [("node-a", "127.0.0.1:7001")]))
    assert len(reactor.runs) == 2
    # The operator added node-b (here) and node-x (another host), and reloaded.
    path.write_text(path.read_text().replace("groups: {s: {max_bytes: 1MiB}}",
                                             "groups: {s: {max_bytes: 2MiB}}"))
    up.follow(ring("d2", [("node-a", "127.0.0.1:7001"), ("node-b", "127.0.0.1:7009"),
                          ("node-x", "10.9.9.9:7001")]))
    [(_, _, argv)] = reactor.runs[2:]
    assert argv[1:6] == ("node", "--listen", "127.0.0.1:7009", "--max-memory", "2MiB")
    assert "ringcache up: node-b joined the ring; starting it" in lines
    # Removed, but the router still reads it while it warms up the new ring.
    up.follow(ring("d3", [("node-a", "127.0.0.1:7001")], warmup=True))
    assert reactor.runs[2][1].signals == []
    up.follow(ring("d3", [("node-a", "127.0.0.1:7001")]))
    assert reactor.runs[2][1].signals == ["TERM"]
    assert lines[-1] == "ringcache up: node-b left the ring; stopping it"
    assert sorted(up.nodes) == ["node-a"]


def test_a_child_that_never_served_stops_up_with_one_line_and_its_status(tmp_path):
    up, reactor, lines, _ = standalone(tmp_path)
    up.start()
    listens(reactor, 0, b"ringcache node listening on 127.0.0.1:7001")
    router = reactor.runs[1][0]
    router.childDataReceived(2, b"ringcache router: cannot start: Couldn't listen on "
                                b"127.0.0.1:8080: [Errno 98] Address already in use.\n")
    router.processEnded(Failure(ProcessTerminated(exitCode=1)))
    assert lines[-1] == ("ringcache up: router could not start (exited with status 1 before it "
                         "was serving): ringcache router: cannot start: Couldn't listen on "
                         "127.0.0.1:8080: [Errno 98] Address already in use.")
    assert (reactor.stopped, up.exit_code) == (True, 1)


def test_bad_input_to_a_child_is_exit_status_2(tmp_path):
    up, reactor, lines, _ = standalone(tmp_path)
    up.start()
    router = reactor.runs[1][0]
    router.childDataReceived(2, b"ringcache router: t.yaml: groups.s.source: No module named 'x'\n")
    router.processEnded(Failure(ProcessTerminated(exitCode=2)))
    assert (reactor.stopped, up.exit_code) == (True, 2)


def test_a_node_that_crashes_after_serving_is_restarted_not_fatal(tmp_path):
    up, reactor, lines, _ = standalone(tmp_path)
    up.start()
    listens(reactor, 0, b"ringcache node listening on 127.0.0.1:7001")
    reactor.runs[0][0].processEnded(Failure(ProcessTerminated(exitCode=1)))
    assert not reactor.stopped
    reactor.advance(1)
    assert reactor.runs[-1][2][1:4] == ("node", "--listen", "127.0.0.1:7001")


def test_shutdown_stops_the_router_before_the_nodes(tmp_path):
    up, reactor, lines, _ = standalone(tmp_path)
    up.start()
    node, router = reactor.runs[0][1], reactor.runs[1][1]
    up.stop()
    assert (router.signals, node.signals) == (["TERM"], [])  # the nodes wait for the router
    reactor.runs[1][0].processEnded(Failure(ProcessTerminated(exitCode=0)))
    assert node.signals == ["TERM"]
