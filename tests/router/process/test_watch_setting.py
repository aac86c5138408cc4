"""router.watch: the topology file applies itself on change only when asked to."""

from __future__ import annotations

import os

from twisted.internet.task import Clock

from router.cluster.router import Router
from router.config.topology import TopologyError, load_topology, parse_topology_text
from router.process.main import RouterProcess
from tests.fakes import FakeNodes, FakeSources

TEXT = """\
router: {{default_group: scores{watch}}}
nodes:
{nodes}
groups: {{scores: {{}}}}
"""


def write(path, names, watch="", mtime=1):
    nodes = "".join(f"  - {{name: {n}, address: 127.0.0.1:{7001 + i}}}\n"
                    for i, n in enumerate(names))
    path.write_text(TEXT.format(watch=watch, nodes=nodes))
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


def process(path) -> tuple[RouterProcess, Clock]:
    clock = Clock()
    router = Router(load_topology(path), clock, clock=lambda: 1000.0,
                    node_client=FakeNodes(), build_source=FakeSources())
    router.start()
    proc = RouterProcess(router, clock)
    router.reload_hooks.append(proc._pass_on)
    proc._watch_origin(router.topology)
    return proc, clock


def test_watch_is_off_by_default_and_parses_as_a_boolean():
    assert parse_topology_text(TEXT.format(watch="", nodes="  - {name: a, address: 127.0.0.1:1}"),
                               "t.yaml").router.watch is False
    try:
        parse_topology_text(TEXT.format(watch=", watch: yes please",
                                        nodes="  - {name: a, address: 127.0.0.1:1}"), "t.yaml")
    except TopologyError as exc:
        assert "router.watch: expected true or false" in str(exc)
    else:
        raise AssertionError("a non-boolean watch was accepted")


def test_without_watch_a_saved_edit_waits_for_the_operators_reload(tmp_path):
    path = tmp_path / "topology.yaml"
    write(path, ["node-a"])
    proc, clock = process(path)
    write(path, ["node-a", "node-b"], mtime=2)
    clock.pump([1.0] * 5)
    assert sorted(proc.router.clients) == ["node-a"]  # still the old ring
    proc.reload()  # SIGHUP, POST /v1/reload
    assert sorted(proc.router.clients) == ["node-a", "node-b"]


def test_with_watch_a_saved_edit_applies_within_a_second_and_a_reload_can_turn_it_off(tmp_path):
    path = tmp_path / "topology.yaml"
    write(path, ["node-a"], watch=", watch: true")
    proc, clock = process(path)
    write(path, ["node-a", "node-b"], watch=", watch: true", mtime=2)
    clock.advance(1.0)
    assert sorted(proc.router.clients) == ["node-a", "node-b"]
    write(path, ["node-a"], mtime=3)  # watch: false again, applied by the watch itself
    clock.advance(1.0)
    assert sorted(proc.router.clients) == ["node-a"]
    write(path, ["node-a", "node-c"], mtime=4)
    clock.pump([1.0] * 5)
    assert sorted(proc.router.clients) == ["node-a"]
