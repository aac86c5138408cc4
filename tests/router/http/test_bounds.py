"""The HTTP API's admin token, reload rate, and bounds on what one client may send, driven
through the real Site over StringTransport with a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import base64

import copy

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from router.config.topology import parse_topology
from router.http.admin_token import AdminToken, TokenUnavailable, bearer, read_token
from router.http.api import ADMIN, OPEN, READ, build_site, protection
from router.http.bounds import IDLE_TIMEOUT, LINGER, LOG_INTERVAL, MAX_URL
from router.http.rate_limit import TokenBucket
from router.process.security import exposure_warnings
from tests.fakes import TOPOLOGY, FakeHTTPRouter, HTTPConn, parse_response

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def router():
    return FakeHTTPRouter()


def configure(router, tmp_path, security=None, limits=None, token=TOKEN):
    """Give ``router`` a topology with these blocks, as a reload would."""
    document = copy.deepcopy(TOPOLOGY)
    if token is not None:
        (tmp_path / "admin.token").write_text(f"{token}\n")
        document["security"] = {"token_file": "admin.token", **(security or {})}
    if limits:
        document["limits"] = limits
    router.topology = parse_topology(document, str(tmp_path / "topology.yaml"))
    router.item_size_max = router.topology.router.item_size_max


class Connection(HTTPConn):
    """Another connection to the same site (one site: one reload rate, one connection count)."""

    def __init__(self, site):
        self.site = site
        self.transport = StringTransport()
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol.makeConnection(self.transport)


def head(client, text: bytes):
    client.protocol.dataReceived(text)


def answer(client):
    data = client.transport.value()
    client.transport.clear()
    return parse_response(data)


def send(client, method, path, body=b"", headers=None):
    client.send(method, path, body, headers)
    return answer(client)


# -- who needs the token -----------------------------------------------------------------

@pytest.mark.parametrize("method, path, need", [
    (b"GET", b"/healthz", OPEN),
    (b"POST", b"/v1/reload", ADMIN),
    (b"GET", b"/v1/reload", ADMIN),
    (b"POST", b"/v1/plan", ADMIN),
    (b"PUT", b"/v1/scores/k", ADMIN),
    (b"DELETE", b"/v1/scores/a/b", ADMIN),
    (b"POST", b"/v1/scores/k", ADMIN),
    (b"GET", b"/v1/scores/k", READ),
    (b"HEAD", b"/v1/scores/k", READ),
    (b"GET", b"/v1/stats", READ),
    (b"GET", b"/v1/ring", READ),
    (b"GET", b"/v1/where/scores/k", READ),
    (b"GET", b"/metrics", READ),
    (b"GET", b"/nope", READ),
])
def test_protection_of_each_route(method, path, need):
    assert protection(method, path) == need


def test_without_a_token_everything_stays_open(router):
    client = HTTPConn(router)
    assert send(client, "POST", "/v1/reload").code == 200
    assert send(client, "PUT", "/v1/scores/k", b"v").code == 204


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/reload", b""),
    ("POST", "/v1/plan", b"nodes: []\n"),
    ("PUT", "/v1/scores/k", b"v"),
    ("DELETE", "/v1/scores/k", b""),
])
def test_admin_requests_without_the_token_are_401_and_do_nothing(router, tmp_path, method,
                                                                 path, body):
    configure(router, tmp_path)
    router.items["scores", b"k"] = b"old"
    reloads = []
    router.reload_answer = lambda: reloads.append(1) or {"applied": True}
    r = send(HTTPConn(router), method, path, body)
    assert r.code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="ringcache"'
    assert r.headers["connection"] == "close"
    assert r.json() == {"error": "this needs the admin token: send Authorization: Bearer TOKEN"}
    assert (reloads, router.plans, router.sets) == ([], [], [])
    assert router.items == {("scores", b"k"): b"old"}


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}x", "Bearer s3cret", f"Basic {TOKEN}"])
def test_a_wrong_token_is_401(router, tmp_path, authorization):
    configure(router, tmp_path)
    r = send(HTTPConn(router), "POST", "/v1/reload", headers={"Authorization": authorization})
    assert r.code == 401
    if authorization.startswith("Bearer"):
        assert r.json() == {"error": "wrong admin token"}
        assert r.headers["www-authenticate"] == 'Bearer realm="ringcache", error="invalid_token"'


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer  {TOKEN} ", f"BEARER {TOKEN}"])
def test_the_token_lets_admin_requests_through(router, tmp_path, authorization):
    configure(router, tmp_path)
    client = HTTPConn(router)
    headers = {"Authorization": authorization}
    assert send(client, "POST", "/v1/reload", headers=headers).code == 200
    assert send(client, "PUT", "/v1/scores/k", b"v", headers).code == 204
    assert send(client, "DELETE", "/v1/scores/k", headers=headers).code == 204


def test_reads_are_open_unless_protect_reads(router, tmp_path):
    configure(router, tmp_path)
    router.items["scores", b"k"] = b"v"
    client = HTTPConn(router)
    for path in ("/v1/scores/k", "/v1/ring", "/v1/where/scores/k", "/v1/stats", "/metrics"):
        assert send(client, "GET", path).code == 200, path
    configure(router, tmp_path, {"protect_reads": True})
    for path in ("/v1/scores/k", "/v1/ring", "/v1/where/scores/k", "/v1/stats", "/metrics"):
        assert send(HTTPConn(router), "GET", path).code == 401, path
        assert send(HTTPConn(router), "GET", path, headers=AUTH).code == 200, path
    assert send(HTTPConn(router), "GET", "/healthz").code == 200


def test_the_status_page_follows_the_read_rules_and_lets_a_browser_ask_for_the_token(
        router, tmp_path):
    configure(router, tmp_path)
    assert send(HTTPConn(router), "GET", "/").code == 200
    configure(router, tmp_path, {"protect_reads": True})
    r = send(HTTPConn(router), "GET", "/")
    assert r.code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="ringcache", charset="UTF-8"'
    basic = {"Authorization": "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()}
    r = send(HTTPConn(router), "GET", "/", headers=basic)
    assert (r.code, r.headers["content-type"]) == (200, "text/html; charset=utf-8")
    # The page's own requests carry the same credentials.
    assert send(HTTPConn(router), "GET", "/v1/stats", headers=basic).code == 200
    wrong = {"Authorization": "Basic " + base64.b64encode(b"me:guess").decode()}
    assert send(HTTPConn(router), "GET", "/", headers=wrong).code == 401


def test_the_environment_gives_the_token_when_no_file_does(router, tmp_path):
    environ = {"RINGCACHE_ADMIN_TOKEN": " from-env\n"}
    assert send(HTTPConn(router, environ), "POST", "/v1/reload").code == 401
    headers = {"Authorization": "Bearer from-env"}
    assert send(HTTPConn(router, environ), "POST", "/v1/reload", headers=headers).code == 200
    configure(router, tmp_path)  # the file wins over the environment
    assert send(HTTPConn(router, environ), "POST", "/v1/reload", headers=headers).code == 401
    assert send(HTTPConn(router, environ), "POST", "/v1/reload", headers=AUTH).code == 200


def test_the_token_is_read_again_after_a_reload(router, tmp_path):
    configure(router, tmp_path)
    client = HTTPConn(router)
    (tmp_path / "admin.token").write_text("rotated\n")
    # The running topology's token stands until a reload brings a new one.
    assert send(client, "PUT", "/v1/scores/k", b"v", AUTH).code == 204
    configure(router, tmp_path, token="rotated")
    assert send(client, "PUT", "/v1/scores/k", b"v", AUTH).code == 401
    r = send(HTTPConn(router), "PUT", "/v1/scores/k", b"v", {"Authorization": "Bearer rotated"})
    assert r.code == 204


def test_a_token_file_that_cannot_be_read_refuses_protected_requests(router, tmp_path):
    configure(router, tmp_path)
    (tmp_path / "admin.token").unlink()
    with capturedLogs() as events:
        client = HTTPConn(router)
    assert any("reloads, plans and writes are refused" in e["log_format"] for e in events)
    r = send(client, "POST", "/v1/reload", headers=AUTH)
    assert r.code == 503
    assert r.json()["error"].startswith(
        f"admin token unavailable: cannot read the token file {tmp_path}/admin.token: ")
    assert send(HTTPConn(router), "GET", "/healthz").code == 200


@pytest.mark.parametrize("content, problem", [
    ("\n", "is empty"),
    ("two words\n", "the token must be one word of printable ASCII"),
])
def test_token_files_that_hold_no_usable_token(tmp_path, content, problem):
    (tmp_path / "t").write_text(content)
    with pytest.raises(TokenUnavailable, match=problem):
        read_token(str(tmp_path / "t"), {})


def test_bearer_and_matches():
    assert bearer(b"Bearer abc") == b"abc"
    assert bearer(b"bearer   abc  ") == b"abc"
    assert bearer(b"Bearer") is None
    assert bearer(b"Basic abc") is None  # not base64 of user:password
    assert bearer(b"Basic " + base64.b64encode(b"anyone:abc")) == b"abc"
    assert bearer(b"Basic " + base64.b64encode(b"anyone:")) is None
    assert bearer(None) is None
    assert AdminToken.matches(b"abc", b"Bearer abc")
    assert not AdminToken.matches(b"abc", b"Bearer abd")
    assert not AdminToken.matches(b"abc", None)


def test_an_api_open_beyond_this_host_is_warned_of_once_by_the_process_not_the_site(router):
    document = copy.deepcopy(TOPOLOGY)
    document["router"]["http"] = "0.0.0.0:8080"
    router.topology = parse_topology(document, "topology.yaml")
    with capturedLogs() as events:
        HTTPConn(router)
    assert events == []
    [warning] = exposure_warnings(router.topology, nodes_authenticated=True, environ={})
    assert "HTTP API 0.0.0.0:8080 is reachable from other hosts with no admin token" in warning


# -- the reload rate ---------------------------------------------------------------------

def test_reloads_and_plans_past_the_rate_are_429_with_retry_after(router, tmp_path):
    configure(router, tmp_path, limits={"reloads_per_minute": 3})
    site = build_site(router, {})
    codes = [send(Connection(site), "POST", "/v1/reload", headers=AUTH).code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = send(Connection(site), "POST", "/v1/plan", b"nodes: []\n", AUTH)
    assert r.code == 429
    assert r.headers["retry-after"] == "20"
    assert r.json() == {"error": "more than 3 reloads and plans a minute "
                                 "(limits.reloads_per_minute); retry in 20s"}
    router.reactor.advance(19.9)
    assert send(Connection(site), "POST", "/v1/reload", headers=AUTH).code == 429
    router.reactor.advance(0.1)
    assert send(Connection(site), "POST", "/v1/reload", headers=AUTH).code == 200
    assert send(Connection(site), "POST", "/v1/reload", headers=AUTH).code == 429


def test_requests_without_the_token_do_not_spend_the_reload_rate(router, tmp_path):
    configure(router, tmp_path, limits={"reloads_per_minute": 2})
    site = build_site(router, {})
    for _ in range(50):
        assert send(Connection(site), "POST", "/v1/reload").code == 401
    assert send(Connection(site), "POST", "/v1/reload", headers=AUTH).code == 200


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(lambda: now[0])
    assert [bucket.take(60) for _ in range(60)] == [0.0] * 60
    assert bucket.take(60) == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.take(60) == pytest.approx(0.5)
    now[0] = 1000.0  # refills to the burst, not beyond
    assert sum(bucket.take(60) == 0.0 for _ in range(100)) == 60
    assert bucket.take(6) == pytest.approx(10.0)  # a lower rate applies at once


# -- body bounds -------------------------------------------------------------------------

def test_a_put_announcing_more_than_the_item_limit_is_413_before_any_body(router):
    client = HTTPConn(router)
    head(client, b"PUT /v1/scores/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    r = answer(client)
    assert r.code == 413
    assert r.json() == {"error": "value of 2147483648 bytes is over the item limit of 1048576"}
    request = client.protocol.requests[-1]
    assert request.content is None  # no body file was made
    head(client, b"x" * 100_000)  # what still comes is dropped, unread
    assert client.transport.value() == b"" and router.sets == []
    assert not client.transport.disconnecting
    router.reactor.advance(LINGER)
    assert client.transport.disconnecting


def test_a_put_at_the_item_limit_is_stored(router):
    router.item_size_max = 10
    assert send(HTTPConn(router), "PUT", "/v1/scores/k", b"x" * 10).code == 204


def chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_a_chunked_put_is_counted_as_it_arrives_and_refused_past_the_limit(router):
    router.item_size_max = 1000
    client = HTTPConn(router)
    head(client, b"PUT /v1/scores/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    head(client, chunked([b"a" * 600])[:-5])
    assert client.transport.value() == b""
    head(client, b"%x\r\n%s\r\n" % (600, b"b" * 600) + b"0\r\n\r\n")
    r = answer(client)
    assert r.code == 413
    assert r.json() == {"error": "value of at least 1200 bytes is over the item limit of 1000"}
    assert router.sets == []
    assert client.protocol.requests[-1].content.tell() == 600  # never more than the limit kept


def test_a_chunked_put_within_the_limit_is_stored(router):
    client = HTTPConn(router)
    head(client, b"PUT /v1/scores/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + chunked([b"ab", b"cd"]))
    assert answer(client).code == 204
    assert router.sets == [("scores", b"k", b"abcd", None)]


def test_a_plan_body_is_capped_at_the_topology_document_limit(router):
    client = HTTPConn(router)
    head(client, b"POST /v1/plan HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n")
    r = answer(client)
    assert (r.code, r.json()) == (413, {"error": "topology document of 1048577 bytes is over "
                                                 "the limit of 1048576"})


def test_other_routes_take_small_bodies_only(router):
    client = HTTPConn(router)
    head(client, b"GET /v1/scores/k HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n")
    assert answer(client).json() == {"error": "request body of 65537 bytes is over the limit "
                                              "of 65536"}


# -- time bounds -------------------------------------------------------------------------

def test_a_body_shorter_than_its_content_length_is_408_after_the_command_timeout(router,
                                                                                 tmp_path):
    configure(router, tmp_path, limits={"command_timeout": "2s"}, token=None)
    client = HTTPConn(router)
    head(client, b"PUT /v1/scores/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                 + b"x" * 10)
    router.reactor.advance(1.9)
    head(client, b"x" * 10)  # trickling on does not restart the clock
    assert client.transport.value() == b""
    router.reactor.advance(0.1)
    r = answer(client)
    assert r.code == 408
    assert r.json() == {"error": "the request was not complete within 2s"}
    assert r.headers["connection"] == "close"
    router.reactor.advance(LINGER)
    assert client.transport.disconnecting
    assert router.sets == []


def test_a_head_trickled_byte_by_byte_is_408_after_the_command_timeout(router):
    client = HTTPConn(router)
    slow = b"GET /v1/scores/k HTTP/1.1\r\nX-Slow: "
    for byte in slow:
        head(client, bytes([byte]))
        router.reactor.advance(0.5)
    router.reactor.advance(30.0 - 0.5 * len(slow) - 0.01)
    assert client.transport.value() == b""
    router.reactor.advance(0.01)
    assert answer(client).code == 408


def test_a_complete_request_stops_the_clock_and_the_next_one_starts_its_own(router):
    router.items["scores", b"k"] = b"v"
    client = HTTPConn(router)
    for _ in range(3):
        assert send(client, "GET", "/v1/scores/k").code == 200
        router.reactor.advance(29.0)
    assert client.transport.value() == b"" and not client.transport.disconnecting


def test_idle_connections_close_after_idle_timeout_or_a_minute(router, tmp_path):
    client = HTTPConn(router)
    assert client.protocol.timeOut == IDLE_TIMEOUT
    router.reactor.advance(IDLE_TIMEOUT)
    assert client.transport.disconnecting
    configure(router, tmp_path, limits={"idle_timeout": "5s"}, token=None)
    client = HTTPConn(router)
    router.reactor.advance(4.9)
    assert not client.transport.disconnecting
    router.reactor.advance(0.1)
    assert client.transport.disconnecting


# -- size of the head --------------------------------------------------------------------

def test_a_url_over_the_limit_is_414(router):
    client = HTTPConn(router)
    head(client, b"GET /v1/scores/" + b"k" * MAX_URL + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    r = answer(client)
    assert (r.code, r.json()) == (414, {"error": "the request line is over the limit of "
                                                 "16384 bytes"})


def test_a_url_trickled_without_its_end_is_414_once_past_the_limit(router):
    client = HTTPConn(router)
    head(client, b"GET /" + b"k" * (MAX_URL - 10))
    assert client.transport.value() == b""
    head(client, b"k" * 20)
    assert answer(client).code == 414


def test_a_long_url_under_the_limit_is_served_with_its_headers(router):
    key = b"k" * (MAX_URL - 100)
    router.items["scores", key] = b"v"
    r = send(HTTPConn(router), "GET", "/v1/scores/" + key.decode(),
             headers={f"X-{i}": "y" * 100 for i in range(100)})
    assert (r.code, r.body) == (200, b"v")


def test_a_header_line_over_the_limit_is_431(router):
    client = HTTPConn(router)
    head(client, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"y" * MAX_URL + b"\r\n\r\n")
    assert answer(client).code == 431


# -- the connection cap ------------------------------------------------------------------

def connect(site):
    transport = StringTransport()
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(transport)
    return protocol, transport


def test_connections_past_the_cap_get_503_and_one_log_line_per_interval(router, tmp_path):
    configure(router, tmp_path, limits={"max_connections": 2}, token=None)
    site = build_site(router, {})
    kept = [connect(site) for _ in range(2)]
    with capturedLogs() as events:
        refused = [connect(site) for _ in range(50)]
    for protocol, transport in refused:
        r = parse_response(transport.value())
        assert (r.code, r.json()) == (503, {"error": "too many connections (limit 2)"})
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n\r\n")  # read and dropped
    refusals = [e["text"] for e in events if "refused" in e.get("text", "")]
    assert refusals == ["HTTP: refused a connection over the limit of 2 (limits.max_connections)"]
    router.reactor.advance(LINGER)
    assert all(t.disconnecting for _, t in refused)
    router.reactor.advance(LOG_INTERVAL)
    with capturedLogs() as events:
        connect(site)
    assert [e["text"] for e in events if "refused" in e.get("text", "")] == [
        "HTTP: refused a connection over the limit of 2 (limits.max_connections) "
        "(49 more like it in the last 11s not logged)"]
    # A connection that closes frees its place.
    protocol, transport = kept[0]
    protocol.connectionLost(None)
    assert site.connections == 1
    protocol, transport = connect(site)
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_response(transport.value()).code == 200


# -- hostile topology documents ----------------------------------------------------------

# "Billion laughs": ten levels of twelve aliases, 12**10 strings if anything expands it.
BOMB = "\n".join(["x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"x-{b}: &{b} [" + ", ".join([f"*{a}"] * 12) + "]" for a, b in zip("abcdefghi", "bcdefghij")])


@pytest.mark.parametrize("document, message", [
    (BOMB, "more than 100 aliases (*name); a topology needs none"),
    ("[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),
    ("router: {default_group: s, vnodes: 1000000}\nnodes: [{name: a, address: '1.2.3.4:1'},"
     " {name: b, address: '1.2.3.4:2'}]\ngroups: {s: {}}\n",
     "router.vnodes: 1000000 vnodes x the nodes' weights make 2000000 ring points, over the "
     "limit of 1000000"),
])
def test_hostile_plans_are_400_with_the_loaders_message(router, document, message):
    r = send(HTTPConn(router), "POST", "/v1/plan?name=evil.yaml", document.encode())
    assert r.code == 400
    assert message in r.json()["error"]
    assert router.plans == []
