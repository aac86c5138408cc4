"""A node trusts no peer's code: plugin cores come from its own command line only. The
issue's `python:signal:signal` CONFIGURE replayed against a real node."""

from __future__ import annotations

import pytest

from shared import ringcache_pb2 as pb
from tests.helpers import RINGCACHE, Process, stop_process
from tests.integration.security.peers import CONFIGURE, GET, Peer, connect, start_node

pytestmark = pytest.mark.integration

FIFO = "python:tests.storage_node.cores.core_contract:FifoCore"


def configure(policy: str, max_bytes: int = 15, id: int = 7) -> pb.Request:
    # 15 is SIGTERM: signal.signal(15, clock) is what replaced the node's handler.
    return pb.Request(id=id, op=pb.CONFIGURE, groups=[
        pb.GroupConfig(name="scores", policy="lru", max_bytes=1 << 20),
        pb.GroupConfig(name="evil", policy=policy, max_bytes=max_bytes)])


def test_a_configure_naming_a_policy_not_allowed_is_refused_and_the_node_keeps_serving():
    port, proc = start_node()
    try:
        peer = Peer(connect(port))
        assert peer.call(CONFIGURE) == [pb.Response(id=4)]
        assert peer.call(pb.Request(id=5, op=pb.SET, group="scores", key=b"Tom", value=b"630")) == [
            pb.Response(id=5, cas=1)]
        [refused] = peer.call(configure("python:signal:signal"))
        assert (refused.id, refused.status, refused.error) == (
            7, pb.ERROR, "CONFIGURE refused: group 'evil': policy 'python:signal:signal' is not "
                         "allowed on this node (start it with --allow-policy python:signal:signal)")
        assert peer.call(GET) == [pb.Response(id=1, value=b"630", cas=1)]
        [stats] = peer.call(pb.Request(id=8, op=pb.STATS))
        assert [g.name for g in stats.stats.groups] == ["scores"]
        peer.close()
    finally:
        # SIGTERM still stops it the graceful way: its handler was never replaced.
        assert stop_process(proc) == 0


def test_a_policy_the_node_allows_is_built_when_a_router_names_it(tmp_path):
    allowed = tmp_path / "policies"
    allowed.write_text(f"# plugin cores routers may name\n{FIFO}\n\n")
    port, proc = start_node("--allow-policy-file", str(allowed))
    try:
        peer = Peer(connect(port))
        assert peer.call(configure(FIFO, max_bytes=1000)) == [pb.Response(id=7)]
        assert peer.call(pb.Request(id=8, op=pb.SET, group="evil", key=b"k", value=b"v"),
                         pb.Request(id=9, op=pb.GET, group="evil", key=b"k")) == [
            pb.Response(id=8, cas=1), pb.Response(id=9, value=b"v", cas=1)]
        [stats] = peer.call(pb.Request(id=10, op=pb.STATS))
        assert [(g.name, g.policy) for g in stats.stats.groups] == [("scores", "lru"), ("evil", FIFO)]
        peer.close()
    finally:
        stop_process(proc)


@pytest.mark.parametrize("args, message", [
    (["--allow-policy", "lru"], "argument --allow-policy: expected python:module:Class, got 'lru'"),
    (["--allow-policy", "python:no_such_module_here:Core"],
     "allowed policies: policy 'python:no_such_module_here:Core': cannot import "
     "no_such_module_here: ModuleNotFoundError: No module named 'no_such_module_here'"),
    (["--allow-policy-file", "/nonexistent/policies"],
     "--allow-policy-file: cannot read /nonexistent/policies: [Errno 2] No such file or directory: "
     "'/nonexistent/policies'"),
])
def test_a_bad_allow_list_stops_the_node_with_one_line(args, message):
    proc = Process([*RINGCACHE, "node", "--listen", "127.0.0.1:1", *args])
    assert proc.wait(30) == 2
    assert proc.read_stderr() == f"ringcache node: {message}\n"




def test_ringcache_up_with_mutual_tls_needs_this_hosts_node_certificate(tmp_path):
    for name in ("ca.pem", "router.pem", "router.key"):
        (tmp_path / name).write_text("x")
    path = tmp_path / "topology.yaml"
    path.write_text("router: {default_group: a}\nnodes: [{name: n, address: 127.0.0.1:7001}]\n"
                    "groups: {a: {}}\nsecurity: {ca: ca.pem, cert: router.pem, key: router.key}\n")
    proc = Process([*RINGCACHE, "up", "-c", str(path)])
    assert proc.wait(30) == 2
    assert proc.read_stderr() == (
        f"ringcache up: security: mutual TLS needs this host's nodes' certificate too: no "
        f"{tmp_path}/node.pem (ringcache certs writes node.pem and node.key beside router.pem)\n")
