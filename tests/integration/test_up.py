"""`ringcache up`: planning, supervision with a fake clock, the demo source, and the real processes."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest

from router.cli.children import can_bind
from tests.helpers import RINGCACHE, Process, free_port, port_open, stop_process

ip = ipaddress.ip_address

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


def test_can_bind_only_to_addresses_of_this_machine():
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never on an interface.
    assert (can_bind(ip("127.0.0.1")), can_bind(ip("192.0.2.1"))) == (True, False)


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
    assert re.search(f"ringcache up: node-a \\(pid {first_pid}\\) killed by signal 9 \\(SIGKILL\\) "
                     r"after running \d+s; restarting in 0.5s\n", proc.read_stderr())
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




# --- following the topology, and children that cannot start ------------------------------------


def up_on(tmp_path, nodes: dict[str, str], extra_groups: str = "", http: int | None = None):
    """`ringcache up` on a topology naming ``nodes`` ({name: address}); (proc, path, http)."""
    memcache, http = free_port(), http or free_port()
    path = tmp_path / "topology.yaml"

    def write(nodes):
        path.write_text(
            f"router: {{memcache: 127.0.0.1:{memcache}, http: 127.0.0.1:{http}, "
            "default_group: sessions}\nnodes:\n"
            + "".join(f"  - {{name: {n}, address: '{a}'}}\n" for n, a in nodes.items())
            + "groups:\n  sessions: {max_bytes: 1MiB}\n" + extra_groups)

    write(nodes)
    proc = Process([*RINGCACHE, "up", "-c", str(path)], start_new_session=True)
    return proc, write, http


def ring(http: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/ring", timeout=5) as response:
        return json.loads(response.read())


def reload(http: int) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{http}/v1/reload", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def cleanup(proc) -> None:
    stop_process(proc, signal.SIGKILL)
    for pid in (pid for pids in started_pids(proc).values() for pid in pids):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_up_starts_a_node_a_reload_added_and_stops_one_a_reload_removed(tmp_path):
    a, b = free_port(), free_port()
    proc, write, http = up_on(tmp_path, {"node-a": f"127.0.0.1:{a}"})
    try:
        wait_until(lambda: "ringcache is up: 1 node" in proc.read_stdout(), proc, 30, "up")
        write({"node-a": f"127.0.0.1:{a}", "node-b": f"127.0.0.1:{b}"})
        assert reload(http)["nodes_added"] == ["node-b"]
        added = time.monotonic()
        wait_until(lambda: all(n["state"] == "up" for n in ring(http)["nodes"]), proc, 10,
                   "node-b started and up")
        assert time.monotonic() - added < 10
        assert "ringcache up: node-b joined the ring; starting it" in proc.read_stderr()
        [pid_b] = started_pids(proc)["node-b"]

        write({"node-a": f"127.0.0.1:{a}"})
        assert reload(http)["nodes_removed"] == ["node-b"]
        wait_until(lambda: not alive(pid_b), proc, 10, "node-b stopped")
        assert not port_open(b)
        assert "ringcache up: node-b left the ring; stopping it" in proc.read_stderr()
        assert "is down" not in proc.read_stderr()  # the router had let go of it first
    finally:
        cleanup(proc)


@pytest.mark.integration
def test_up_exits_non_zero_within_15s_with_one_line_when_its_router_cannot_listen(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = taken.getsockname()[1]
        proc, _, _ = up_on(tmp_path, {"node-a": f"127.0.0.1:{free_port()}"}, http=http)
        try:
            started = time.monotonic()
            assert proc.wait(timeout=15) == 1, proc.describe()
            assert time.monotonic() - started < 15
            [line] = [l for l in proc.read_stderr().splitlines() if "could not start" in l]
            assert line.startswith("ringcache up: router could not start (exited with status 1 "
                                   "before it was serving): ")
            assert "Address already in use" in line
            assert "ringcache is up" not in proc.read_stdout()
            assert [pid for pids in started_pids(proc).values() for pid in pids if alive(pid)] == []
        finally:
            cleanup(proc)


@pytest.mark.integration
def test_a_source_module_that_does_not_import_makes_up_exit_2(tmp_path):
    groups = "  scores: {source: {python: no_such_module_anywhere:load}}\n"
    proc, _, _ = up_on(tmp_path, {"node-a": f"127.0.0.1:{free_port()}"}, groups)
    try:
        assert proc.wait(timeout=15) == 2, proc.describe()
        [line] = [l for l in proc.read_stderr().splitlines() if "could not start" in l]
        assert "exited with status 2" in line and "no_such_module_anywhere" in line
    finally:
        cleanup(proc)


@pytest.mark.integration
def test_the_banner_names_a_node_that_is_down(tmp_path):
    # 192.0.2.0/24 is TEST-NET-1: not this host, so `up` does not start it and it stays down.
    proc, _, _ = up_on(tmp_path, {"node-a": f"127.0.0.1:{free_port()}", "node-b": "192.0.2.1:7001"})
    try:
        wait_until(lambda: "ringcache is up" in proc.read_stdout(), proc, 30, "the banner")
        out = proc.read_stdout()
        assert out.startswith("ringcache is up: 2 nodes (1 on this host), 1 down"), out
        assert "  down:       node-b: " in out
    finally:
        cleanup(proc)
