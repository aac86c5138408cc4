"""`ringcache topology`: bad input is one line and exit 2 before etcd is asked anything;
the plan as people read it. (Against a real etcd: tests/integration/test_etcd.py.)"""

from __future__ import annotations

import pytest

from router.cli import topology as cli
from router.cluster.plan import plan, ring_for
from tests.fakes import topology


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("router: {default_group: s}\nnodes: [{name: a, address: 127.0.0.1:7001}]\n"
                    "groups: {s: {}}\n")
    return str(path)


@pytest.mark.parametrize("argv, problem", [
    (["push", "{good}", "http://h/k", "--yes"], "expected etcd://HOST:PORT/KEY"),
    (["push", "/nonexistent.yaml", "etcd://h:2379/k", "--yes"], "/nonexistent.yaml: cannot read"),
    (["push", "{bad}", "etcd://h:2379/k", "--yes"], "nodes: required key is missing"),
    (["push", "{good}", "etcd://h:2379/k"], "add --yes"),
    (["get", "etcd://h:2379/k", "--etcd-user", "u"], "has no password"),
    (["get"], "the following arguments are required: URL"),
    (["pull", "etcd://h:2379/k"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, problem, good, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    (tmp_path / "bad.yaml").write_text("router: {default_group: s}\n")
    argv = [a.format(good=good, bad=tmp_path / "bad.yaml") for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and problem in err, err


def test_the_plan_shows_moves_per_pair_and_shares():
    old = topology(nodes=["node-a", "node-b"])
    new = topology(nodes=["node-a", "node-b", "node-c"])
    result = plan(ring_for(old), new)
    text = cli.plan_table(result, None)
    lines = text.splitlines()
    assert lines[0] == f"ring digest {ring_for(old).digest} -> {ring_for(new).digest}"
    assert lines[1] == f"keys moved: {result['moved']:.1%}"
    pairs = [m for m in result["moves"]]
    assert {(m["from"], m["to"]) for m in pairs} == {("node-a", "node-c"), ("node-b", "node-c")}
    for m in pairs:
        assert f"  {m['from']} -> {m['to']}  {m['share']:6.1%}" in lines
    assert lines[-1].split() == ["node-c", "-", f"{result['shares_after']['node-c']:.1%}"]
    assert plan(None, new)["moved"] == 1.0
