"""`ringcache up`: planning, supervision with a fake clock, the demo source, and the real processes."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import time
import urllib.request

import pytest

from router.cli.up import (
    can_bind,
)
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


