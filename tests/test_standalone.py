"""`ringcache up`: planning, supervision with a fake clock, the demo source, and the real processes."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import time
import urllib.request

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from examples import demo
from router.cli.up import (
    banner,
    can_bind,
    is_on_this_host,
    main,
    node_max_memory,
    plan_children,
)
from router.config.topology import parse_topology
from router.process.supervise import Backoff, Child, ChildSpec
from tests.helpers import RINGCACHE, Process, free_port, port_open, stop_process

ip = ipaddress.ip_address


def make_topology(router=None, nodes=None, groups=None, path="/etc/ringcache/topology.yaml"):
    return parse_topology(
        {
            "router": router or {"default_group": "scores"},
            "nodes": nodes or [{"name": "node-a", "address": "127.0.0.1:7001"}],
            "groups": groups or {"scores": {}},
        },
        path,
    )


# --- which nodes are on this host -------------------------------------------------------


def no_resolve(host):
    raise AssertionError(f"resolved {host!r}")


def no_bind(address):
    return False


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LocalHost", "box7", "BOX7"])
def test_loopback_and_own_names_are_local_without_a_lookup(host):
    assert is_on_this_host(host, hostname="box7", resolve=no_resolve, bindable=no_bind)


def test_a_name_is_local_when_it_resolves_to_loopback_or_a_bindable_address():
    addresses = {"lo.example": [ip("127.0.1.1")], "me.example": [ip("10.0.0.5"), ip("fd00::5")],
                 "far.example": [ip("10.0.0.6")], "gone.example": []}
    local = {ip("fd00::5")}

    def check(host):
        return is_on_this_host(host, hostname="box7", resolve=addresses.__getitem__, bindable=local.__contains__)

    assert [check(h) for h in addresses] == [True, True, False, False]
    assert (check("fd00::5"), check("10.0.0.6")) == (True, False)


def test_can_bind_only_to_addresses_of_this_machine():
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never on an interface.
    assert (can_bind(ip("127.0.0.1")), can_bind(ip("192.0.2.1"))) == (True, False)


# --- what to start -----------------------------------------------------------------------


def test_max_memory_is_the_sum_of_every_groups_budget():
    topology = make_topology(groups={"scores": {"max_bytes": "64MiB"}, "sessions": {"max_bytes": "1KiB"},
                                     "misc": {}})
    assert node_max_memory(topology) == (64 << 20) + 1024 + (64 << 20)  # misc takes the 64MiB default


def test_plan_starts_local_nodes_then_the_router_and_skips_remote_ones():
    topology = make_topology(
        nodes=[{"name": "node-a", "address": "127.0.0.1:7001"},
               {"name": "node-b", "address": "10.9.9.9:7002"},
               {"name": "node-c", "address": "[::1]:7003"}],
        groups={"scores": {"max_bytes": "64MiB"}, "sessions": {"max_bytes": "64MiB"}},
    )
    children, remote = plan_children(topology, ("rc",), lambda host: host != "10.9.9.9")
    assert children == [
        ChildSpec("node-a", ("rc", "node", "--listen", "127.0.0.1:7001", "--max-memory", "128MiB")),
        ChildSpec("node-c", ("rc", "node", "--listen", "[::1]:7003", "--max-memory", "128MiB")),
        ChildSpec("router", ("rc", "router", "-c", "/etc/ringcache/topology.yaml")),
    ]
    assert [node.name for node in remote] == ["node-b"]


def test_banner_says_where_to_connect():
    topology = make_topology(
        router={"default_group": "scores", "memcache": "0.0.0.0:11311", "http": "127.0.0.1:8181"},
        nodes=[{"name": "node-a", "address": "127.0.0.1:7001"}, {"name": "node-b", "address": "10.1.1.1:7001"}],
    )
    assert banner(topology, 1, "d1g3st") == (
        "ringcache is up: 2 nodes (1 on this host), router digest d1g3st\n"
        "  memcached:  127.0.0.1:11311   (e.g. printf 'get scores:42\\r\\n' | nc 127.0.0.1 11311)\n"
        "  HTTP:       http://127.0.0.1:8181/v1/scores/42\n"
        "  stats:      http://127.0.0.1:8181/v1/stats\n"
        "  stop:       Ctrl-C\n"
    )
    assert banner(make_topology(), 1, None).splitlines()[0] == "ringcache is up: 1 node"


# --- bad input -----------------------------------------------------------------------------


def test_an_invalid_topology_is_one_line_on_stderr_and_exit_2(tmp_path, capsys):
    path = tmp_path / "topology.yaml"
    path.write_text("router: {default_group: nope}\nnodes: [{name: a, address: 127.0.0.1:7001}]\ngroups: {s: {}}\n")
    assert main(["-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"ringcache up: {path}: router.default_group: 'nope' is not a defined group (groups: s)\n"


@pytest.mark.parametrize("argv", [["-c", "/nonexistent/topology.yaml"], ["--bogus"], ["-c"]])
def test_a_missing_file_or_a_bad_argument_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ringcache up: ") and err.count("\n") == 1


# --- supervising one child with a fake clock ---------------------------------------------------


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class SpawningClock(Clock):
    """A Clock that also 'spawns' processes, recording each run's protocol and argv."""

    def __init__(self):
        super().__init__()
        self.runs = []  # (protocol, process, argv, env)

    def spawnProcess(self, protocol, executable, args, env=None):
        assert executable == args[0]
        process = FakeProcess(1000 + len(self.runs))
        protocol.makeConnection(process)
        self.runs.append((protocol, process, args, env))
        return process

    def end(self, reason):
        self.runs[-1][0].processEnded(Failure(reason))


KILLED = ProcessTerminated(signal=signal.SIGKILL)


@pytest.fixture
def supervised():
    clock = SpawningClock()
    lines = []
    child = Child(ChildSpec("node-a", ("rc", "node")), clock, lines.append, {"HOME": "/x"})
    child.start()
    return clock, child, lines


def next_restart_delay(clock):
    (call,) = clock.getDelayedCalls()
    return call.getTime() - clock.seconds()


def test_a_dying_child_restarts_with_doubling_delays_capped_and_reset_after_10s(supervised):
    clock, child, lines = supervised
    assert (clock.runs[0][2], clock.runs[0][3], child.pid) == (("rc", "node"), {"HOME": "/x"}, 1000)
    delays = []
    for _ in range(9):
        clock.advance(1)  # up for 1 s: not healthy yet
        clock.end(KILLED)
        delays.append(next_restart_delay(clock))
        clock.advance(delays[-1])
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert len(clock.runs) == 10

    clock.advance(9.9)  # not long enough to count as healthy
    clock.end(ProcessTerminated(exitCode=1))
    assert next_restart_delay(clock) == 30
    clock.advance(30)
    clock.advance(10)  # stayed up 10 s: the next death starts the schedule over
    clock.end(ProcessDone(0))
    assert next_restart_delay(clock) == 0.5
    assert lines[:3] == [
        "ringcache up: started node-a (pid 1000)",
        "ringcache up: node-a (pid 1000) killed by signal 9 (SIGKILL); restarting in 0.5s",
        "ringcache up: started node-a (pid 1001)",
    ]
    assert lines[-3:] == [
        "ringcache up: node-a (pid 1009) exited with status 1; restarting in 30s",
        "ringcache up: started node-a (pid 1010)",
        "ringcache up: node-a (pid 1010) exited with status 0; restarting in 0.5s",
    ]


def test_backoff_alone():
    backoff = Backoff(initial=1, maximum=5, reset_after=3)
    assert [backoff.delay(0), backoff.delay(2.9), backoff.delay(0), backoff.delay(0), backoff.delay(3)] == [1, 2, 4, 5, 1]


def test_output_is_relayed_line_by_line_with_the_childs_name(supervised):
    clock, child, lines = supervised
    protocol = clock.runs[0][0]
    protocol.childDataReceived(1, b"listening on 127.0.0.1:7001\r\nhal")
    protocol.childDataReceived(2, b"a warning\n")
    protocol.childDataReceived(1, b"f a line\n\xffno newline at exit")
    clock.end(ProcessDone(0))
    assert lines[1:5] == [
        "[node-a] listening on 127.0.0.1:7001",
        "[node-a] a warning",
        "[node-a] half a line",
        "[node-a] \ufffdno newline at exit",
    ]


def test_stop_sends_sigterm_then_sigkill_after_5s_and_fires_when_gone(supervised):
    clock, child, lines = supervised
    stopped = child.stop()
    process = clock.runs[0][1]
    assert (process.signals, stopped.called) == (["TERM"], False)
    clock.advance(4.9)
    assert process.signals == ["TERM"]
    clock.advance(0.1)
    assert process.signals == ["TERM", "KILL"]
    clock.end(KILLED)
    assert stopped.called and clock.getDelayedCalls() == [] and len(clock.runs) == 1
    assert lines[-2:] == [
        "ringcache up: node-a (pid 1000) ignored SIGTERM for 5s; killing it",
        "ringcache up: stopped node-a (pid 1000, killed by signal 9 (SIGKILL))",
    ]


def test_a_child_that_stops_in_time_is_not_killed(supervised):
    clock, child, lines = supervised
    stopped = child.stop()
    clock.end(ProcessDone(0))
    assert stopped.called and clock.getDelayedCalls() == []
    assert clock.runs[0][1].signals == ["TERM"]
    assert lines[-1] == "ringcache up: stopped node-a (pid 1000, exited with status 0)"


def test_stop_during_a_restart_delay_cancels_the_restart(supervised):
    clock, child, lines = supervised
    clock.end(KILLED)
    stopped = child.stop()
    assert stopped.called and clock.getDelayedCalls() == []
    clock.advance(60)
    assert len(clock.runs) == 1 and not child.signal("HUP")


def test_signal_reaches_the_running_process(supervised):
    clock, child, lines = supervised
    assert child.signal("HUP")
    assert clock.runs[0][1].signals == ["HUP"]


# --- the demo source -----------------------------------------------------------------------------


def test_demo_scores_pause_like_a_database(monkeypatch):
    pauses = []
    monkeypatch.setattr(demo.time, "sleep", pauses.append)
    assert [demo.score(k) for k in ("Tom", "Jack", "Sam", "42", "1999", "nobody", "-5", "٣")] == [
        "630", "589", "567", "score-42-294", "score-1999-993", None, None, None,
    ]
    assert demo.score("9" * 5000) == f"score-{'9' * 5000}-993"
    assert pauses == [0.1] * 9


# --- the real processes -----------------------------------------------------------------------------

STARTED = re.compile(r"^ringcache up: started (\S+) \(pid (\d+)\)$", re.M)


def wait_until(predicate, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s: {proc.describe()}")
        time.sleep(0.05)


def started_pids(proc) -> dict[str, list[int]]:
    """Every pid each child ran as, in order, from the `started NAME (pid N)` log lines."""
    pids: dict[str, list[int]] = {}
    for name, pid in STARTED.findall(proc.read_stderr()):
        pids.setdefault(name, []).append(int(pid))
    return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by whoever adopted it) does not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def standalone(tmp_path):
    """`ringcache up` on three nodes and a router, all on free loopback ports, until it said it is up."""
    nodes = {name: free_port() for name in ("node-a", "node-b", "node-c")}
    memcache, http = free_port(), free_port()
    path = tmp_path / "topology.yaml"
    path.write_text(
        f"router: {{memcache: 127.0.0.1:{memcache}, http: 127.0.0.1:{http}, default_group: scores}}\n"
        "nodes:\n"
        + "".join(f"  - {{name: {name}, address: 127.0.0.1:{port}}}\n" for name, port in nodes.items())
        + "groups:\n"
        "  scores: {max_bytes: 1MiB, source: {python: examples.demo:score}}\n"
        "  sessions: {max_bytes: 1MiB}\n"
    )
    # Run from the repository root, so that the router imports examples.demo from it. In a
    # session of its own: a process group that a test can Ctrl-C as a terminal does.
    proc = Process([*RINGCACHE, "up", "-c", str(path)], start_new_session=True)
    try:
        wait_until(lambda: "ringcache is up: 3 nodes" in proc.read_stdout(), proc, 30, "the 'ringcache is up' line")
        yield proc, nodes, http
    finally:
        stop_process(proc, signal.SIGKILL)
        for pid in (pid for pids in started_pids(proc).values() for pid in pids):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_up_serves_restarts_a_killed_node_and_stops_every_child_on_sigterm(standalone):
    proc, nodes, http = standalone
    out = proc.read_stdout()
    assert re.match(r"ringcache is up: 3 nodes(, router digest \S+)?\n", out), out
    assert f"  HTTP:       http://127.0.0.1:{http}/v1/scores/42\n" in out
    pids = started_pids(proc)
    assert sorted(pids) == ["node-a", "node-b", "node-c", "router"]
    assert all(port_open(port) for port in nodes.values())
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/scores/42", timeout=5) as response:
        assert response.read() == b"score-42-294"

    (first_pid,) = pids["node-a"]
    os.kill(first_pid, signal.SIGKILL)
    wait_until(lambda: len(started_pids(proc)["node-a"]) == 2, proc, 10, "the restart of node-a")
    assert f"ringcache up: node-a (pid {first_pid}) killed by signal 9 (SIGKILL); restarting in 0.5s\n" in proc.read_stderr()
    wait_until(lambda: port_open(nodes["node-a"]), proc, 10, "node-a listening again")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.describe()
    everyone = [pid for pids in started_pids(proc).values() for pid in pids]
    assert len(everyone) == 5
    assert [pid for pid in everyone if alive(pid)] == []
    assert proc.read_stderr().count("ringcache up: stopped ") == 4


@pytest.mark.integration
def test_children_do_not_outlive_a_sigkilled_up(standalone):
    proc, nodes, http = standalone
    pids = [pid for (pid,) in started_pids(proc).values()]
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if alive(pid)] == []


@pytest.mark.integration
def test_ctrl_c_in_the_terminal_stops_every_child_once_and_quietly(standalone):
    # The terminal sends SIGINT to the whole foreground process group: `up` and each
    # child. The children leave stopping to `up`, which SIGTERMs each once; a child
    # that also stopped itself on the SIGINT then raised ReactorNotRunning on the TERM.
    proc, nodes, http = standalone
    pids = [pid for (pid,) in started_pids(proc).values()]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=15) == 0, proc.describe()
    output = proc.read_stdout() + proc.read_stderr()
    assert "Traceback" not in output and "ReactorNotRunning" not in output, output
    assert proc.read_stderr().count("ringcache up: stopped ") == 4
    assert [pid for pid in pids if alive(pid)] == []
