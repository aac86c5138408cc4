"""`ringcache node` as a real process on a loopback port, spoken to over blocking sockets."""

from __future__ import annotations

import socket
import subprocess

import pytest

from shared import ringcache_pb2 as pb
from tests.helpers import RINGCACHE, free_port, port_open, start_process, stop_process
from tests.helpers import NodeConnection as Connection

pytestmark = pytest.mark.integration


@pytest.fixture
def node_port():
    port = free_port()
    proc = start_process([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}"], lambda: port_open(port))
    try:
        yield port, proc
    finally:
        stop_process(proc)


def test_configure_set_get_and_a_bad_peer_does_not_hurt_others(node_port):
    port, proc = node_port
    first = Connection(port)
    try:
        configure = pb.Request(
            id=1, op=pb.CONFIGURE, groups=[pb.GroupConfig(name="scores", policy="lru", max_bytes=1 << 20)]
        )
        assert first.call(configure) == [pb.Response(id=1)]
        assert first.call(
            pb.Request(id=2, op=pb.SET, group="scores", key=b"alice", value=b"42", flags=0xDEADBEEF),
            pb.Request(id=3, op=pb.GET, group="scores", key=b"alice"),
        ) == [pb.Response(id=2, cas=1),
             pb.Response(id=3, value=b"42", flags=0xDEADBEEF, cas=1)]

        with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
            bad.sendall(b"\xff\xff\xff\xff")
            try:
                closed = bad.recv(1) == b""
            except ConnectionResetError:  # aborted: the node may answer with a reset
                closed = True
            assert closed

        assert first.call(pb.Request(id=4, op=pb.GET, group="scores", key=b"alice")) == [
            pb.Response(id=4, value=b"42", flags=0xDEADBEEF, cas=1)
        ]
        (stats,) = first.call(pb.Request(id=5, op=pb.STATS))
        assert (stats.stats.connections, stats.stats.configured) == (1, True)
    finally:
        first.close()
    assert "closing connection from 127.0.0.1:" in proc.read_stderr()


def test_sigterm_stops_the_node_cleanly(node_port):
    port, proc = node_port
    client = Connection(port)
    try:
        assert client.call(pb.Request(id=1, op=pb.PING)) == [pb.Response(id=1)]
        assert stop_process(proc, timeout=5) == 0, proc.describe()
        assert client.sock.recv(1) == b""  # our connection was closed, not left hanging
    finally:
        client.close()
    assert proc.read_stdout() == f"ringcache node listening on 127.0.0.1:{port}\n"
    assert not port_open(port)


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RINGCACHE, "node", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "args, line",
    [
        ([], "ringcache node: the following arguments are required: --listen"),
        (["--listen", "7001"], "ringcache node: argument --listen: expected HOST:PORT such as 127.0.0.1:7001, got '7001'"),
        (["--listen", "127.0.0.1:7001", "--max-memory", "lots"],
         "ringcache node: argument --max-memory: expected a size like 512KiB, 64MiB or 1GiB, got 'lots'"),
        (["--listen", "127.0.0.1:7001", "--bogus"], "ringcache node: unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, line):
    result = run_node(*args)
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


def test_a_port_in_use_exits_1_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_node("--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"ringcache node: Couldn't listen on 127.0.0.1:{port}: ")
    assert "Address already in use" in line
