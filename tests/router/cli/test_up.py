"""`ringcache up`: planning, supervision with a fake clock, the demo source, and the real processes."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from examples import demo
from router.cli.children import (
    banner,
    is_on_this_host,
    node_max_memory,
    node_trust_args,
    plan_children,
)
from router.cli.up import main
from router.config.topology import parse_topology, parse_topology_text
from router.process.supervise import ChildSpec

ip = ipaddress.ip_address
FIFO = "python:tests.storage_node.cores.core_contract:FifoCore"


def make_topology(router=None, nodes=None, groups=None, path="/etc/ringcache/topology.yaml",
                  limits=None):
    return parse_topology(
        {
            "router": router or {"default_group": "scores"},
            "nodes": nodes or [{"name": "node-a", "address": "127.0.0.1:7001"}],
            "groups": groups or {"scores": {}},
            **({"limits": limits} if limits else {}),
        },
        path,
    )


# --- which nodes are on this host -------------------------------------------------------


def no_resolve(host):
    raise AssertionError(f"resolved {host!r}")


def no_bind(address):
    return False


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LocalHost", "box7", "BOX7"])
def test_loopback_and_own_names_are_local_without_a_lookup(host):
    assert is_on_this_host(host, hostname="box7", resolve=no_resolve, bindable=no_bind)


def test_a_name_is_local_when_it_resolves_to_loopback_or_a_bindable_address():
    addresses = {"lo.example": [ip("127.0.1.1")], "me.example": [ip("10.0.0.5"), ip("fd00::5")],
                 "far.example": [ip("10.0.0.6")], "gone.example": []}
    local = {ip("fd00::5")}

    def check(host):
        return is_on_this_host(host, hostname="box7", resolve=addresses.__getitem__, bindable=local.__contains__)

    assert [check(h) for h in addresses] == [True, True, False, False]
    assert (check("fd00::5"), check("10.0.0.6")) == (True, False)




# --- what to start -----------------------------------------------------------------------


def test_max_memory_is_the_sum_of_every_groups_budget():
    topology = make_topology(groups={"scores": {"max_bytes": "64MiB"}, "sessions": {"max_bytes": "1KiB"},
                                     "misc": {}})
    assert node_max_memory(topology) == (64 << 20) + 1024 + (64 << 20)  # misc takes the 64MiB default


def test_plan_starts_local_nodes_then_the_router_and_skips_remote_ones():
    topology = make_topology(
        nodes=[{"name": "node-a", "address": "127.0.0.1:7001"},
               {"name": "node-b", "address": "10.9.9.9:7002"},
               {"name": "node-c", "address": "[::1]:7003"}],
        groups={"scores": {"max_bytes": "64MiB"}, "sessions": {"max_bytes": "64MiB"}},
    )
    children, remote = plan_children(topology, ("rc",), lambda host: host != "10.9.9.9")
    assert children == [
        ChildSpec("node-a", ("rc", "node", "--listen", "127.0.0.1:7001", "--max-memory", "128MiB",
                             "--backlog", "1024"), ready="ringcache node listening on"),
        ChildSpec("node-c", ("rc", "node", "--listen", "[::1]:7003", "--max-memory", "128MiB",
                             "--backlog", "1024"), ready="ringcache node listening on"),
        ChildSpec("router", ("rc", "router", "-c", "/etc/ringcache/topology.yaml"),
                  ready="ringcache router: memcached on"),
    ]
    assert [node.name for node in remote] == ["node-b"]


def test_nodes_get_the_topologys_listen_backlog():
    topology = make_topology(limits={"backlog": 4096})
    [node, _] = plan_children(topology, ("rc",), lambda host: True)[0]
    assert node.argv[node.argv.index("--backlog") + 1] == "4096"


def test_banner_says_where_to_connect():
    topology = make_topology(
        router={"default_group": "scores", "memcache": "0.0.0.0:11311", "http": "127.0.0.1:8181"},
        nodes=[{"name": "node-a", "address": "127.0.0.1:7001"}, {"name": "node-b", "address": "10.1.1.1:7001"}],
    )
    assert banner(topology, 1, "d1g3st") == (
        "ringcache is up: 2 nodes (1 on this host), router digest d1g3st\n"
        "  memcached:  127.0.0.1:11311   (e.g. printf 'get scores:42\\r\\n' | nc -q1 127.0.0.1 11311)\n"
        "  HTTP:       http://127.0.0.1:8181/v1/scores/42\n"
        "  status:     http://127.0.0.1:8181/\n"
        "  stop:       Ctrl-C\n"
    )
    assert banner(make_topology(), 1, None).splitlines()[0] == "ringcache is up: 1 node"


def test_banner_names_the_nodes_that_are_down_and_why():
    topology = make_topology(nodes=[{"name": "node-a", "address": "127.0.0.1:7001"},
                                    {"name": "node-b", "address": "127.0.0.1:7002"}])
    lines = banner(topology, 2, "d1", {"node-b": "authentication with the node failed: " + "x" * 90})
    assert lines.splitlines()[:2] == [
        "ringcache is up: 2 nodes, 1 down, router digest d1",
        "  down:       node-b: authentication with the node failed: xxxxxxxxxxxxxxxxxxxxxx…"]


# --- bad input -----------------------------------------------------------------------------


def test_an_invalid_topology_is_one_line_on_stderr_and_exit_2(tmp_path, capsys):
    path = tmp_path / "topology.yaml"
    path.write_text("router: {default_group: nope}\nnodes: [{name: a, address: 127.0.0.1:7001}]\ngroups: {s: {}}\n")
    assert main(["-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"ringcache up: {path}: router.default_group: 'nope' is not a defined group (groups: s)\n"


@pytest.mark.parametrize("argv", [["-c", "/nonexistent/topology.yaml"], ["--bogus"], ["-c"]])
def test_a_missing_file_or_a_bad_argument_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ringcache up: ") and err.count("\n") == 1


# --- the demo source -----------------------------------------------------------------------------


def test_demo_scores_pause_like_a_database(monkeypatch):
    pauses = []
    monkeypatch.setattr(demo.time, "sleep", pauses.append)
    assert [demo.score(k) for k in ("Tom", "Jack", "Sam", "42", "1999", "nobody", "-5", "٣")] == [
        "630", "589", "567", "score-42-294", "score-1999-993", None, None, None,
    ]
    assert demo.score("9" * 5000) == f"score-{'9' * 5000}-993"
    assert pauses == [0.1] * 9


def test_ringcache_up_gives_its_nodes_the_topologys_secret_certificate_and_policies(tmp_path):
    for name in ("secret", "ca.pem", "router.pem", "router.key"):
        (tmp_path / name).write_text("x")
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(f"""\
        router: {{default_group: a}}
        nodes: [{{name: n, address: 127.0.0.1:7001}}]
        groups:
          a: {{policy: "{FIFO}", max_bytes: 1MiB}}
          b: {{policy: lfu, max_bytes: 1MiB}}
        security: {{secret_file: secret, ca: ca.pem, cert: router.pem, key: router.key}}
        """))
    topology = parse_topology_text(path.read_text(), str(path))
    assert node_trust_args(topology) == (
        "--secret-file", f"{tmp_path}/secret", "--tls-ca", f"{tmp_path}/ca.pem",
        "--tls-cert", f"{tmp_path}/node.pem", "--tls-key", f"{tmp_path}/node.key",
        "--allow-policy", FIFO)
    [node, _router], _ = plan_children(topology, ("rc",), lambda host: True)
    assert node.argv[-len(node_trust_args(topology)):] == node_trust_args(topology)
