"""The http source against a real HTTP origin process, through a real router and storage node."""

from __future__ import annotations

import http.client
import sys
import time
import urllib.request

import pytest

from router.config.topology import load_topology
from router.sources.http import url_for
from tests.helpers import ROOT, free_port, port_open, start_process, stop_process
from tests.integration.cluster import Cluster
from tests.integration.servers import CLOCK_SLACK, timed_error, wait_for

pytestmark = pytest.mark.integration

TIMEOUT = 0.5  # the source timeout of the groups below, in seconds
GROUPS = """
groups:
  scores: {{}}
  pages:
    source: {{http: "{base}/items/{{key}}", timeout: 500ms}}
  slow:
    source: {{http: "{base}/slow/{{key}}", timeout: 500ms}}
  private:
    source: {{http: "http://app:s%40cret@{host}/private/{{key}}"}}
  nowhere:
    source: {{http: "http://app:pw@127.0.0.1:{closed}/items/{{key}}"}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, http_origin):
    groups = GROUPS.format(base=http_origin.base, host=http_origin.base.removeprefix("http://"),
                           closed=free_port())
    c = Cluster(tmp_path_factory.mktemp("http"), nodes=1, groups=groups).start()
    yield c
    c.stop()


@pytest.fixture
def origin(http_origin):
    yield http_origin
    http_origin.set_values({})


def paths(origin) -> list[str]:
    return [path for _, path in origin.requests()]



def test_200_is_the_value_loaded_once_then_cached(cluster, origin):
    origin.set_values({"/items/alpha": "Alpha"})
    client = cluster.memcache()
    assert client.get("pages:alpha") == b"Alpha"
    origin.set_values({"/items/alpha": "changed"})
    assert client.get("pages:alpha") == b"Alpha"
    assert cluster.http("GET", "/v1/pages/alpha") == (200, b"Alpha")
    assert paths(origin).count("/items/alpha") == 1


def test_the_key_is_percent_encoded_whole(cluster, origin):
    origin.set_values({"/items/a%20b%2Fc%3Fd%25%C3%BC": "spaces, slash, query, percent",
                       "/items/x%2Fy%3Fz%3D1%26w": "from memcached"})
    assert cluster.http("GET", "/v1/pages/a%20b%2Fc%3Fd%25%C3%BC") == (200, b"spaces, slash, query, percent")
    assert cluster.memcache().get("pages:x/y?z=1&w") == b"from memcached"


def test_404_is_a_miss_and_not_cached(cluster, origin):
    client = cluster.memcache()
    assert client.get("pages:later") is None
    assert client.get("pages:later") is None
    assert cluster.http("GET", "/v1/pages/later")[0] == 404
    origin.set_values({"/items/later": "now"})
    assert client.get("pages:later") == b"now"
    assert paths(origin).count("/items/later") == 4


def test_connections_to_the_origin_are_reused(cluster, origin):
    origin.set_values({f"/items/reuse-{i}": str(i) for i in range(10)})
    client = cluster.memcache()
    before = len(origin.requests())
    for i in range(10):
        assert client.get(f"pages:reuse-{i}") == str(i).encode()
    ports = {port for port, _ in origin.requests()[before:]}
    assert len(ports) == 1  # one after another, the loads share one kept-alive connection


def test_credentials_in_the_url_are_sent_as_basic_authentication(cluster, origin):
    origin.set_values({"/private/doc Basic YXBwOnNAY3JldA==": "for app only"})  # app:s@cret
    assert cluster.memcache().get("private:doc") == b"for app only"


def test_another_status_is_an_error_naming_the_source_and_status(cluster, http_origin):
    message, _ = timed_error(lambda: cluster.memcache().get("pages:boom"))
    assert f"source {http_origin.base}/items/{{key}} failed: HTTP 500 Internal Server Error" in message
    assert cluster.http("GET", "/v1/pages/boom")[0] == 502


def test_a_slow_origin_is_an_error_within_the_timeout(cluster):
    message, seconds = timed_error(lambda: cluster.memcache().get("slow:k"))
    assert "failed: no answer within 0.5s" in message
    assert TIMEOUT - CLOCK_SLACK <= seconds < TIMEOUT + 0.5


def test_unreachable_at_start_is_a_warning_then_fast_errors_with_the_password_masked(cluster):
    name = "http://app:***@127.0.0.1:"
    assert wait_for(lambda: f"group nowhere: source {name}" in cluster.router.read_stderr())
    message, seconds = timed_error(lambda: cluster.memcache().get("nowhere:k"))
    assert f"source {name}" in message and "Connection refused" in message
    assert ":pw@" not in message
    assert seconds < TIMEOUT


def test_origin_down_fails_fast_cached_values_still_served_then_recovers(cluster, origin):
    origin.set_values({"/items/kept": "cached before"})
    client = cluster.memcache()
    assert client.get("pages:kept") == b"cached before"
    origin.stop()
    try:
        assert client.get("pages:kept") == b"cached before"
        message, seconds = timed_error(lambda: client.get("pages:absent"))
        assert "Connection refused" in message
        assert seconds < TIMEOUT
        assert cluster.http("GET", "/v1/pages/absent")[0] == 502
    finally:
        origin.start()
    origin.set_values({"/items/absent": "present"})
    assert wait_for(lambda: client.get("pages:absent")) == b"present"


def test_the_example_topology_and_origin():
    source = load_topology(ROOT / "examples/http/topology.yaml").groups["pages"].source
    assert (source.kind, source.target) == ("http", "http://127.0.0.1:8000/pages/{key}")
    port = free_port()
    origin = start_process([sys.executable, str(ROOT / "examples/http/origin.py"), str(port)],
                           lambda: port_open(port))
    try:
        url = source.target.replace("8000", str(port)).replace("{key}", "a%2Fb%20c")
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.read() == b"a key with a slash and a space\n"
        # It answers like a real origin on a keep-alive connection: each response in one
        # segment, sent at once (with Nagle and a delayed ACK each took ~40 ms).
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/pages/hello")
        connection.getresponse().read()
        started = time.monotonic()
        for _ in range(20):
            connection.request("GET", "/pages/hello")
            assert connection.getresponse().read() == b"Hello from the origin\n"
        assert time.monotonic() - started < 0.5  # 20 answers; delayed ACKs alone take 0.8 s
        connection.close()
    finally:
        stop_process(origin)


@pytest.mark.parametrize("template, key, expected", [
    ("http://o/items/{key}", "plain", b"http://o/items/plain"),
    ("http://o/items/{key}", "a b/c?d#e%f", b"http://o/items/a%20b%2Fc%3Fd%23e%25f"),
    ("http://o/q?id={key}&again={key}", "ü", b"http://o/q?id=%C3%BC&again=%C3%BC"),
    ("http://o/{key}", "\udcff", b"http://o/%FF"),  # a key that was not UTF-8 keeps its bytes
])
def test_url_for(template, key, expected):
    assert url_for(template, key) == expected
