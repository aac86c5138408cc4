"""A process open beyond this host without authentication says so, loudly, at start; the
demo on 127.0.0.1 stays quiet."""

from __future__ import annotations

import pytest

from router.config.topology import parse_topology
from router.process.security import exposure_warnings
from shared.net import is_loopback

pytestmark = pytest.mark.integration


def topology(tmp_path, router=None, node="127.0.0.1:7001", security=None):
    for name in ("token", "server.pem", "server.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    return parse_topology({
        "router": {"default_group": "g", **(router or {})},
        "nodes": [{"name": "n1", "address": node}, {"name": "n2", "address": "127.0.0.2:7002"}],
        "groups": {"g": {}},
        **({"security": security} if security else {}),
    }, str(tmp_path / "topology.yaml"))


def test_loopback_is_only_this_machine():
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "node-a", "")] == [False] * 5


def test_the_demo_on_loopback_warns_of_nothing(tmp_path):
    assert exposure_warnings(topology(tmp_path), nodes_authenticated=False, environ={}) == []


def test_each_open_listener_and_unauthenticated_node_link_is_named(tmp_path):
    t = topology(tmp_path, router={"memcache": "0.0.0.0:11211", "http": "[::]:8080"}, node="node-a:7001")
    warnings = exposure_warnings(t, nodes_authenticated=False, environ={})
    assert [w.split(":")[0] for w in warnings] == ["WARNING"] * 3
    assert "memcached port 0.0.0.0:11211 is reachable from other hosts" in warnings[0]
    assert "HTTP API [::]:8080 is reachable from other hosts with no admin token" in warnings[1]
    assert warnings[2].startswith("WARNING: nodes n1 are reached over the network with no "
                                  "authentication")


def test_authentication_silences_each_warning(tmp_path):
    t = topology(tmp_path, router={
        "memcache": "0.0.0.0:11211", "http": "0.0.0.0:8080",
        "memcache_tls": {"cert": "server.pem", "key": "server.key", "ca": "ca.pem"}},
        node="node-a:7001", security={"token_file": "token"})
    assert exposure_warnings(t, nodes_authenticated=True, environ={}) == []
    t = topology(tmp_path, router={"http": "0.0.0.0:8080"})
    assert exposure_warnings(t, nodes_authenticated=False,
                             environ={"RINGCACHE_ADMIN_TOKEN": "t"}) == []


def test_a_token_that_cannot_be_read_closes_the_api_rather_than_open_it(tmp_path):
    # Protected requests are then refused (router/http/admin_token.py): nothing is open.
    (tmp_path / "empty.token").write_text("")
    t = topology(tmp_path, router={"http": "0.0.0.0:8080"}, security={"token_file": "empty.token"})
    assert exposure_warnings(t, nodes_authenticated=True, environ={}) == []
    blank = topology(tmp_path, router={"http": "0.0.0.0:8080"})
    assert len(exposure_warnings(blank, nodes_authenticated=True,
                                 environ={"RINGCACHE_ADMIN_TOKEN": "  "})) == 1


