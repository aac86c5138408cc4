"""The redis source against a real redis-server, through a real router and storage node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from router.config.topology import load_topology
from router.sources.redis import POOL_SIZE, RedisAddress
from tests.helpers import ROOT, free_port
from tests.integration.cluster import Cluster
from tests.integration.servers import CLOCK_SLACK, timed_error, wait_for

pytestmark = pytest.mark.integration

TIMEOUT = 0.5  # the source timeout of the groups below, in seconds
GROUPS = """
groups:
  scores: {{}}
  users:
    source: {{redis: "{url}/0", key: "user:{{key}}", timeout: 500ms}}
  blobs:
    source: {{redis: "unix://{socket}?db=1"}}
  reader:
    source: {{redis: "redis://reader:s3cret@127.0.0.1:{port}/0", timeout: 500ms}}
  intruder:
    source: {{redis: "redis://reader:guess@127.0.0.1:{port}/0"}}
  nowhere:
    source: {{redis: "redis://127.0.0.1:{closed}/0"}}
  tls:
    source: {{redis: "rediss://localhost:{tls_port}/0"}}
  tls_mismatch:
    source: {{redis: "rediss://127.0.0.1:{tls_port}/0"}}
  reloaded:
    source: {{redis: "{url}/3", key: "old:{{key}}"}}
"""


@pytest.fixture(scope="module")
def redis(redis_server):
    redis_server.cli("FLUSHALL")
    return redis_server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis):
    groups = GROUPS.format(url=redis.url, socket=redis.socket, port=redis.port, closed=free_port(),
                           tls_port=redis.tls_port)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(redis.ca_file))  # the router trusts the test CA
        c = Cluster(tmp_path_factory.mktemp("redis"), nodes=1, groups=groups).start()
    yield c
    c.stop()


def source_loads(cluster, group: str) -> dict[str, float]:
    """{result: count} of the group's source loads, from /metrics."""
    status, body = cluster.http("GET", "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(f'ringcache_source_loads_total{{group="{group}",'):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('result="')[1].rstrip('"}')] = float(value)
    return out



def test_value_is_loaded_through_the_key_template_once_then_cached(cluster, redis):
    redis.cli("SET", "user:alpha", "Alpha")
    before = source_loads(cluster, "users").get("ok", 0)
    client = cluster.memcache()
    assert client.get("users:alpha") == b"Alpha"
    redis.cli("SET", "user:alpha", "changed")
    assert client.get("users:alpha") == b"Alpha"  # cached: Redis was not asked again
    status, body = cluster.http("GET", "/v1/users/alpha")
    assert (status, body) == (200, b"Alpha")
    assert source_loads(cluster, "users")["ok"] == before + 1


def test_missing_key_is_a_miss_and_not_cached(cluster, redis):
    before = source_loads(cluster, "users").get("not_found", 0)
    client = cluster.memcache()
    assert client.get("users:later") is None
    assert client.get("users:later") is None
    assert cluster.http("GET", "/v1/users/later")[0] == 404
    redis.cli("SET", "user:later", "now")
    assert client.get("users:later") == b"now"
    assert source_loads(cluster, "users")["not_found"] == before + 3


def test_binary_value_over_a_unix_socket_from_another_database(cluster, redis):
    value = bytes(range(256)) + b"\r\nEND\r\n"
    redis.cli("-n", "1", "-x", "SET", "bin", stdin=value)
    assert cluster.memcache().get("blobs:bin") == value
    assert cluster.memcache().get("blobs:alpha") is None  # user:alpha is in database 0


def test_key_bytes_reach_redis_unchanged(cluster, redis):
    redis.cli("SET", "user:ü/ä b", "unicode")
    assert cluster.http("GET", "/v1/users/%C3%BC%2F%C3%A4%20b") == (200, b"unicode")


def test_a_value_that_is_not_a_string_is_an_error_naming_the_source(cluster, redis):
    redis.cli("RPUSH", "user:list", "x")
    message, _ = timed_error(lambda: cluster.memcache().get("users:list"))
    assert f"source redis://127.0.0.1:{redis.port}/0 failed" in message
    assert "WRONGTYPE" in message
    assert cluster.http("GET", "/v1/users/list")[0] == 502


def test_username_and_password(cluster, redis):
    redis.cli("SET", "secret", "for readers")
    assert cluster.memcache().get("reader:secret") == b"for readers"


def test_tls_with_the_certificate_checked(cluster, redis):
    redis.cli("SET", "over-tls", "private")
    assert cluster.memcache().get("tls:over-tls") == b"private"
    message, _ = timed_error(lambda: cluster.memcache().get("tls_mismatch:over-tls"))
    # The certificate names localhost, not 127.0.0.1.
    assert f"source rediss://127.0.0.1:{redis.tls_port}/0 failed: " in message
    assert "lost the connection: VerificationError(errors=[IPAddressMismatch(" in message


def test_a_refused_password_is_reported_and_masked(cluster, redis):
    message, seconds = timed_error(lambda: cluster.memcache().get("intruder:secret"))
    assert f"source redis://reader:***@127.0.0.1:{redis.port}/0 failed" in message
    assert "could not auth" in message and "WRONGPASS" in message
    assert "guess" not in message
    assert seconds < 0.5


def test_unreachable_at_start_is_a_warning_then_fast_errors(cluster):
    # The first connection attempt may still be under way when the router is ready.
    assert wait_for(lambda: "group nowhere: source redis://127.0.0.1:" in cluster.router.read_stderr())
    message, seconds = timed_error(lambda: cluster.memcache().get("nowhere:k"))
    assert "cannot connect" in message and "refused" in message
    assert seconds < 0.5
    assert cluster.http("GET", "/v1/nowhere/k")[0] == 502


def test_a_hung_redis_is_an_error_within_the_timeout(cluster, redis):
    client = cluster.memcache()
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        message, seconds = timed_error(lambda: client.get("users:hung"))
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    assert "no answer within 0.5s" in message
    assert TIMEOUT - CLOCK_SLACK <= seconds < TIMEOUT + 0.5
    redis.cli("SET", "user:hung", "back")
    assert wait_for(lambda: client.get("users:hung")) == b"back"


def test_redis_down_fails_fast_cached_values_still_served_then_recovers(cluster, redis):
    redis.cli("SET", "user:kept", "cached before")
    client = cluster.memcache()
    assert client.get("users:kept") == b"cached before"
    redis.stop()
    try:
        assert client.get("users:kept") == b"cached before"
        message, seconds = timed_error(lambda: client.get("users:absent"))
        assert "cannot connect" in message
        assert seconds < TIMEOUT
        assert cluster.http("GET", "/v1/users/absent")[0] == 502
    finally:
        redis.start()
    redis.cli("SET", "user:absent", "present")
    assert wait_for(lambda: client.get("users:absent")) == b"present"


def test_a_reload_that_changes_the_source_replaces_its_connections(cluster, redis):
    def connections() -> set[str]:  # client ids of the group "reloaded", the only user of db 3
        return {line.split()[0] for line in redis.cli("CLIENT", "LIST").splitlines() if " db=3 " in line}

    redis.cli("-n", "3", "MSET", "old:k", "old template", "new:k", "new template")
    client = cluster.memcache()
    assert wait_for(lambda: client.get("reloaded:k")) == b"old template"  # after any restart
    assert wait_for(lambda: len(connections()) == POOL_SIZE)
    before, groups = connections(), cluster.groups
    cluster.groups = groups.replace('key: "old:{key}"', 'key: "new:{key}"')
    try:
        cluster.write_topology(cluster.node_names)
        assert cluster.http_json("POST", "/v1/reload")["applied"] is True
        assert client.delete("reloaded:k") is True
        assert client.get("reloaded:k") == b"new template"
        # The old source's connections are closed, not leaked.
        assert wait_for(lambda: len(connections()) == POOL_SIZE and not connections() & before)
    finally:
        cluster.groups = groups
        cluster.write_topology(cluster.node_names)
        cluster.http_json("POST", "/v1/reload")


def test_the_example_topology_and_seed(redis):
    source = load_topology(ROOT / "examples/redis/topology.yaml").groups["users"].source
    assert (source.kind, source.target, source.options["key"]) == (
        "redis", "redis://127.0.0.1:6379/0", "user:{key}")
    subprocess.run([sys.executable, str(ROOT / "examples/redis/seed.py"), f"{redis.url}/2"],
                   check=True, capture_output=True, timeout=30)
    assert redis.cli("-n", "2", "GET", "user:Tom") == '{"name": "Tom", "score": 630}'


@pytest.mark.parametrize("url, expected", [
    ("redis://localhost", RedisAddress("redis", "localhost", 6379, db=0)),
    ("redis://:pw@h:7000/3", RedisAddress("redis", "h", 7000, db=3, password="pw")),
    ("rediss://u:p%40ss@h/0", RedisAddress("rediss", "h", 6379, db=0, username="u", password="p@ss")),
    ("unix:///run/redis.sock?db=2", RedisAddress("unix", path="/run/redis.sock", db=2)),
])
def test_url_parsing(url, expected):
    assert RedisAddress.parse(url) == expected


@pytest.mark.parametrize("url, problem", [
    ("redis://h/zero", "the database must be a number, got 'zero'"),
    ("redis://h:99999/0", "the port must be a number from 1 to 65535"),
    ("redis://h/0?db=1", "a redis:// URL takes the database as its path"),
    ("unix://?db=1", "expected unix:///path/to/redis.sock"),
])
def test_bad_urls(url, problem):
    with pytest.raises(ValueError, match=problem):
        RedisAddress.parse(url)
