"""deploy/grafana/ringcache.json queries only series a live router exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ringcache.json"
METRIC = re.compile(r"\bringcache_[a-z_]+\b")


def queries(dashboard: dict) -> list[str]:
    out = []
    for panel in dashboard["panels"]:
        out += [target["expr"] for target in panel.get("targets", [])]
        for inner in panel.get("panels", []):
            out += [target["expr"] for target in inner.get("targets", [])]
    return out


def test_every_metric_the_dashboard_queries_is_in_a_live_metrics(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    exprs = queries(dashboard)
    assert len(exprs) >= 15
    wanted = {name for expr in exprs for name in METRIC.findall(expr)}
    cluster = Cluster(tmp_path, nodes=2).start()
    try:
        mc = cluster.memcache()
        for i in range(5):
            mc.get(f"k{i}")  # loads
            mc.get(f"k{i}")  # hits
        cluster.http("GET", "/v1/scores/k0")
        status, body = cluster.http("GET", "/metrics")
    finally:
        cluster.stop()
    assert status == 200
    exported = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()
                if line and not line.startswith("#")}
    assert sorted(wanted - exported) == []
    # The series a dashboard needs are there, with their labels.
    text = body.decode()
    for sample in ('ringcache_group_hits_total{group="scores"} 6.0',  # and one over HTTP
                   'ringcache_group_misses_total{group="scores"} 5.0',
                   'ringcache_requests_total{command="get",protocol="memcache",result="miss"} 5.0',
                   'ringcache_requests_total{command="get",protocol="memcache",result="hit"} 5.0'):
        assert sample in text.splitlines(), sample
    assert re.search(r'^ringcache_group_items\{group="scores",node="node-\d"\} [1-9]', text, re.M)
    assert re.search(r'^ringcache_request_duration_seconds_bucket\{command="get",le="\+Inf",'
                     r'protocol="memcache"\} 10\.0$', text, re.M)
    assert re.search(r'^ringcache_node_errors_total\{node="node-0"\} 0\.0$', text, re.M)
