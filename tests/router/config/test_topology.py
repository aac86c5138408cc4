"""topology.yaml loading: the repository's file, every class of error, and GROUP:KEY routing."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from router.config.topology import (
    AUTO_WORKERS_CAP,
    Address,
    LimitsConfig,
    NearCacheSpec,
    NodeSpec,
    RouterConfig,
    SecurityConfig,
    SourceSpec,
    TLSFiles,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)
from tests.helpers import ROOT

REPO_TOPOLOGY = ROOT / "topology.yaml"

GOOD = {
    "router": {"memcache": "127.0.0.1:11211", "http": "127.0.0.1:8080", "default_group": "scores"},
    "nodes": [
        {"name": "node-a", "address": "127.0.0.1:7001"},
        {"name": "node-b", "address": "127.0.0.1:7002", "weight": 2},
    ],
    "groups": {"scores": {"source": {"python": "examples.demo:score"}}, "sessions": {}},
}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def edited(edit) -> dict:
    doc = copy.deepcopy(GOOD)
    edit(doc)
    return doc


def setitem(*path_and_value):
    """An edit setting doc[k1][k2]... = value."""
    *keys, last, value = path_and_value

    def edit(doc):
        for key in keys:
            doc = doc[key]
        doc[last] = value

    return edit


def delitem(*keys):
    def edit(doc):
        for key in keys[:-1]:
            doc = doc[key]
        del doc[keys[-1]]

    return edit


def source(block):
    return setitem("groups", "scores", "source", block)


class TestRepositoryTopology:
    def test_loads_with_the_documented_values(self):
        topology = load_topology(REPO_TOPOLOGY)
        assert topology.router == RouterConfig(
            memcache=Address("127.0.0.1", 11211),
            http=Address("127.0.0.1", 8080),
            vnodes=160,
            timeout=0.5,
            default_group="scores",
            warmup=0.0,
            item_size_max=1 << 20,
        )
        assert topology.nodes == (
            NodeSpec("node-a", Address("127.0.0.1", 7001), 1.0),
            NodeSpec("node-b", Address("127.0.0.1", 7002), 1.0),
            NodeSpec("node-c", Address("127.0.0.1", 7003), 1.0),
        )
        assert list(topology.groups) == ["scores", "sessions"]
        scores, sessions = topology.groups["scores"], topology.groups["sessions"]
        assert (scores.policy, scores.max_bytes, scores.ttl, scores.negative_ttl, scores.replicas) == (
            "adaptive", 64 << 20, 300.0, None, 1,
        )
        assert scores.source == SourceSpec("python", "examples.demo:score", {})
        assert (sessions.policy, sessions.max_bytes, sessions.ttl, sessions.source) == ("adaptive", 64 << 20, None, None)
        assert topology.path == str(REPO_TOPOLOGY)
        assert topology.base_dir == str(REPO_TOPOLOGY.parent)

    def test_is_immutable(self):
        topology = load_topology(REPO_TOPOLOGY)
        with pytest.raises(AttributeError):
            topology.router.vnodes = 1
        with pytest.raises(TypeError):
            topology.groups["x"] = topology.groups["scores"]


class TestGroupFor:
    topology = load_topology(REPO_TOPOLOGY)

    @pytest.mark.parametrize(
        "key, routed",
        [
            (b"sessions:abc", ("sessions", b"abc")),
            (b"scores:a:b", ("scores", b"a:b")),
            (b"nogroup:abc", ("scores", b"nogroup:abc")),
            (b"plain", ("scores", b"plain")),
            (b"Sessions:abc", ("scores", b"Sessions:abc")),
        ],
    )
    def test_routes(self, key, routed):
        assert self.topology.group_for(key) == routed


class TestValidDocuments:
    def test_every_option(self, tmp_path):
        doc = {
            "router": {
                "memcache": "[::1]:11311", "http": "localhost:8081", "vnodes": 40, "timeout": "2s",
                "default_group": "pages", "warmup": "1m", "item_size_max": "2MiB",
            },
            "nodes": [{"name": "n1", "address": "10.0.0.1:7001", "weight": 0.5},
                      {"name": "n2", "address": "10.0.0.2:7001"}],
            "groups": {
                "pages": {"policy": "python:my.cores:Arc", "max_bytes": "1GiB", "ttl": 30,
                          "negative_ttl": "500ms", "replicas": 2,
                          "stale_while_revalidate": "30s", "stale_if_error": "10m",
                          "near_cache": {"max_bytes": "16MiB", "ttl": "2s"},
                          "source": {"http": "https://origin/p/{key}", "timeout": "3s"}},
                "kv": {"source": {"redis": "redis://localhost:6379/0", "key": "app:{key}"}},
                "rows": {"policy": "lfu", "source": {"sql": "sqlite:///rows.db", "query": "SELECT v FROM t WHERE k = ?"}},
                "plain": None,
            },
        }
        topology = load_topology(write(tmp_path, doc))
        assert topology.router == RouterConfig(
            memcache=Address("::1", 11311), http=Address("localhost", 8081), vnodes=40, timeout=2.0,
            default_group="pages", warmup=60.0, item_size_max=2 << 20,
        )
        assert str(topology.router.memcache) == "[::1]:11311"
        assert str(topology.nodes[0].address) == "10.0.0.1:7001"
        assert [n.weight for n in topology.nodes] == [0.5, 1.0]
        pages = topology.groups["pages"]
        assert (pages.policy, pages.max_bytes, pages.ttl, pages.negative_ttl, pages.replicas) == (
            "python:my.cores:Arc", 1 << 30, 30.0, 0.5, 2,
        )
        assert (pages.stale_while_revalidate, pages.stale_if_error) == (30.0, 600.0)
        assert topology.groups["kv"].stale_while_revalidate is None
        assert pages.near_cache == NearCacheSpec(max_bytes=16 << 20, ttl=2.0)
        assert topology.groups["kv"].near_cache is None
        assert pages.source == SourceSpec("http", "https://origin/p/{key}", {"timeout": 3.0})
        assert topology.groups["kv"].source == SourceSpec("redis", "redis://localhost:6379/0", {"key": "app:{key}"})
        assert topology.groups["rows"].source == SourceSpec(
            "sql", "sqlite:///rows.db", {"query": "SELECT v FROM t WHERE k = ?"}
        )
        assert topology.groups["rows"].policy == "lfu"
        assert topology.groups["plain"].source is None
        with pytest.raises(TypeError):
            topology.groups["kv"].source.options["key"] = "x"

    def test_router_defaults(self, tmp_path):
        doc = edited(setitem("router", {"default_group": "sessions"}))
        router = load_topology(write(tmp_path, doc)).router
        assert router == RouterConfig(default_group="sessions")
        assert (str(router.memcache), str(router.http), router.vnodes, router.timeout) == (
            "127.0.0.1:11211", "127.0.0.1:8080", 160, 0.5,
        )

    def test_parse_topology_takes_parsed_data(self):
        topology = parse_topology(copy.deepcopy(GOOD), "/etc/ringcache/topology.yaml")
        assert isinstance(topology, Topology)
        assert topology.base_dir == "/etc/ringcache"


BAD = [
    # (id, edit of GOOD, expected "<key.path>: <problem>")
    ("unknown top key", setitem("extra", 1), "extra: unknown key (allowed: router, nodes, groups, security, limits)"),
    ("no router", delitem("router"), "router: required key is missing"),
    ("no nodes", delitem("nodes"), "nodes: required key is missing"),
    ("no groups", delitem("groups"), "groups: required key is missing"),
    ("router not mapping", setitem("router", "x"), "router: expected a mapping with keys memcache"),
    ("unknown router key", setitem("router", "vnode", 10),
     "router.vnode: unknown key (allowed: memcache, http, vnodes, timeout, default_group, warmup, item_size_max, workers, memcache_tls, http_tls, watch)"),
    ("no default group", delitem("router", "default_group"), "router.default_group: required key is missing"),
    ("undefined default group", setitem("router", "default_group", "users"),
     "router.default_group: 'users' is not a defined group (groups: scores, sessions)"),
    ("bad memcache", setitem("router", "memcache", "11211"), "router.memcache: expected HOST:PORT, got '11211'"),
    ("memcache int", setitem("router", "memcache", 11211), "router.memcache: expected HOST:PORT, got 11211"),
    ("bad port", setitem("router", "http", "localhost:http"),
     "router.http: port must be a number from 1 to 65535, got 'localhost:http'"),
    ("port zero", setitem("router", "http", "localhost:0"), "router.http: port must be a number from 1 to 65535"),
    ("port too big", setitem("router", "http", "localhost:65536"), "router.http: port must be a number from 1 to 65535"),
    ("vnodes string", setitem("router", "vnodes", "x"), "router.vnodes: expected a positive integer, got 'x'"),
    ("vnodes zero", setitem("router", "vnodes", 0), "router.vnodes: expected a positive integer, got 0"),
    ("vnodes bool", setitem("router", "vnodes", True), "router.vnodes: expected a positive integer, got True"),
    ("vnodes float", setitem("router", "vnodes", 1.5), "router.vnodes: expected a positive integer, got 1.5"),
    ("timeout words", setitem("router", "timeout", "soon"),
     "router.timeout: expected a duration like 500ms, 30s, 5m or 1h, got 'soon'"),
    ("timeout zero", setitem("router", "timeout", "0ms"), "router.timeout: must be greater than zero, got '0ms'"),
    ("warmup negative", setitem("router", "warmup", -1), "router.warmup: duration must not be negative, got -1"),
    ("item size", setitem("router", "item_size_max", "big"),
     "router.item_size_max: expected a size like 512KiB, 64MiB or 1GiB, got 'big'"),
    ("nodes empty", setitem("nodes", []), "nodes: expected a list of at least one node, got list []"),
    ("nodes mapping", setitem("nodes", {"node-a": "127.0.0.1:1"}), "nodes: expected a list of at least one node"),
    ("node not mapping", setitem("nodes", 1, "node-b"), "nodes[1]: expected a mapping with keys name, address, weight"),
    ("unknown node key", setitem("nodes", 0, "zone", "eu"),
     "nodes[0].zone: unknown key (allowed: name, address, weight)"),
    ("node no name", delitem("nodes", 1, "name"), "nodes[1].name: required key is missing"),
    ("node no address", delitem("nodes", 0, "address"), "nodes[0].address: required key is missing"),
    ("node name int", setitem("nodes", 0, "name", 7), "nodes[0].name: node name must be a non-empty string, got 7"),
    ("node name empty", setitem("nodes", 0, "name", ""), "nodes[0].name: node name must be a non-empty string"),
    ("node name space", setitem("nodes", 0, "name", "node a"),
     "nodes[0].name: node name 'node a' must not contain whitespace or control characters"),
    ("duplicate name", setitem("nodes", 1, "name", "node-a"), "nodes[1].name: duplicate node name 'node-a' (also nodes[0])"),
    ("duplicate address", setitem("nodes", 1, "address", "127.0.0.1:7001"),
     "nodes[1].address: duplicate node address '127.0.0.1:7001' (also nodes[0])"),
    ("bad address", setitem("nodes", 1, "address", "127.0.0.1"), "nodes[1].address: expected HOST:PORT, got '127.0.0.1'"),
    ("weight negative", setitem("nodes", 0, "weight", -1), "nodes[0].weight: expected a positive number up to 100, got -1"),
    ("weight zero", setitem("nodes", 0, "weight", 0), "nodes[0].weight: expected a positive number up to 100, got 0"),
    ("weight string", setitem("nodes", 0, "weight", "heavy"), "nodes[0].weight: expected a positive number up to 100, got 'heavy'"),
    ("weight inf", setitem("nodes", 0, "weight", float("inf")), "nodes[0].weight: expected a positive number up to 100, got inf"),
    ("groups list", setitem("groups", ["scores"]), "groups: expected a mapping of group names, got list ['scores']"),
    ("group name colon", setitem("groups", "a:b", {}),
     "groups.a:b: group name 'a:b' must not contain whitespace, control characters or ':'"),
    ("group name space", setitem("groups", "my group", {}), "groups.my group: group name 'my group' must not contain"),
    ("group name empty", setitem("groups", "", {}), "groups.: group name must be a non-empty string, got ''"),
    ("group name int", setitem("groups", 5, {}), "groups.5: group name must be a non-empty string, got 5"),
    ("group name reserved", setitem("groups", "where", {}),
     "groups.where: 'where' is reserved by the HTTP API (/v1/where/...); choose another group name"),
    ("group not mapping", setitem("groups", "sessions", "lru"),
     "groups.sessions: expected a mapping with keys policy, max_bytes, ttl, negative_ttl, replicas, "
     "source, stale_while_revalidate, stale_if_error, near_cache, got str 'lru'"),
    ("unknown group key", setitem("groups", "sessions", "warmup", "1s"),
     "groups.sessions.warmup: unknown key (allowed: policy, max_bytes, ttl, negative_ttl, replicas, "
     "source, stale_while_revalidate, stale_if_error, near_cache)"),
    ("bad policy", setitem("groups", "sessions", "policy", "fifo"),
     "groups.sessions.policy: expected adaptive, lru, lfu or python:module:Class, got 'fifo'"),
    ("bad python policy", setitem("groups", "sessions", "policy", "python:mod"),
     "groups.sessions.policy: expected adaptive, lru, lfu or python:module:Class, got 'python:mod'"),
    ("max bytes words", setitem("groups", "sessions", "max_bytes", "lots"),
     "groups.sessions.max_bytes: expected a size like 512KiB, 64MiB or 1GiB, got 'lots'"),
    ("max bytes zero", setitem("groups", "sessions", "max_bytes", 0), "groups.sessions.max_bytes: must be greater than zero, got 0"),
    ("near cache not mapping", setitem("groups", "sessions", "near_cache", "16MiB"),
     "groups.sessions.near_cache: expected a mapping with keys max_bytes, ttl, got str '16MiB'"),
    ("near cache unknown key", setitem("groups", "sessions", "near_cache", {"keys": 10}),
     "groups.sessions.near_cache.keys: unknown key (allowed: max_bytes, ttl)"),
    ("near cache size words", setitem("groups", "sessions", "near_cache", {"max_bytes": "big"}),
     "groups.sessions.near_cache.max_bytes: expected a size like 512KiB, 64MiB or 1GiB, got 'big'"),
    ("near cache ttl zero", setitem("groups", "sessions", "near_cache", {"ttl": 0}),
     "groups.sessions.near_cache.ttl: must be greater than zero, got 0"),
    ("near cache ttl long", setitem("groups", "sessions", "near_cache", {"ttl": "5m"}),
     "groups.sessions.near_cache.ttl: expected at most 60s, got 300s"),
    ("ttl words", setitem("groups", "sessions", "ttl", "forever"),
     "groups.sessions.ttl: expected a duration like 500ms, 30s, 5m or 1h, got 'forever'"),
    ("ttl zero", setitem("groups", "sessions", "ttl", 0), "groups.sessions.ttl: must be greater than zero, got 0"),
    ("negative ttl", setitem("groups", "sessions", "negative_ttl", "-5s"), "groups.sessions.negative_ttl: expected a duration"),
    ("replicas zero", setitem("groups", "sessions", "replicas", 0), "groups.sessions.replicas: expected a positive integer, got 0"),
    ("swr words", setitem("groups", "scores", "stale_while_revalidate", "soon"),
     "groups.scores.stale_while_revalidate: expected a duration like 500ms, 30s, 5m or 1h, got 'soon'"),
    ("sie zero", setitem("groups", "scores", "stale_if_error", 0),
     "groups.scores.stale_if_error: must be greater than zero, got 0"),
    ("swr without a source", setitem("groups", "sessions", "stale_while_revalidate", "30s"),
     "groups.sessions.stale_while_revalidate: needs a source: a stale value is answered while the source refreshes it"),
    ("replicas too many", setitem("groups", "sessions", "replicas", 3), "groups.sessions.replicas: 3 replicas but only 2 nodes"),
    ("source string", source("examples.demo:score"),
     "groups.scores.source: expected a mapping like {python: module:function}, got str 'examples.demo:score'"),
    ("source no kind", source({"timeout": "1s"}),
     "groups.scores.source: expected exactly one of python, redis, sql, http, got none"),
    ("source two kinds", source({"redis": "redis://h/0", "http": "http://h/{key}"}),
     "groups.scores.source: expected exactly one of python, redis, sql, http, got redis and http"),
    ("source unknown key", source({"python": "m:f", "query": "SELECT ?"}),
     "groups.scores.source.query: unknown key for a python source (allowed: python, timeout, concurrency, queue)"),
    ("python target", source({"python": "examples.demo"}),
     "groups.scores.source.python: expected module:function, got 'examples.demo'"),
    ("python target int", source({"python": 3}), "groups.scores.source.python: expected a string, got int 3"),
    ("python timeout", source({"python": "m:f", "timeout": "0s"}),
     "groups.scores.source.timeout: must be greater than zero, got '0s'"),
    ("redis scheme", source({"redis": "localhost:6379"}),
     "groups.scores.source.redis: expected a redis://, rediss:// or unix:// URL, got 'localhost:6379'"),
    ("redis key", source({"redis": "redis://h/0", "key": "prefix"}),
     "groups.scores.source.key: expected a template containing {key}, got 'prefix'"),
    ("redis unknown", source({"redis": "redis://h/0", "db": 1}),
     "groups.scores.source.db: unknown key for a redis source (allowed: redis, key, timeout, concurrency, queue)"),
    ("sql url", source({"sql": "rows.db", "query": "SELECT v FROM t WHERE k = ?"}),
     "groups.scores.source.sql: expected a SQLAlchemy URL like sqlite:///app.db, got 'rows.db'"),
    ("sql no query", source({"sql": "sqlite:///rows.db"}), "groups.scores.source.query: required key is missing"),
    ("sql no placeholder", source({"sql": "sqlite:///rows.db", "query": "SELECT v FROM t"}),
     "groups.scores.source.query: expected SQL with exactly one ? placeholder, got 'SELECT v FROM t'"),
    ("sql two placeholders", source({"sql": "sqlite:///r.db", "query": "SELECT ? FROM t WHERE k = ?"}),
     "groups.scores.source.query: expected SQL with exactly one ? placeholder"),
    ("http no key", source({"http": "http://origin/path"}),
     "groups.scores.source.http: expected an http:// or https:// URL containing {key}, got 'http://origin/path'"),
    ("http scheme", source({"http": "ftp://origin/{key}"}),
     "groups.scores.source.http: expected an http:// or https:// URL containing {key}, got 'ftp://origin/{key}'"),
]


@pytest.mark.parametrize("edit, expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_document(tmp_path, edit, expected):
    path = write(tmp_path, edited(edit))
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert str(caught.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("router: {default_group: x\nnodes: []\n", "line 2, column 6: "),
        ("router:\n  vnodes: 1\n  vnodes: 2\n", "line 3, column 3: duplicate key 'vnodes'"),
        ("router: [\n", "line 2, column 1: expected the node content"),
        ("", "expected a mapping with keys router, nodes, groups, security, limits, got nothing"),
        ("- router\n", "expected a mapping with keys router, nodes, groups, security, limits, got list ['router']"),
    ],
)
def test_bad_yaml_names_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert str(caught.value).startswith(f"{path}: {expected}")


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(TopologyError, match=rf"^{path}: cannot read: .*No such file"):
        load_topology(path)


def test_error_is_a_value_error():
    assert issubclass(TopologyError, ValueError)
    with pytest.raises(ValueError, match="^topology.yaml: router.vnodes: expected a positive integer, got 'x'$"):
        parse_topology(edited(setitem("router", "vnodes", "x")), "topology.yaml")


def test_base_dir_is_the_files_directory(tmp_path):
    topology = load_topology(write(tmp_path, GOOD))
    assert topology.base_dir == os.fspath(tmp_path)


# -- security, limits and the bounds that keep a hostile document from freezing a router ---


def test_security_and_limits_default_to_open_and_bounded(tmp_path):
    topology = load_topology(write(tmp_path, GOOD))
    assert topology.security == SecurityConfig()
    assert topology.security.node_tls is None and topology.security.token_file is None
    assert topology.limits == LimitsConfig()
    assert topology.limits.backlog == 1024  # memcached's -b default, not Twisted's 50
    assert topology.router.workers == 1
    assert topology.groups["scores"].source.concurrency == 16
    assert topology.groups["scores"].source.queue == 256


def test_security_files_are_taken_from_the_topology_directory(tmp_path):
    for name in ("ca.pem", "router.pem", "router.key", "secret", "token", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    doc = edited(setitem("security", {"ca": "ca.pem", "cert": "router.pem", "key": "router.key",
                                      "secret_file": "secret", "token_file": "token",
                                      "protect_reads": True}))
    doc["router"]["memcache_tls"] = {"cert": "client.pem", "key": "client.key"}
    doc["router"]["http_tls"] = {"cert": "client.pem", "key": "client.key", "ca": "ca.pem"}
    topology = load_topology(write(tmp_path, doc))
    security = topology.security
    assert security.node_tls == TLSFiles(str(tmp_path / "router.pem"), str(tmp_path / "router.key"),
                                         str(tmp_path / "ca.pem"))
    assert security.secret_file == str(tmp_path / "secret")
    assert security.token_file == str(tmp_path / "token")
    assert security.protect_reads is True
    assert topology.router.memcache_tls == TLSFiles(str(tmp_path / "client.pem"),
                                                    str(tmp_path / "client.key"), None)
    assert topology.router.http_tls.ca == str(tmp_path / "ca.pem")


def test_limits_are_read(tmp_path):
    doc = edited(setitem("limits", {"max_connections": 10, "idle_timeout": "5m",
                                    "command_timeout": "2s", "output_buffer": "1MiB", "input_buffer": "8MiB",
                                    "reloads_per_minute": 3, "backlog": 4096}))
    doc["groups"]["scores"]["source"].update(concurrency=2, queue=5)
    doc["router"]["workers"] = 4
    topology = load_topology(write(tmp_path, doc))
    assert topology.limits == LimitsConfig(max_connections=10, idle_timeout=300.0,
                                           command_timeout=2.0, output_buffer=1 << 20, input_buffer=8 << 20,
                                           reloads_per_minute=3, backlog=4096)
    assert (topology.groups["scores"].source.concurrency, topology.groups["scores"].source.queue) == (2, 5)
    assert topology.router.workers == 4


def test_workers_auto_is_the_cores_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 96)
    topology = load_topology(write(tmp_path, edited(setitem("router", "workers", "auto"))))
    assert topology.router.workers == AUTO_WORKERS_CAP


BAD_SECURITY = [
    ("tls half", setitem("security", {"ca": "ca.pem"}),
     "security: mutual TLS with the nodes needs ca, cert and key together; missing cert, key"),
    ("missing file", setitem("security", {"token_file": "nope"}), "security.token_file: no such file: "),
    ("unknown key", setitem("security", {"password": "x"}),
     "security.password: unknown key (allowed: ca, cert, key, secret_file, token_file, protect_reads)"),
    ("protect_reads string", setitem("security", {"protect_reads": "yes"}),
     "security.protect_reads: expected true or false, got str 'yes'"),
    ("limits unknown", setitem("limits", {"max_conns": 1}), "limits.max_conns: unknown key"),
    ("limits zero", setitem("limits", {"max_connections": 0}),
     "limits.max_connections: expected a positive integer, got 0"),
    ("idle negative", setitem("limits", {"idle_timeout": -1}),
     "limits.idle_timeout: duration must not be negative, got -1"),
    ("backlog zero", setitem("limits", {"backlog": 0}),
     "limits.backlog: expected a whole number from 1 to 65535, got 0"),
    ("backlog huge", setitem("limits", {"backlog": 1 << 31}),
     "limits.backlog: expected a whole number from 1 to 65535, got 2147483648"),
    ("backlog text", setitem("limits", {"backlog": "1k"}),
     "limits.backlog: expected a whole number from 1 to 65535, got '1k'"),
    ("workers zero", setitem("router", "workers", 0),
     "router.workers: expected auto or a whole number from 1 to 64, got 0"),
    ("workers many", setitem("router", "workers", 65), "router.workers: expected auto or a whole number"),
    ("memcache tls no key", setitem("router", "memcache_tls", {"cert": "c.pem"}),
     "router.memcache_tls.cert: no such file"),
    ("source concurrency", setitem("groups", "scores", "source", "concurrency", 0),
     "groups.scores.source.concurrency: expected a positive integer, got 0"),
    ("vnodes huge", setitem("router", "vnodes", 1_000_000),
     "router.vnodes: 1000000 vnodes x the nodes' weights make 3000000 ring points, over the limit of 1000000"),
    ("weight huge", setitem("nodes", 0, "weight", 1000), "nodes[0].weight: expected a positive number up to 100"),
    ("too many nodes", setitem("nodes", [{"name": f"n{i}", "address": f"10.0.{i // 250}.{i % 250}:7001"}
                                         for i in range(1025)]),
     "nodes: 1025 nodes, over the limit of 1024"),
    ("too many groups", setitem("groups", {f"g{i}": {} for i in range(1025)}),
     "groups: 1025 groups, over the limit of 1024"),
]


@pytest.mark.parametrize("edit, expected", [case[1:] for case in BAD_SECURITY],
                         ids=[case[0] for case in BAD_SECURITY])
def test_bad_security_and_limits(tmp_path, edit, expected):
    path = write(tmp_path, edited(edit))
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert str(caught.value).startswith(f"{path}: {expected}")


# The "billion laughs": nine levels of nine aliases, 9**9 strings if anything expands it.
ALIAS_BOMB = """\
x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
x-e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
x-f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
x-g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
x-h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
x-i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_an_alias_bomb_in_a_value_is_refused_without_expanding_it(tmp_path):
    # The anchors sit in a list where the topology wants a string, the last one the bomb.
    text = (
        "router: {default_group: s}\nnodes: [{name: a, address: '127.0.0.1:1'}]\ngroups:\n"
        "  s:\n    source:\n      python:\n"
        + "".join("        - " + line.split(": ", 1)[1] + "\n"
                  for line in ALIAS_BOMB.splitlines()))
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: groups.s.source.python: expected a string, got list [")
    assert len(message) < len(str(path)) + 300


def test_more_aliases_than_a_topology_needs_are_refused(tmp_path):
    text = "router: &r {default_group: s}\nx: [" + ", ".join(["*r"] * 101) + "]\n"
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert "more than 100 aliases (*name); a topology needs none" in str(caught.value)


def test_a_few_aliases_are_fine(tmp_path):
    text = """\
router: {default_group: scores, timeout: &t 300ms, vnodes: 10}
nodes: [{name: a, address: "127.0.0.1:7001"}]
groups:
  scores: &plain {max_bytes: 1MiB}
  sessions: *plain
limits: {command_timeout: *t}
"""
    topology = load_topology(write(tmp_path, text))
    assert topology.groups["sessions"].max_bytes == 1 << 20
    assert topology.limits.command_timeout == 0.3


@pytest.mark.parametrize("text", ["[" * 10_000 + "]" * 10_000, "a:\n" + "".join(
    " " * i + f"k{i}:\n" for i in range(1, 200)) + " " * 200 + "v: 1\n"])
def test_deep_nesting_is_refused_not_a_crash(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert "nested deeper than 32 levels" in str(caught.value)


def test_a_huge_document_is_refused(tmp_path):
    path = write(tmp_path, "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(TopologyError, match=r"the document is \d+ bytes, over the limit of 1048576"):
        load_topology(path)
