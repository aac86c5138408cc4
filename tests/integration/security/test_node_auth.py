"""A node with a shared secret or mutual TLS obeys only routers that authenticate: the
issue's poisoning and wiping attacks replayed against real node processes."""

from __future__ import annotations

import socket
import ssl

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from shared import ringcache_pb2 as pb
from shared.handshake import HELLO_SIZE, MAGIC, ROUTER, SecretHandshake
from tests.helpers import (
    RINGCACHE,
    Process,
    free_port,
    port_open,
    start_process,
    stop_process,
)
from tests.integration.cluster import Cluster
from tests.integration.security.peers import (
    CONFIGURE,
    GET,
    SECRET,
    SET,
    WIPE,
    accepted,
    connect,
    frame,
    make_certs,
    read_all,
    secret_handshake,
    start_node,
    tls_args,
    tls_connect,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    """Certificates from another CA: what an attacker can make for itself."""
    return make_certs(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "secret"
    path.write_bytes(SECRET + b"\n")
    return str(path)


@pytest.fixture(scope="module")
def secret_node(secret_file):
    port, proc = start_node("--secret-file", secret_file, "--handshake-timeout", "500ms")
    yield port, proc
    stop_process(proc)


@pytest.fixture(scope="module")
def tls_node(certs):
    port, proc = start_node(*tls_args(certs))
    yield port, proc
    stop_process(proc)


def configured_with_tom(peer) -> int:
    """As a router would: configure the scores group and store Tom's real score; the CAS
    unique the node gave it (the node serves several tests: uniques keep counting)."""
    assert peer.call(CONFIGURE) == [pb.Response(id=4)]
    [stored] = peer.call(pb.Request(id=5, op=pb.SET, group="scores", key=b"Tom", value=b"630"))
    assert (stored.id, stored.status) == (5, pb.OK) and stored.cas > 0
    return stored.cas


@pytest.mark.parametrize("attack", [SET, GET, WIPE], ids=["poison", "read", "wipe"])
def test_secret_node_answers_a_plain_peer_nothing_and_obeys_it_in_nothing(secret_node, attack):
    port, _ = secret_node
    router = accepted(sock := connect(port), secret_handshake(sock))
    cas = configured_with_tom(router)
    with connect(port) as stranger:
        stranger.sendall(frame(attack))
        assert read_all(stranger) == b""  # not one byte: no answer, no nonce
    assert router.call(GET) == [pb.Response(id=1, value=b"630", cas=cas)]
    router.close()


def test_secret_node_refuses_the_wrong_secret_after_showing_only_a_nonce(secret_node):
    port, _ = secret_node
    guess = SecretHandshake(b"a guess at the secret, long enough", ROUTER, b"g" * 32)
    with connect(port) as impostor:
        impostor.sendall(guess.start())
        node_hello = impostor.recv(HELLO_SIZE, socket.MSG_WAITALL)
        assert node_hello.startswith(MAGIC) and len(node_hello) == HELLO_SIZE
        impostor.sendall(guess.receive_data(node_hello) + frame(SET))
        assert read_all(impostor) == b""  # no proof, no answer


def test_secret_node_cuts_off_a_peer_that_does_not_authenticate_in_time(secret_node):
    port, _ = secret_node
    with connect(port) as slow:
        slow.sendall(b"RCA")  # a start, then nothing
        assert read_all(slow) == b""  # closed by the node (500ms), long before our 5s timeout


def test_secret_node_logs_refusals_once_per_interval_not_per_peer(secret_file):
    port, proc = start_node("--secret-file", secret_file)
    try:
        for _ in range(30):
            with connect(port) as stranger:
                stranger.sendall(frame(SET))
                read_all(stranger)
        accepted(sock := connect(port), secret_handshake(sock)).close()  # still serves routers
    finally:
        stop_process(proc)
    refusals = [line for line in proc.read_stderr().splitlines() if "refused 127.0.0.1:" in line]
    assert refusals[0].endswith("it did not start the ringcache handshake "
                                "(no shared secret configured on its side?)")
    assert len(refusals) < 5, refusals  # 30 refused: one line per 10s interval


def test_tls_node_serves_a_router_with_a_certificate_from_its_ca(tls_node, certs):
    port, _ = tls_node
    router = accepted(tls_connect(port, certs["ca.pem"], certs["router.pem"], certs["router.key"]))
    cas = configured_with_tom(router)
    assert router.call(GET) == [pb.Response(id=1, value=b"630", cas=cas)]
    router.close()


@pytest.mark.parametrize("who", ["plain TCP", "no certificate", "another CA's router",
                                 "a node's certificate"])
def test_tls_node_refuses_a_peer_without_a_router_certificate_from_its_ca(
        tls_node, certs, other_certs, who):
    port, _ = tls_node
    if who == "plain TCP":
        sock = connect(port)
    else:
        cert = {"no certificate": None, "another CA's router": other_certs["router.pem"],
                "a node's certificate": certs["node.pem"]}[who]
        key = cert and cert.replace(".pem", ".key")
        try:
            sock = tls_connect(port, certs["ca.pem"], cert, key)
        except (ssl.SSLError, ConnectionResetError):
            return  # refused within the handshake (TLS 1.2); with 1.3 it comes on reading
    with sock:
        try:
            sock.sendall(frame(SET))
        except (ssl.SSLError, OSError):
            pass
        assert read_all(sock) == b""


def test_a_router_checks_the_nodes_certificate_too(tls_node, other_certs):
    port, _ = tls_node
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(port, other_certs["ca.pem"], other_certs["router.pem"], other_certs["router.key"])


@pytest.fixture(scope="module")
def secured_cluster(tmp_path_factory, certs, secret_file):
    """Nodes with both mutual TLS and the secret; a router configured for both."""
    security = (f"security:\n  ca: {certs['ca.pem']}\n  cert: {certs['router.pem']}\n"
                f"  key: {certs['router.key']}\n  secret_file: {secret_file}\n")
    cluster = Cluster(tmp_path_factory.mktemp("secured"), nodes=2, security=security,
                      node_args=(*tls_args(certs), "--secret-file", secret_file)).start()
    yield cluster
    cluster.stop()


def test_a_router_with_the_right_credentials_serves_memcached_clients(secured_cluster):
    client = secured_cluster.memcache(default_noreply=False)
    keys = {f"sessions:k{i}": f"v{i}".encode() for i in range(20)}
    assert client.set_many(keys) == []
    assert client.get_many(list(keys)) == keys
    assert client.get("scores:Tom") == b"value-of-Tom"  # read through, stored on a node
    ring = secured_cluster.http_json("GET", "/v1/ring")
    assert [n["state"] for n in ring["nodes"]] == ["up", "up"]


def test_a_router_with_the_wrong_secret_is_kept_out_and_says_why(tmp_path, secret_file):
    wrong = tmp_path / "wrong-secret"
    wrong.write_bytes(b"not the secret the nodes hold\n")
    cluster = Cluster(tmp_path, nodes=1, security=f"security: {{secret_file: {wrong}}}\n",
                      node_args=("--secret-file", secret_file))
    try:
        cluster.start_node("node-0")
        cluster.router = start_process([*RINGCACHE, "router", "-c", str(cluster.topology)],
                                       lambda: port_open(cluster.http_port), timeout=20)
        [node] = wait_for(lambda: [n for n in cluster.http_json("GET", "/v1/ring")["nodes"]
                                   if "authentication" in n.get("down_reason", "")])
        assert node["state"] == "down"
        assert node["down_reason"].startswith(
            "connect failed: authentication with the node failed: it closed the connection")
        with pytest.raises(MemcacheServerError, match="node node-0 unavailable"):
            cluster.memcache().set("sessions:k", b"v", noreply=False)
    finally:
        cluster.stop()
    assert "wrong shared secret" in cluster.nodes["node-0"].read_stderr()


def test_ringcache_up_runs_its_nodes_with_the_topologys_tls_and_secret_and_https(tmp_path, secret_file):
    certs = make_certs(tmp_path / "certs")
    node, memcache, http = free_port(), free_port(), free_port()
    path = tmp_path / "topology.yaml"
    path.write_text(
        f"router: {{memcache: 127.0.0.1:{memcache}, http: 127.0.0.1:{http}, default_group: s,\n"
        f"  http_tls: {{cert: {certs['server.pem']}, key: {certs['server.key']}}}}}\n"
        f"nodes: [{{name: a, address: 127.0.0.1:{node}}}]\ngroups: {{s: {{max_bytes: 1MiB}}}}\n"
        f"security: {{ca: {certs['ca.pem']}, cert: {certs['router.pem']}, "
        f"key: {certs['router.key']}, secret_file: {secret_file}}}\n")
    proc = Process([*RINGCACHE, "up", "-c", str(path)])
    try:
        wait_for(lambda: "ringcache is up" in proc.read_stdout() or proc.poll() is not None, 30)
        assert f"  HTTP:       https://127.0.0.1:{http}/v1/s/42\n" in proc.read_stdout()
        client = Client(("127.0.0.1", memcache), timeout=5, default_noreply=False)
        assert client.set("k", b"through TLS and the secret") is True
        assert client.get("k") == b"through TLS and the secret"
        with connect(node) as stranger:  # the node `up` started refuses strangers
            stranger.sendall(frame(SET))
            assert read_all(stranger) == b""
    finally:
        assert stop_process(proc) == 0, proc.describe()
    assert "routers authenticate with mutual TLS and a shared secret" in proc.read_stderr()
