"""The `ringcache` client commands against a stdlib HTTP server that plays the router."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote_to_bytes, urlsplit

import pytest

from router.cli.client import DEFAULT_ROUTER, main, router_url

STATS = {
    "router": {"hits": 30, "misses": 10, "loads": 4, "node_errors": 2,
               "health": {"node-a": {"state": "up", "marked_down": 0, "timeouts": 0, "errors": 0,
                                     "latency": {"count": 4, "seconds": 0.002}},
                          "node-b": {"state": "down", "marked_down": 1, "timeouts": 0, "errors": 2,
                                     "latency": {"count": 0, "seconds": 0.0},
                                     "down_reason": "connect failed: refused"}},
               "groups": {"scores": {"hits": 30, "misses": 10, "loads": 4,
                                     "load_results": {"ok": 4}, "load_seconds": 0.4},
                          "sessions": {"hits": 0, "misses": 0, "loads": 0, "load_results": {},
                                       "load_seconds": 0}},
               "latency": {"memcache/get": {"count": 40, "seconds": 0.02}}},
    "config": {"digest": "ab12", "last_error": None},
    "nodes": {"node-a": {"groups": [{"name": "scores", "items": 6, "bytes": 2048,
                                     "max_bytes": 1048576, "evictions": 1},
                                    {"name": "sessions", "items": 0, "bytes": 0,
                                     "max_bytes": 1048576, "evictions": 0}],
                         "bytes": 2048, "max_memory": 2097152},
              "node-b": {"error": "node node-b unavailable: refused"}}}
RING = {"digest": "ab12", "vnodes": 160, "nodes": [
    {"name": "node-a", "address": "127.0.0.1:7001", "weight": 1.0, "share": 0.3334,
     "state": "up", "healthy": True, "marked_down": 0, "timeouts": 0},
    {"name": "node-bb", "address": "127.0.0.1:17002", "weight": 2.5, "share": 0.6666,
     "state": "down", "healthy": False, "down_reason": "refused", "marked_down": 2,
     "timeouts": 31},
], "warmup": {"active": True, "seconds_left": 12.4, "previous_digest": "9f00"}}
PLAN = {"moved": 0.25, "digest": "cd34", "new_digest": "ef56",
        "moves": [{"from": "node-a", "to": "node-c", "share": 0.25}],
        "shares_before": {"node-a": 0.5, "node-b": 0.5},
        "shares_after": {"node-a": 0.25, "node-b": 0.5, "node-c": 0.25}}
REFUSED = "topology.yaml: nodes[0].address: expected HOST:PORT, got 'x'"


class FakeRouterHandler(BaseHTTPRequestHandler):
    """Answers like the router's HTTP API, from the server's dict store and canned documents."""

    def do_GET(self):
        self._serve()

    def do_PUT(self):
        self._serve()

    def do_DELETE(self):
        self._serve()

    def do_POST(self):
        self._serve()

    def _serve(self):
        fake = self.server
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake.requests.append((self.command, self.path, body))
        route = (self.command, url.path)
        if route == ("GET", "/v1/stats"):
            return self._reply(*fake.stats_answer)
        if route == ("GET", "/v1/ring"):
            return self._json(200, RING)
        if route == ("POST", "/v1/reload"):
            return self._json(*fake.reload_answer)
        if route == ("POST", "/v1/plan"):
            if b"nodes" in body:
                return self._json(200, PLAN)
            return self._json(400, {"error": "<plan>: nodes: required key is missing"})
        where = url.path.startswith("/v1/where/")
        group, _, key = url.path.removeprefix("/v1/where/" if where else "/v1/").partition("/")
        group, key = unquote_to_bytes(group).decode(), unquote_to_bytes(key)
        if group != "scores":
            return self._json(404, {"error": f"unknown group {group!r}"})
        if where:
            return self._json(200, {"group": group, "key": key.decode(), "node": "node-a"})
        if self.command == "GET":
            if key not in fake.store:
                return self._json(404, {"error": "not found"})
            return self._reply(200, fake.store[key], "application/octet-stream")
        if self.command == "PUT":
            fake.store[key] = body
        else:
            fake.store.pop(key, None)
        self._reply(204, b"", None)

    def _json(self, code, document):
        self._reply(code, json.dumps(document).encode(), "application/json")

    def _reply(self, code, body, content_type):
        self.send_response(code)
        if content_type:
            self.send_header("Content-Type", content_type)
        if code != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def fake():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRouterHandler)
    server.requests, server.store = [], {}
    server.stats_answer = (200, json.dumps(STATS).encode(), "application/json")
    server.reload_answer = (200, {"applied": True, "digest": "cd34", "moved": 0.25})
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval keeps shutdown() quick; the default waits up to half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def status(argv) -> int:
    """main()'s exit status: returned, or raised as SystemExit for bad input like argparse."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def run(fake, capsysbinary, *argv):
    code = status([*argv, "--router", fake.url])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


# -- values ------------------------------------------------------------------------------

def test_set_then_get_gives_back_the_value_and_a_newline_or_the_raw_bytes(fake, capsysbinary):
    assert run(fake, capsysbinary, "set", "scores", "alice", "42") == (0, b"", "")
    assert run(fake, capsysbinary, "get", "scores", "alice") == (0, b"42\n", "")
    assert run(fake, capsysbinary, "get", "scores", "alice", "--raw") == (0, b"42", "")
    code, out, _ = run(fake, capsysbinary, "get", "scores", "alice", "--json")
    assert json.loads(out) == {"group": "scores", "key": "alice", "value": "42"}
    fake.requests.clear()
    fake.store[b"bin"] = b"\xff\x00"
    code, out, _ = run(fake, capsysbinary, "get", "scores", "bin", "--json")
    assert json.loads(out) == {"group": "scores", "key": "bin", "value_base64": "/wA="}
    assert fake.requests == [("GET", "/v1/scores/bin", b"")]


def test_keys_are_percent_encoded_whole(fake, capsysbinary):
    key = "a/b c?d#é"
    assert run(fake, capsysbinary, "set", "scores", key, "v")[0] == 0
    assert fake.requests[0][1] == "/v1/scores/a%2Fb%20c%3Fd%23%C3%A9"
    assert fake.store == {"a/b c?d#é".encode(): b"v"}
    assert run(fake, capsysbinary, "get", "scores", key, "--raw") == (0, b"v", "")


def test_set_passes_the_ttl_as_given(fake, capsysbinary):
    assert run(fake, capsysbinary, "set", "scores", "k", "v", "--ttl", "5m")[0] == 0
    assert run(fake, capsysbinary, "set", "--ttl", "1.5", "scores", "k", "v")[0] == 0
    assert [path for _, path, _ in fake.requests] == ["/v1/scores/k?ttl=5m",
                                                     "/v1/scores/k?ttl=1.5"]


def test_set_dash_reads_the_value_from_stdin(fake, capsysbinary, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\x00binary\nvalue")))
    assert run(fake, capsysbinary, "set", "scores", "k", "-") == (0, b"", "")
    assert fake.store == {b"k": b"\x00binary\nvalue"}


def test_get_of_a_missing_key_exits_1_with_one_line(fake, capsysbinary):
    assert run(fake, capsysbinary, "get", "scores", "nobody") == (
        1, b"", "ringcache get: not found (HTTP 404)\n")


def test_unknown_group_exits_1_with_the_routers_error(fake, capsysbinary):
    assert run(fake, capsysbinary, "get", "nope", "k") == (
        1, b"", "ringcache get: unknown group 'nope' (HTTP 404)\n")


def test_delete(fake, capsysbinary):
    fake.store[b"k"] = b"v"
    assert run(fake, capsysbinary, "delete", "scores", "k") == (0, b"", "")
    assert fake.store == {}
    assert fake.requests == [("DELETE", "/v1/scores/k", b"")]
    code, out, _ = run(fake, capsysbinary, "delete", "scores", "k", "--json")
    assert json.loads(out) == {"group": "scores", "key": "k", "deleted": True}


# -- admin -------------------------------------------------------------------------------

def test_stats_prints_tables_with_hit_ratios(fake, capsysbinary):
    code, out, err = run(fake, capsysbinary, "stats")
    assert (code, err) == (0, "")
    assert out.decode().splitlines() == [
        "ring ab12: 1 of 2 nodes up, hit ratio 75.0% (30 hits, 10 misses), 4 loads, 2 node errors",
        "",
        "GROUP     HIT RATIO  HITS  MISSES  LOADS  LOAD TIME  ITEMS  BYTES  BUDGET  EVICTIONS",
        "scores        75.0%    30      10      4   100.00ms      6   2KiB    1MiB          1",
        "sessions          -     0       0      0          -      0     0B    1MiB          0",
        "",
        "NODE    STATE                           ITEMS  BYTES  MEMORY  ERRORS  TIMEOUTS  ROUND TRIP",
        "node-a  up                                  6   2KiB    2MiB       0         0      0.50ms",
        "node-b  down (connect failed: refused)      0      -       -       2         0           -",
        "",
        "REQUESTS      COUNT    MEAN",
        "memcache get     40  0.50ms",
    ]


def test_stats_json_is_the_routers_document(fake, capsysbinary):
    assert run(fake, capsysbinary, "stats", "--json") == (
        0, json.dumps(STATS, indent=2).encode() + b"\n", "")


def test_a_non_json_error_reports_its_first_line(fake, capsysbinary):
    fake.stats_answer = (500, b"Internal Server Error\ntraceback...", "text/plain")
    assert run(fake, capsysbinary, "stats") == (
        1, b"", "ringcache stats: Internal Server Error (HTTP 500)\n")


def test_ring_prints_a_table(fake, capsysbinary):
    assert run(fake, capsysbinary, "ring") == (0, (
        b"ring ab12, 160 vnodes per unit of weight\n"
        b"warming up from ring 9f00: 12s left\n"
        b"NAME     ADDRESS          WEIGHT  SHARE  STATE           DOWNS  TIMEOUTS\n"
        b"node-a   127.0.0.1:7001        1  33.3%  up                  0         0\n"
        b"node-bb  127.0.0.1:17002     2.5  66.7%  down (refused)      2        31\n"), "")


def test_a_long_down_reason_is_cut_in_the_table_and_whole_in_json(fake, capsysbinary):
    reason = ("connect failed: TLS handshake: [('SSL routines', '', 'certificate verify failed')"
              " while checking the peer's certificate chain against the cluster CA ") * 3
    RING["nodes"][1]["down_reason"] = reason
    try:
        code, out, _ = run(fake, capsysbinary, "ring")
        line = out.decode().splitlines()[-1]
        assert len(line) < 130 and "…" in line and line.endswith("2        31")
        code, out, _ = run(fake, capsysbinary, "ring", "--json")
        assert json.loads(out)["nodes"][1]["down_reason"] == reason
    finally:
        RING["nodes"][1]["down_reason"] = "refused"


def test_ring_json(fake, capsysbinary):
    code, out, err = run(fake, capsysbinary, "ring", "--json")
    assert (code, json.loads(out), err) == (0, RING, "")


def test_where(fake, capsysbinary):
    assert run(fake, capsysbinary, "where", "scores", "a/b") == (
        0, b"scores/a/b is on node-a\n", "")
    code, out, err = run(fake, capsysbinary, "where", "scores", "a/b", "--json")
    assert (code, json.loads(out), err) == (0, {"group": "scores", "key": "a/b",
                                                "node": "node-a"}, "")
    assert fake.requests[0][1] == "/v1/where/scores/a%2Fb"


def test_reload_applied(fake, capsysbinary):
    assert run(fake, capsysbinary, "reload") == (
        0, b"applied: ring cd34, 25.0% of the keys moved\n", "")
    fake.requests.clear()
    code, out, err = run(fake, capsysbinary, "reload", "--json")
    assert (code, json.loads(out), err) == (
        0, {"applied": True, "digest": "cd34", "moved": 0.25}, "")
    assert fake.requests == [("POST", "/v1/reload", b"")]


def test_reload_refused_exits_1_with_the_error(fake, capsysbinary):
    fake.reload_answer = (400, {"applied": False, "error": REFUSED})
    assert run(fake, capsysbinary, "reload") == (1, b"", f"ringcache reload: refused: {REFUSED}\n")


def test_plan_posts_the_file(fake, capsysbinary, tmp_path):
    new = tmp_path / "new.yaml"
    new.write_bytes(b"nodes: []\n")
    code, out, err = run(fake, capsysbinary, "plan", str(new), "--json")
    assert (code, json.loads(out), err) == (0, PLAN, "")
    assert fake.requests == [("POST", f"/v1/plan?name={quote(str(new), safe='')}",
                              b"nodes: []\n")]
    assert run(fake, capsysbinary, "plan", str(new)) == (0, (
        b"25.0% of the keys would move (ring cd34 -> ef56)\n"
        b"\n"
        b"FROM    TO      SHARE\n"
        b"node-a  node-c  25.0%\n"
        b"\n"
        b"NODE    SHARE NOW  SHARE AFTER\n"
        b"node-a      50.0%        25.0%\n"
        b"node-b      50.0%        50.0%\n"
        b"node-c          -        25.0%\n"), "")


def test_plan_of_an_invalid_topology_is_bad_input(fake, capsysbinary, tmp_path):
    new = tmp_path / "new.yaml"
    new.write_bytes(b"router: {}\n")
    assert run(fake, capsysbinary, "plan", str(new)) == (
        2, b"", "ringcache plan: <plan>: nodes: required key is missing\n")


# -- bad input and unreachable router ----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["get"], "the following arguments are required: GROUP, KEY"),
    (["get", "scores"], "the following arguments are required: KEY"),
    (["where", "scores"], "the following arguments are required: KEY"),
    (["set", "scores", "k"], "the following arguments are required: VALUE"),
    (["set", "scores", "k", "v", "--ttl", "abc"],
     "argument --ttl: expected a duration like 500ms, 30s, 5m or 1h, got 'abc'"),
    (["set", "scores", "k", "v", "--ttl", "-1"],
     "argument --ttl: expected a duration like 500ms, 30s, 5m or 1h, got '-1'"),
    (["get", "scores", "k", "--ttl", "5"], "unrecognized arguments: --ttl 5"),
    (["get", "scores", "k", "--bogus"], "unrecognized arguments: --bogus"),
    (["stats", "extra"], "unrecognized arguments: extra"),
    (["stats", "--timeout", "soon"],
     "argument --timeout: expected a duration like 500ms, 30s, 5m or 1h, got 'soon'"),
    (["plan"], "the following arguments are required: NEW_TOPOLOGY"),
    (["plan", "/nonexistent/new.yaml"],
     "/nonexistent/new.yaml: cannot read: No such file or directory"),
])
def test_bad_input_exits_2_with_one_line_and_no_request(fake, capsysbinary, argv, message):
    assert run(fake, capsysbinary, *argv) == (2, b"", f"ringcache {argv[0]}: {message}\n")
    assert fake.requests == []


def test_a_router_that_does_not_answer_is_one_line_after_the_timeout(capsys):
    with socket.socket() as s:  # accepts (the kernel's backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        started = time.monotonic()
        assert main(["ring", "--router", url, "--timeout", "300ms"]) == 1
        assert time.monotonic() - started < 3
    assert capsys.readouterr() == ("", f"ringcache: cannot reach the router at {url}: "
                                       "no answer within 0.3s (--timeout)\n")


def test_unreachable_router_exits_1_with_one_line(capsys):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        assert main(["stats", "--router", url]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"ringcache: cannot reach the router at {url}: "
                              f"[Errno 111] Connection refused\n")


# -- finding the router ------------------------------------------------------------------

def test_router_url_from_the_topology_in_the_current_directory(fake, capsys, tmp_path,
                                                                monkeypatch):
    port = fake.server_address[1]
    # Only router.http is read: the rest may be broken, the router will say how.
    (tmp_path / "topology.yaml").write_text(f"router: {{http: '127.0.0.1:{port}', bogus: 1}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == STATS


def test_router_url_from_dash_c(fake, tmp_path):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("router:\n  http: 10.0.0.5:9090\n")
    assert router_url(None, str(path)) == "http://10.0.0.5:9090"
    assert router_url("10.0.0.6:80", str(path)) == "http://10.0.0.6:80"
    assert router_url("https://r.example/", str(path)) == "https://r.example"


def test_router_url_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert router_url(None, None) == DEFAULT_ROUTER
    (tmp_path / "topology.yaml").write_text("nodes: []\n")
    assert router_url(None, None) == DEFAULT_ROUTER


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http:///v1", "://x"])
def test_a_bad_router_url_is_bad_input(capsys, url):
    assert status(["stats", "--router", url]) == 2
    assert capsys.readouterr() == (
        "", f"ringcache stats: --router: expected a URL like {DEFAULT_ROUTER}, got {url!r}\n")


@pytest.mark.parametrize("text, message", [
    ("router: {http: nope}\n", "router.http: expected HOST:PORT, got 'nope'"),
    ("router: [\n", "not valid YAML at line 2, column 1: expected the node content"),
    ("router:\n  http: 1.2.3.4:5\n bad: [1\n",
     "not valid YAML at line 3, column 2: expected <block end>, but found '<block mapping start>'"),
])
def test_a_topology_without_a_usable_router_address_is_bad_input(capsys, tmp_path, text,
                                                                   message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    assert status(["stats", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"ringcache stats: {path}: {message}")
    assert err.count("\n") == 1 and err.endswith("\n")


def test_a_missing_dash_c_file_is_bad_input(capsys, tmp_path):
    path = tmp_path / "missing.yaml"
    assert status(["ring", "-c", str(path)]) == 2
    assert capsys.readouterr() == ("", f"ringcache ring: {path}: no such file\n")
