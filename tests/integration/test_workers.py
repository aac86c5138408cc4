"""router.workers for real: a control process and worker processes sharing the memcached port
(SO_REUSEPORT), their counters added up, reloads reaching every worker, a dead worker
restarted, and every worker gone with its control."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from tests.helpers import stop_process, wait_for
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration


def workers_up(cluster, digest=None) -> list[dict] | None:
    workers = cluster.http_json("GET", "/v1/ring").get("workers") or []
    if workers and all(w["up"] and (digest is None or w["digest"] == digest) for w in workers):
        return workers
    return None


def holds_sockets(pid: int) -> bool:
    """Whether process ``pid`` still holds any socket (its fds, from /proc): a dead one does not."""
    while True:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except FileNotFoundError:  # gone, or closing its descriptors as we look
            if not alive(pid):
                return False
            continue
        return any(link.startswith("socket:") for link in links)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, nodes=2, router_extra="  workers: 3\n").start()
    wait_for(lambda: workers_up(c))
    yield c
    c.stop()


def test_workers_share_the_port_and_build_the_same_ring(cluster):
    ring = cluster.http_json("GET", "/v1/ring")
    workers = ring["workers"]
    assert [w["index"] for w in workers] == [0, 1, 2]
    assert {w["digest"] for w in workers} == {ring["digest"]}
    assert len({w["pid"] for w in workers}) == 3 and cluster.router.pid not in {
        w["pid"] for w in workers}
    # Connections land on several workers, and every one serves the same keys.
    clients = [cluster.memcache() for _ in range(24)]
    clients[0].set("sessions:k", b"v", noreply=False)
    assert all(c.get("sessions:k") == b"v" for c in clients)
    stats = cluster.http_json("GET", "/v1/stats")
    connections = [w["connections"] for w in stats["workers"]]
    assert sum(connections) == 24
    assert sum(1 for n in connections if n) >= 2


def test_stats_and_metrics_add_up_every_worker(cluster):
    clients = [cluster.memcache() for _ in range(12)]
    clients[0].set("sessions:k", b"v", noreply=False)
    for client in clients:
        for _ in range(5):
            assert client.get("sessions:k") == b"v"
        assert client.get("sessions:absent") is None
    stats = cluster.http_json("GET", "/v1/stats")
    requests = stats["router"]["requests"]
    assert requests["memcache/get/hit"] == 60
    assert requests["memcache/get/miss"] == 12
    status, metrics = cluster.http("GET", "/metrics")
    assert status == 200
    lines = metrics.decode().splitlines()
    assert 'ringcache_requests_total{command="get",protocol="memcache",result="hit"} 60.0' in lines
    assert 'ringcache_group_hits_total{group="sessions"} 60.0' in lines
    assert 'ringcache_group_misses_total{group="sessions"} 12.0' in lines
    count = 'ringcache_request_duration_seconds_count{command="get",protocol="memcache"} 72.0'
    assert count in lines, [l for l in lines if 'duration_seconds_count' in l]
    assert stats["router"]["groups"]["sessions"]["hits"] == 60
    assert 'ringcache_node_up{node="node-0"} 1.0' in lines


def test_v1_hot_adds_up_every_workers_view(cluster):
    clients = [cluster.memcache() for _ in range(12)]  # spread over the three workers
    clients[0].set("sessions:hot", b"v", noreply=False)
    for client in clients:
        for _ in range(100):
            assert client.get("sessions:hot") == b"v"
        client.get("sessions:cold")
    sessions = cluster.http_json("GET", "/v1/hot")["groups"]["sessions"]
    assert sessions["keys"][0]["key"] == "hot"  # the key within its group
    assert sessions["keys"][0]["hot"]
    # About 1,200 gets at one in 32: ~38 samples over the workers (the control served none).
    assert 15 <= sessions["samples"] <= 70


def test_a_reload_reaches_every_worker(cluster):
    cluster.add_node_name("node-2")
    cluster.start_node("node-2")
    cluster.write_topology(["node-0", "node-1", "node-2"])
    status, body = cluster.http("POST", "/v1/reload", b"")
    assert status == 200
    digest = cluster.http_json("GET", "/v1/ring")["digest"]
    wait_for(lambda: workers_up(cluster, digest), timeout=5)
    # Every worker routes by the new ring: keys land on the new node too.
    client = cluster.memcache()
    for i in range(60):
        client.set(f"sessions:k{i}", b"v", noreply=False)
    stats = cluster.http_json("GET", "/v1/stats")
    items = {name: next(g["items"] for g in node["groups"] if g["name"] == "sessions")
             for name, node in stats["nodes"].items()}
    assert items["node-2"] > 0


def test_a_dead_worker_is_restarted_and_the_others_serve_meanwhile(cluster):
    victim = cluster.http_json("GET", "/v1/ring")["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    # Connections the kernel had queued for the dead worker are reset, as for any process
    # that dies; those made after it is gone go to the others.
    wait_for(lambda: not holds_sockets(victim["pid"]))

    def served() -> bool:
        # A connection the kernel gave the dying worker is reset, as with any process that
        # dies (Linux's net.ipv4.tcp_migrate_req moves them instead); a client retries.
        client = cluster.memcache()
        try:
            client.set("sessions:k", b"v", noreply=False)
            return client.get("sessions:k") == b"v"
        except ConnectionResetError:
            return False
        finally:
            client.close()

    wait_for(served, timeout=5)

    def replaced():
        workers = workers_up(cluster)
        return workers and workers[1]["pid"] != victim["pid"]

    wait_for(replaced, timeout=10)
    assert "worker-1" in cluster.router.read_stderr()


def test_workers_stop_with_their_control_process(tmp_path):
    cluster = Cluster(tmp_path, nodes=1, router_extra="  workers: 2\n").start()
    try:
        pids = [w["pid"] for w in wait_for(lambda: workers_up(cluster))]
        assert stop_process(cluster.router) == 0
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=1)
    finally:
        cluster.stop()


def test_workers_die_with_a_killed_control_process(tmp_path):
    cluster = Cluster(tmp_path, nodes=1, router_extra="  workers: 2\n").start()
    try:
        pids = [w["pid"] for w in wait_for(lambda: workers_up(cluster))]
        stop_process(cluster.router, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
    finally:
        cluster.stop()
