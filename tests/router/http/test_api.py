"""The router's HTTP front end, driven through a real Site over StringTransport."""

from __future__ import annotations

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from router.cluster.errors import (
    NodeError,
    NodeTimeout,
    NodeUnavailable,
    SourceBusy,
    SourceError,
)
from router.cluster.loads import LoadLimiter
from router.cluster.router import Item
from router.config.topology import TopologyError
from router.http import metrics
from tests.fakes import CONFIG, RING, FakeHTTPRouter, HTTPConn, Response


@pytest.fixture
def router():
    return FakeHTTPRouter()




@pytest.fixture
def client(router):
    return HTTPConn(router)


def call(client, method, path, body=b"", headers=None) -> Response:
    client.send(method, path, body, headers)
    return client.response()


# -- values ------------------------------------------------------------------------------

def test_get_hit_answers_the_raw_value(router, client):
    router.items["scores", b"alice"] = b"\x00\x01 42"
    r = call(client, "GET", "/v1/scores/alice")
    assert (r.code, r.body) == (200, b"\x00\x01 42")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == "5"
    assert router.stats.requests == {("http", "get", "hit"): 1}


def test_gets_name_their_connection_so_its_loads_queue_apart(router, client):
    # router/cluster/loads.py serves a group's waiting loads a connection at a time.
    call(client, "GET", "/v1/scores/a")
    call(client, "GET", "/v1/scores/b")
    call(HTTPConn(router), "GET", "/v1/scores/c")
    first, again, other = router.conns
    assert first is again and first is not None
    assert other is not first and other is not None


def test_get_miss_is_404_not_found(router, client):
    r = call(client, "GET", "/v1/scores/nobody")
    assert r.code == 404
    assert r.json() == {"error": "not found"}
    assert router.stats.requests == {("http", "get", "miss"): 1}


def test_get_unknown_group_is_404_naming_it(router, client):
    r = call(client, "GET", "/v1/nope/k")
    assert r.code == 404
    assert r.json() == {"error": "unknown group 'nope'"}
    assert router.stats.requests == {("http", "get", "error"): 1}


@pytest.mark.parametrize("error, code, message", [
    (SourceError("python:demo:score", "boom"), 502, "source python:demo:score failed: boom"),
    (NodeError("UNKNOWN_GROUP"), 502, "UNKNOWN_GROUP"),
    (NodeUnavailable("node-a", "connection refused"), 503,
     "node node-a unavailable: connection refused"),
    (SourceBusy("python:demo:score", 16, 256), 503,
     "source python:demo:score busy: 16 loads running, 256 waiting"),
])
def test_get_errors_map_to_gateway_statuses(router, client, error, code, message):
    router.failures[b"k"] = error
    r = call(client, "GET", "/v1/scores/k")
    assert r.code == code
    assert r.json() == {"error": message}
    assert router.stats.requests == {("http", "get", "error"): 1}


def test_a_read_that_timed_out_is_504(router, client):
    router.failures[b"k"] = NodeTimeout("node-a", 0.5)
    r = call(client, "GET", "/v1/scores/k")
    assert (r.code, r.json()) == (504, {"error": "node node-a unavailable: no answer within 500ms"})


def test_a_write_that_timed_out_is_504_with_its_outcome_unknown(router, client):
    router.failures[b"k"] = NodeTimeout("node-a", 0.5)
    r = call(client, "PUT", "/v1/sessions/k", b"v")
    assert r.code == 504
    assert r.json() == {"error": "node node-a unavailable: no answer within 500ms; the outcome "
                                 "is unknown, the write may yet be applied"}


def test_unexpected_error_is_500_and_logged(router, client):
    router.failures[b"k"] = RuntimeError("bug")
    with capturedLogs() as events:
        r = call(client, "GET", "/v1/scores/k")
    assert r.code == 500
    assert r.json() == {"error": "internal error"}
    failures = [e for e in events if "log_failure" in e]
    assert [e["log_failure"].value.args for e in failures] == [("bug",)]
    assert router.stats.requests == {("http", "get", "error"): 1}


@pytest.mark.parametrize("path, group, key", [
    ("/v1/scores/a/b", "scores", b"a/b"),
    ("/v1/scores/a%2Fb%20c", "scores", b"a/b c"),
    ("/v1/scores//lead/trail/", "scores", b"/lead/trail/"),
    ("/v1/scores/%00%ff%E2%82%AC", "scores", b"\x00\xff\xe2\x82\xac"),
    ("/v1/scores/a+b", "scores", b"a+b"),
    ("/v1/scores/q?ignored=1", "scores", b"q"),
    ("/v1/scores/%3Fx%23y", "scores", b"?x#y"),
    ("/v1/sess%69ons/k", "sessions", b"k"),
])
def test_keys_are_the_raw_rest_of_the_path_percent_decoded(router, client, path, group, key):
    router.items[group, key] = b"found"
    r = call(client, "GET", path)
    assert (r.code, r.body) == (200, b"found")


def test_head_has_the_headers_of_get_without_the_body(router, client):
    router.items["scores", b"k"] = b"12345"
    client.send("HEAD", "/v1/scores/k")
    data = client.transport.value()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 5\r\n" in data
    assert data.endswith(b"\r\n\r\n")
    assert router.stats.requests == {("http", "get", "hit"): 1}


def test_head_of_a_missing_key_is_404(client):
    client.send("HEAD", "/v1/scores/none")
    data = client.transport.value()
    assert data.startswith(b"HTTP/1.1 404 ")
    assert data.endswith(b"\r\n\r\n")


def test_put_stores_the_body_and_answers_204(router, client):
    r = call(client, "PUT", "/v1/scores/a/b", b"v\x00v")
    assert (r.code, r.body) == (204, b"")
    assert "content-length" not in r.headers
    assert router.sets == [("scores", b"a/b", b"v\x00v", None)]
    assert router.stats.requests == {("http", "set", "ok"): 1}


@pytest.mark.parametrize("query, ttl", [("ttl=30", 30.0), ("ttl=1.5", 1.5), ("ttl=5m", 300.0),
                                        ("ttl=0", 0.0), ("other=1&ttl=2", 2.0)])
def test_put_takes_a_ttl(router, client, query, ttl):
    assert call(client, "PUT", f"/v1/scores/k?{query}", b"v").code == 204
    assert router.sets == [("scores", b"k", b"v", ttl)]


@pytest.mark.parametrize("query, bad", [("abc", "abc"), ("-1", "-1"), ("", ""), ("1e3", "1e3"),
                                        ("nan", "nan"), ("5%20days", "5 days")])
def test_put_with_a_bad_ttl_is_400_and_stores_nothing(router, client, query, bad):
    r = call(client, "PUT", f"/v1/scores/k?ttl={query}", b"v")
    assert r.code == 400
    assert r.json() == {"error": f"ttl: expected a duration like 500ms, 30s, 5m or 1h, "
                                 f"got {bad!r}"}
    assert router.sets == []
    assert router.stats.requests == {("http", "set", "error"): 1}


def test_put_keeps_a_form_encoded_body_as_sent(router, client):
    body = b"a=1&b=2"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert call(client, "PUT", "/v1/scores/k", body, headers).code == 204
    assert router.sets == [("scores", b"k", body, None)]


def test_put_over_the_item_limit_is_413(router, client):
    r = call(client, "PUT", "/v1/scores/k", b"x" * 11)
    assert r.code == 413
    assert r.json() == {"error": "value of 11 bytes is over the item limit of 10"}
    assert router.stats.requests == {("http", "set", "error"): 1}


def test_put_to_an_unknown_group_is_404(client):
    r = call(client, "PUT", "/v1/nope/k", b"v")
    assert (r.code, r.json()) == (404, {"error": "unknown group 'nope'"})


def test_delete_answers_204_whether_or_not_the_key_was_there(router, client):
    router.items["scores", b"k"] = b"v"
    assert call(client, "DELETE", "/v1/scores/k").code == 204
    assert router.items == {}
    assert call(client, "DELETE", "/v1/scores/k").code == 204
    assert router.stats.requests == {("http", "delete", "ok"): 2}


@pytest.mark.parametrize("path", ["/v1/scores/", "/v1/scores", "/v1//k", "/v1/"])
def test_a_value_path_without_group_or_key_is_404(client, path):
    r = call(client, "GET", path)
    assert r.code == 404
    assert r.json() == {"error": f"no such endpoint: {path} (expected /v1/GROUP/KEY)"}


# -- health, metrics, admin --------------------------------------------------------------

def test_the_status_page_is_one_self_contained_document(client):
    r = call(client, "GET", "/")
    assert (r.code, r.headers["content-type"]) == (200, "text/html; charset=utf-8")
    page = r.body.decode()
    assert page.startswith("<!doctype html>") and "/*SCRIPT*/" not in page
    assert "const SECTIONS = [" in page and "grid-template-columns" in page
    # Offline: nothing fetched from anywhere but the router itself.
    assert "://" not in page.replace("http://www.w3.org/2000/svg", "") and "url(" not in page
    assert 'src="' not in page


def test_healthz(client):
    r = call(client, "GET", "/healthz")
    assert (r.code, r.body, r.headers["content-type"]) == (200, b"ok\n",
                                                           "text/plain; charset=utf-8")


def test_metrics_export_the_router_registry(router, client):
    metrics.attach(router)
    router.items["scores", b"k"] = b"v"
    router.items["scores", b"loaded"] = b"v"
    router.loaded.add(b"loaded")
    call(client, "GET", "/v1/scores/k")
    router.reactor.advance(0.003)  # a get answered 3 ms after it came in
    router.pending = Deferred()
    client.send("GET", "/v1/scores/slow")
    router.reactor.advance(0.003)
    router.pending.callback(None)
    client.response()
    router.pending = None
    call(client, "GET", "/v1/scores/loaded")
    r = call(client, "GET", "/metrics")
    assert r.code == 200
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    lines = r.body.decode().splitlines()
    assert 'ringcache_requests_total{command="get",protocol="http",result="hit"} 1.0' in lines
    # A read-through load answered a value, but the cache did not have it: a miss.
    assert 'ringcache_requests_total{command="get",protocol="http",result="miss"} 2.0' in lines
    assert "ringcache_singleflight_inflight 0.0" in lines
    latency = 'ringcache_request_duration_seconds_bucket{command="get",le="%s",protocol="http"} %s'
    assert latency % ("0.001", "2.0") in lines
    assert latency % ("0.005", "3.0") in lines
    assert 'ringcache_request_duration_seconds_count{command="get",protocol="http"} 3.0' in lines
    # The nodes' figures, from the node that answered its STATS.
    assert 'ringcache_group_items{group="scores",node="node-a"} 3.0' in lines
    assert 'ringcache_group_bytes{group="scores",node="node-a"} 30.0' in lines
    assert 'ringcache_group_evictions_total{group="scores",node="node-a"} 0.0' in lines
    assert 'ringcache_node_max_memory_bytes{node="node-a"} 4096.0' in lines
    assert not [line for line in lines if 'node="node-b"' in line]


def test_every_series_of_the_table_is_exported(router, client):
    metrics.attach(router)
    r = call(client, "GET", "/metrics")
    names = {line.split()[2] for line in r.body.decode().splitlines()
             if line.startswith("# TYPE")}
    table = {s.name + ("_total" if s.kind == metrics.COUNTER else "")
             for s in (*metrics.ROUTER_SERIES, *metrics.NODE_SERIES)}
    assert table | {metrics.REQUEST_LATENCY} <= names


def test_stats_reports_router_counters_nodes_and_config(router, client):
    stats = router.stats
    stats.group_hits["scores"], stats.group_misses["scores"] = 5, 2
    stats.group_loads["scores"] = 1
    stats.observe_load("scores", 0.25, None)
    stats.node_errors_by["node-b"], stats.failovers = 3, 4
    stats.warmup_hits, stats.negative_hits, stats.replica_errors = 8, 9, 10
    stats.count("memcache", "get", "hit", 5)
    stats.observe("memcache", "get", 0.002, 5)
    router.flight.coalesced = 6
    router.flight.do("inflight", Deferred)
    loads = router.groups["scores"].loads = LoadLimiter("s", concurrency=1, queue=1)
    for _ in range(4):  # one runs, one waits, two are refused
        loads.run(lambda: (Deferred(),) * 2).addErrback(lambda failure: None)
    r = call(client, "GET", "/v1/stats")
    assert r.code == 200
    group = {"name": "scores", "policy": "lru", "items": 3, "bytes": 30, "max_bytes": 1024,
             "hits": 7, "misses": 0, "evictions": 0, "expirations": 0, "sets": 0}
    assert r.json() == {
        "router": {"hits": 5, "misses": 2, "loads": 1, "coalesced": 6, "inflight": 1,
                   "node_errors": 3, "failovers": 4, "warmup_hits": 8, "negative_hits": 9,
                   "replica_errors": 10, "health": {}, "requests": {"memcache/get/hit": 5},
                   "latency": {"memcache/get": {"count": 5, "seconds": 0.01}},
                   "groups": {
                       "scores": {"hits": 5, "misses": 2, "loads": 1, "load_results": {"ok": 1},
                                  "load_seconds": 0.25},
                       "sessions": {"hits": 0, "misses": 0, "loads": 0, "load_results": {},
                                    "load_seconds": 0}},
                   "source_loads": {"scores": {"running": 1, "waiting": 1, "refused": 2}}},
        "config": CONFIG,
        "nodes": {
            "node-a": {"groups": [group], "max_memory": 4096, "bytes": 30, "uptime": 1.5,
                       "connections": 0, "frames": 0, "requests": 0, "configured": True},
            "node-b": {"error": "node node-b unavailable: refused"},
        },
    }


def test_ring(client):
    r = call(client, "GET", "/v1/ring")
    assert (r.code, r.json()) == (200, RING)


def test_where_names_the_owner(client):
    r = call(client, "GET", "/v1/where/scores/a/b%20c")
    assert r.code == 200
    assert r.json() == {"group": "scores", "key": "a/b c", "node": "node-a",
                        "address": "127.0.0.1:7001", "state": "up"}


def test_where_in_an_unknown_group_is_404(client):
    r = call(client, "GET", "/v1/where/nope/k")
    assert (r.code, r.json()) == (404, {"error": "unknown group 'nope'"})


@pytest.mark.parametrize("answer", [
    lambda: {"applied": True, "digest": "cd34", "moved": 0.25},
    lambda: succeed({"applied": True, "digest": "cd34", "moved": 0.25}),
])
def test_reload_applied_is_200(router, client, answer):
    router.reload_answer = answer
    r = call(client, "POST", "/v1/reload")
    assert (r.code, r.json()) == (200, {"applied": True, "digest": "cd34", "moved": 0.25})


def _refuse():
    raise TopologyError("topology.yaml: nodes[1].address: expected HOST:PORT, got 'x'")


def _import_fails():
    raise ModuleNotFoundError("No module named 'gone'")


@pytest.mark.parametrize("answer, error", [
    (_refuse, "topology.yaml: nodes[1].address: expected HOST:PORT, got 'x'"),
    (lambda: fail(TopologyError("topology.yaml: nodes[1].address: expected HOST:PORT, got 'x'")),
     "topology.yaml: nodes[1].address: expected HOST:PORT, got 'x'"),
    (_import_fails, "No module named 'gone'"),
])
def test_reload_refused_is_400_and_says_why(router, client, answer, error):
    router.reload_answer = answer
    r = call(client, "POST", "/v1/reload")
    assert (r.code, r.json()) == (400, {"applied": False, "error": error})


NEW_TOPOLOGY = """\
router: {default_group: scores}
nodes:
  - {name: node-a, address: 127.0.0.1:7001}
  - {name: node-d, address: 127.0.0.1:7004, weight: 2}
groups: {scores: {}}  # é
"""


def test_plan_parses_the_posted_topology_and_answers_the_plan(router, client):
    r = call(client, "POST", "/v1/plan?name=new.yaml", NEW_TOPOLOGY.encode(),
             {"Content-Type": "application/x-www-form-urlencoded"})
    assert (r.code, r.json()) == (200, {"digest": "ab12", "new_digest": "ef56", "moved": 0.5})
    [topology] = router.plans
    assert [(n.name, n.weight) for n in topology.nodes] == [("node-a", 1.0), ("node-d", 2.0)]
    assert topology.path == "new.yaml"


@pytest.mark.parametrize("document, error", [
    (b"router: {default_group: scores}\ngroups: {scores: {}}\n",
     "new.yaml: nodes: required key is missing"),
    (b"router: [\n", "new.yaml: line 2, column 1: expected the node content, but found "
                     "'<stream end>'"),
    (b"\xff\xfe", "new.yaml: not UTF-8 text"),
])
def test_plan_of_an_invalid_topology_is_400_naming_it(router, client, document, error):
    r = call(client, "POST", "/v1/plan?name=new.yaml", document)
    assert (r.code, r.json()) == (400, {"error": error})
    assert router.plans == []


def test_plan_without_a_name_calls_the_document_posted(client):
    r = call(client, "POST", "/v1/plan", b"nodes: []\n")
    assert r.code == 400
    assert r.json()["error"].startswith("<posted topology>: ")


# -- routing -----------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/healthz", "GET, HEAD"),
    ("PUT", "/metrics", "GET, HEAD"),
    ("DELETE", "/v1/stats", "GET, HEAD"),
    ("POST", "/v1/ring", "GET, HEAD"),
    ("GET", "/v1/reload", "POST"),
    ("HEAD", "/v1/plan", "POST"),
    ("POST", "/v1/where/scores/k", "GET, HEAD"),
    ("POST", "/v1/scores/k", "DELETE, GET, PUT, HEAD"),
    ("PATCH", "/v1/scores/k", "DELETE, GET, PUT, HEAD"),
])
def test_wrong_method_is_405_with_allow(router, client, method, path, allow):
    client.send(method, path)
    data = client.transport.value()
    assert data.startswith(b"HTTP/1.1 405 ")
    assert f"\r\nAllow: {allow}\r\n".encode() in data
    if method != "HEAD":
        assert client.response().json() == {"error": f"method {method} not allowed on {path}"}
    assert router.sets == [] and router.plans == []


@pytest.mark.parametrize("path", ["/nope", "/v2/scores/k", "/healthz/x", "/v1", "//"])
def test_unknown_path_is_404(client, path):
    r = call(client, "GET", path)
    assert r.code == 404
    assert r.json()["error"].startswith(f"no such endpoint: {path}")


# -- asynchrony --------------------------------------------------------------------------

def test_the_response_waits_for_the_router_and_the_connection_serves_on(router, client):
    router.pending = Deferred()
    client.send("GET", "/v1/scores/slow")
    assert client.transport.value() == b""
    router.pending.callback(Item(b"late"))
    assert client.response().body == b"late"
    assert call(client, "GET", "/healthz").body == b"ok\n"


def test_a_client_that_left_gets_nothing_written_and_nothing_logged(router, client):
    router.pending = Deferred()
    client.send("GET", "/v1/scores/slow")
    client.protocol.connectionLost(Failure(ConnectionDone()))
    with capturedLogs() as events:
        router.pending.callback(Item(b"late"))
    assert client.transport.value() == b""
    assert [e for e in events if "log_failure" in e] == []
    assert router.stats.requests == {("http", "get", "hit"): 1}
