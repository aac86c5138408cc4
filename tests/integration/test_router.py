"""The router against real node processes, driven by pymemcache, raw sockets and HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from tests.helpers import RINGCACHE, ROOT
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration


def node_items(cluster, group: str) -> dict[str, int]:
    stats = cluster.http_json("GET", "/v1/stats")
    out = {}
    for name, node in stats["nodes"].items():
        out[name] = next(g["items"] for g in node["groups"] if g["name"] == group)
    return out


def test_multi_get_across_three_nodes(cluster):
    client = cluster.memcache()
    values = {f"sessions:user-{i}": f"payload-{i}".encode() * 3 for i in range(300)}
    assert client.set_many(values) == []
    got = client.get_many(list(values))
    assert got == values
    # The keys really are spread over all three node processes.
    items = node_items(cluster, "sessions")
    assert sorted(items) == ["node-0", "node-1", "node-2"]
    assert all(n >= 50 for n in items.values()), items
    assert sum(items.values()) == 300
    # Every key is where /v1/where says it is.
    where = cluster.http_json("GET", "/v1/where/sessions/user-7")
    assert where["node"] in items


def test_read_through_loads_once_then_hits(cluster):
    client = cluster.memcache()
    before = cluster.loads().count("alpha")
    assert client.get("alpha") == b"value-of-alpha"  # no GROUP: prefix -> default group
    assert client.get("scores:alpha") == b"value-of-alpha"
    assert client.get("alpha") == b"value-of-alpha"
    assert cluster.loads().count("alpha") == before + 1


def test_source_not_found_is_a_miss_and_not_cached(cluster):
    client = cluster.memcache()
    assert client.get("missing-1") is None
    assert client.get("missing-1") is None
    assert cluster.loads().count("missing-1") == 2


def test_source_error_is_a_server_error_and_not_cached(cluster):
    client = cluster.memcache()
    with pytest.raises(MemcacheServerError, match="database is on fire"):
        client.get("broken:k")
    with pytest.raises(MemcacheServerError):
        client.get("broken:k")
    assert cluster.loads().count("k") == 2
    status, body = cluster.http("GET", "/v1/broken/k")
    assert status == 502
    assert b"database is on fire" in body


def test_hundred_concurrent_misses_cause_one_load(cluster):
    socks = [socket.create_connection(("127.0.0.1", cluster.memcache_port)) for _ in range(100)]
    try:
        for s in socks:
            s.sendall(b"get slow:herd\r\n")
        expected = b"VALUE slow:herd 0 %d\r\nslow-herd\r\nEND\r\n" % len(b"slow-herd")
        for s in socks:
            s.settimeout(10)
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(4096)
                assert chunk, "router closed the connection"
                data += chunk
            assert data == expected
    finally:
        for s in socks:
            s.close()
    assert cluster.loads().count("herd") == 1
    stats = cluster.http_json("GET", "/v1/stats")
    assert stats["router"]["coalesced"] >= 99


def test_ttl_expiry(cluster):
    client = cluster.memcache()
    client.set("sessions:brief", b"x", expire=1)
    assert client.get("sessions:brief") == b"x"
    # The group ttl (1s) applies to loaded values.
    assert client.get("short:t") == b"value-of-t"
    time.sleep(1.3)
    assert client.get("sessions:brief") is None
    assert client.get("short:t") == b"value-of-t"
    assert cluster.loads().count("t") == 2


def test_memcached_commands(cluster):
    client = cluster.memcache()
    assert client.add("sessions:a", b"1") is True
    assert client.add("sessions:a", b"2", noreply=False) is False
    assert client.replace("sessions:nope", b"2", noreply=False) is False
    assert client.replace("sessions:a", b"3", noreply=False) is True
    assert client.get("sessions:a") == b"3"
    value, cas = client.gets("sessions:a")
    assert value == b"3" and isinstance(cas, bytes) and int(cas) > 0
    assert client.touch("sessions:a", 100, noreply=False) is True
    assert client.touch("sessions:nope", 100, noreply=False) is False
    assert client.delete("sessions:a", noreply=False) is True
    assert client.delete("sessions:a", noreply=False) is False
    client.set("sessions:flags", b"v", noreply=True)
    assert client.get("sessions:flags") == b"v"
    assert b"ringcache" in client.version()
    assert client.stats()[b"nodes_up"] == 3


def test_flags_round_trip_through_pymemcache_serde(cluster):
    from pymemcache import serde

    client = cluster.memcache(serde=serde.pickle_serde)
    client.set("sessions:obj", {"a": [1, 2]})
    client.set("sessions:num", 42)
    assert client.get("sessions:obj") == {"a": [1, 2]}
    assert client.get("sessions:num") == 42
    # A multi-get goes as one GET_MANY per node, entries unpacked by the router.
    assert client.get_many(["sessions:obj", "sessions:num", "sessions:none"]) == {
        "sessions:obj": {"a": [1, 2]}, "sessions:num": 42}


def test_bad_input_errors_and_connection_goes_on(cluster):
    cluster.memcache().set("sessions:big", b"old value", noreply=False)
    s = socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=5)
    try:
        s.sendall(b"bogus\r\n"
                  b"get " + b"k" * 251 + b"\r\n"
                  b"get bad\x01key\r\n"
                  b"set sessions:big 0 0 2000000\r\n" + b"x" * 2000000 + b"\r\n"
                  b"get sessions:big\r\n"
                  b"version\r\n")
        data = b""
        while not data.endswith(b"VERSION 1.6.21 ringcache-0.1.0\r\n"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        lines = data.split(b"\r\n")
        assert lines[0] == b"ERROR"
        assert lines[1].startswith(b"CLIENT_ERROR")
        assert lines[2].startswith(b"CLIENT_ERROR")
        assert lines[3] == b"SERVER_ERROR object too large for cache"
        assert lines[4] == b"END"  # the refused store dropped the old value, as memcached does
        assert lines[5] == b"VERSION 1.6.21 ringcache-0.1.0"
    finally:
        s.close()
    client = cluster.memcache()
    with pytest.raises(MemcacheClientError):
        client.set("k" * 300, b"v")


def test_http_api(cluster):
    assert cluster.http("GET", "/healthz") == (200, b"ok\n")
    assert cluster.http("PUT", "/v1/sessions/a%2Fb?ttl=60", b"raw\x00bytes")[0] == 204
    assert cluster.http("GET", "/v1/sessions/a%2Fb") == (200, b"raw\x00bytes")
    assert cluster.http("DELETE", "/v1/sessions/a%2Fb")[0] == 204
    assert cluster.http("GET", "/v1/sessions/a%2Fb")[0] == 404
    assert cluster.http("GET", "/v1/scores/h1") == (200, b"value-of-h1")
    status, body = cluster.http("GET", "/v1/nogroup/x")
    assert status == 404 and "unknown group" in json.loads(body)["error"]
    ring = cluster.http_json("GET", "/v1/ring")
    assert len(ring["nodes"]) == 3 and len(ring["digest"]) == 16
    assert abs(sum(n["share"] for n in ring["nodes"]) - 1.0) < 1e-9
    status, metrics = cluster.http("GET", "/metrics")
    assert status == 200
    assert b"ringcache_requests_total" in metrics and b"ringcache_node_up" in metrics


def test_cli_against_router(cluster):
    def run(*args):
        return subprocess.run([*RINGCACHE, *args, "--router", cluster.http_base],
                              capture_output=True, cwd=ROOT, timeout=30)

    assert run("set", "sessions", "cli", "hello").returncode == 0
    got = run("get", "sessions", "cli")
    assert got.returncode == 0 and got.stdout == b"hello\n"
    assert run("get", "sessions", "cli", "--raw").stdout == b"hello"
    where = run("where", "sessions", "cli", "--json")
    assert where.returncode == 0 and json.loads(where.stdout)["node"].startswith("node-")
    assert run("where", "sessions", "cli").stdout.startswith(b"sessions/cli is on node-")
    assert run("delete", "sessions", "cli").returncode == 0
    missing = run("get", "sessions", "cli")
    assert missing.returncode == 1
    assert run("ring").returncode == 0
    assert run("stats").returncode == 0
    bad = run("get", "sessions")
    assert bad.returncode == 2 and len(bad.stderr.decode().strip().splitlines()) == 1


def test_the_same_topology_gives_the_same_digest_in_another_router(cluster, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from router.config.topology import load_topology; from router.cluster.ring import HashRing;"
               "t = load_topology(sys.argv[1]);"
               "print(HashRing(((n.name, n.weight) for n in t.nodes), t.router.vnodes).digest)",
         str(cluster.topology)], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == cluster.http_json("GET", "/v1/ring")["digest"]


def test_node_down_fails_fast_or_reads_from_source(tmp_path):
    cluster = Cluster(tmp_path, nodes=2, timeout="300ms").start()
    try:
        client = cluster.memcache()
        victim = "node-1"
        # Find a key of each group that lives on the victim.
        key = next(f"k{i}" for i in range(1000)
                   if cluster.http_json("GET", f"/v1/where/sessions/k{i}")["node"] == victim)
        skey = next(f"s{i}" for i in range(1000)
                    if cluster.http_json("GET", f"/v1/where/scores/s{i}")["node"] == victim)
        client.set(f"sessions:{key}", b"v")
        cluster.nodes[victim].kill()
        cluster.nodes[victim].wait()
        started = time.monotonic()
        with pytest.raises(MemcacheServerError, match="node-1 unavailable"):
            client.get(f"sessions:{key}")
        assert time.monotonic() - started < 1.0
        # A group with a source still answers, from the source, while the owner is down.
        assert client.get(f"scores:{skey}") == f"value-of-{skey}".encode()
        assert cluster.http("GET", f"/v1/sessions/{key}")[0] == 503
    finally:
        cluster.stop()


def test_add_with_an_expired_exptime_is_still_conditional(cluster):
    client = cluster.memcache()
    client.set("sessions:keep", b"kept")
    assert client.add("sessions:keep", b"other", expire=-1, noreply=False) is False
    assert client.get("sessions:keep") == b"kept"
    assert client.add("sessions:fresh", b"gone", expire=-1, noreply=False) is True
    assert client.get("sessions:fresh") is None


def test_pipelined_large_gets_come_back_whole_and_in_order(cluster):
    # Thirty gets of 90 KB values in one send: each node's answer frame is ended past
    # 64 KiB and the rest follow in frames of their own; every answer comes back whole,
    # in the order asked, and a multi-get of them all too.
    client = cluster.memcache()
    values = {f"sessions:big-{i}": bytes([65 + i % 26]) * (90_000 + i) for i in range(30)}
    assert client.set_many(values, noreply=False) == []  # stored before the gets are sent
    names = list(values)
    with socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=10) as sock:
        sock.sendall(b"".join(b"get %s\r\n" % k.encode() for k in names))
        expected = b"".join(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k.encode(), len(v), v)
                            for k, v in values.items())
        got = b""
        while len(got) < len(expected):
            data = sock.recv(1 << 20)
            assert data, "the router closed the connection"
            got += data
    assert got == expected
    assert client.get_many(names) == values
