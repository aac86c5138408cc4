"""The near cache of hot keys with real processes: two routers on the same three nodes, a
group with near_cache, a hot key read through both. A write through router A is read back
at once through A, and through B once B's ttl is over; the hits show in /metrics, the key
leads /v1/hot, and `ringcache hot` prints it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from tests.helpers import RINGCACHE, free_port, port_open, start_process, stop_process
from tests.integration.cluster import GROUPS, Cluster

pytestmark = pytest.mark.integration

TTL = 1.0
NEAR_GROUPS = GROUPS.replace("""  scores:
    source: {python: sources_for_tests:value}""", f"""  scores:
    near_cache: {{max_bytes: 1MiB, ttl: {TTL:g}s}}
    source: {{python: sources_for_tests:value}}""")


@pytest.fixture
def routers(tmp_path):
    cluster = Cluster(tmp_path, nodes=3, groups=NEAR_GROUPS).start()
    memcache, http = free_port(), free_port()
    second = None
    try:
        second = start_process(
            [*RINGCACHE, "router", "-c", str(cluster.topology), "--memcache",
             f"127.0.0.1:{memcache}", "--http", f"127.0.0.1:{http}"],
            lambda: port_open(memcache) and port_open(http), timeout=20)
        yield cluster, memcache, f"http://127.0.0.1:{http}"
    finally:
        if second is not None:
            stop_process(second)
        cluster.stop()


def client(port: int):
    from pymemcache.client.base import Client

    return Client(("127.0.0.1", port), timeout=5, connect_timeout=5)


def metric(base: str, line_start: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.split()[-1])
    return 0.0


def test_a_write_is_read_back_at_once_through_its_router_and_within_ttl_through_another(
        routers):
    cluster, b_port, b_http = routers
    a, b = cluster.memcache(), client(b_port)
    a.set("hot", b"v1")
    for _ in range(400):  # hot on both routers (one get in 32 is sampled; one sample admits a key)
        assert a.get("hot") == b"v1"
        assert b.get("hot") == b"v1"
    hits = 'ringcache_near_cache_hits_total{group="scores"}'
    assert metric(cluster.http_base, hits) > 300
    assert metric(b_http, hits) > 300
    assert metric(cluster.http_base, 'ringcache_near_cache_keys{group="scores"}') >= 1

    a.set("hot", b"v2")
    assert a.get("hot") == b"v2"  # at once, through the router that wrote it
    assert a.gets("hot")[0] == b"v2"
    written = time.monotonic()
    seen = b.get("hot")  # B may still answer what it held, for at most its ttl
    assert seen in (b"v1", b"v2")
    time.sleep(max(0.0, written + TTL + 0.1 - time.monotonic()))
    assert b.get("hot") == b"v2"

    # The same over HTTP: a PUT through A is read back through A at once.
    status, _ = cluster.http("PUT", "/v1/scores/hot", b"v3")
    assert status == 204
    assert cluster.http("GET", "/v1/scores/hot") == (200, b"v3")
    assert a.get("hot") == b"v3"


def test_the_hot_key_leads_v1_hot_and_ringcache_hot(routers):
    cluster, _, _ = routers
    mc = cluster.memcache()
    for i in range(40):
        mc.get(f"k{i}")
    for _ in range(400):
        mc.get("k7")
    document = cluster.http_json("GET", "/v1/hot")
    scores = document["groups"]["scores"]
    assert scores["keys"][0]["key"] == "k7" and scores["keys"][0]["hot"]
    assert scores["keys"][0]["near"]
    assert scores["near_cache"]["max_bytes"] == 1 << 20
    assert 0 < scores["near_cache"]["bytes"] <= 1 << 20
    rates = [k["rate"] for k in scores["keys"]]
    assert rates == sorted(rates, reverse=True)

    cli = [*RINGCACHE, "hot", "scores", "--router", cluster.http_base]
    table = subprocess.run(cli, capture_output=True, text=True, timeout=30, check=True).stdout
    lines = table.splitlines()
    assert lines[0].startswith("group scores: ") and "near cache" in lines[0]
    assert lines[1].split() == ["KEY", "GETS/S", "HOT", "NEAR"]
    assert lines[2].split()[0] == "k7" and lines[2].split()[2:] == ["yes", "yes"]
    as_json = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True,
                                        timeout=30, check=True).stdout)
    assert list(as_json["groups"]) == ["scores"]
    assert as_json["groups"]["scores"]["keys"][0]["key"] == "k7"
    wrong = subprocess.run([*RINGCACHE, "hot", "nope", "--router", cluster.http_base],
                           capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2
    assert "no group 'nope'" in wrong.stderr and "Traceback" not in wrong.stderr
