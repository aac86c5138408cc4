"""Warm-up for real: after a node is added, or removed while it still runs, every key that
was cached is read from its previous owner, over memcached gets, multi-gets and HTTP
alike, for read-through and plain groups: none is loaded from the source again."""

from __future__ import annotations

import time

import pytest

from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

WARMUP = "  warmup: 30s\n"
KEYS = [f"k{i:03d}" for i in range(300)]


def read_all(cluster, mc) -> tuple[dict, dict]:
    """Every key of both groups, a third each by get, multi-get and HTTP."""
    scores, sessions = {}, {}
    thirds = [KEYS[0::3], KEYS[1::3], KEYS[2::3]]
    for key in thirds[0]:
        scores[key] = mc.get(key)
        sessions[key] = mc.get(f"sessions:{key}")
    for i in range(0, len(thirds[1]), 20):
        chunk = thirds[1][i:i + 20]
        got = mc.get_many(chunk + [f"sessions:{k}" for k in chunk])
        for key in chunk:
            scores[key] = got.get(key)
            sessions[key] = got.get(f"sessions:{key}")
    for key in thirds[2]:
        for group, out in (("scores", scores), ("sessions", sessions)):
            status, body = cluster.http("GET", f"/v1/{group}/{key}")
            out[key] = body if status == 200 else None
    return scores, sessions


def check(cluster, mc, loads: int) -> None:
    scores, sessions = read_all(cluster, mc)
    assert scores == {k: f"value-of-{k}".encode() for k in KEYS}
    assert sessions == {k: f"session-{k}".encode() for k in KEYS}
    assert len(cluster.loads()) == loads  # not one key loaded from the source again


def test_a_node_added_or_removed_is_warmed_up_without_a_load(tmp_path):
    cluster = Cluster(tmp_path, nodes=3, router_extra=WARMUP).start()
    try:
        mc = cluster.memcache()
        for key in KEYS:
            assert mc.get(key) == f"value-of-{key}".encode()
            assert mc.set(f"sessions:{key}", f"session-{key}", noreply=False)
        loads = len(cluster.loads())
        assert loads == len(KEYS)

        cluster.add_node_name("node-3")
        cluster.start_node("node-3")
        cluster.write_topology(cluster.node_names + ["node-3"])
        assert cluster.http_json("POST", "/v1/reload")["moved"] > 0.15
        time.sleep(1.5)  # the file watch applies the same file again: the window stays
        check(cluster, mc, loads)
        assert cluster.http_json("GET", "/v1/stats")["router"]["warmup_hits"] > 0

        # node-0 leaves the ring while it still runs: its keys are drained from it.
        cluster.write_topology(["node-1", "node-2", "node-3"])
        assert cluster.http_json("POST", "/v1/reload")["nodes_removed"] == ["node-0"]
        check(cluster, mc, loads)
    finally:
        cluster.stop()
