"""Reader: one parse for every origin, where relative paths resolve, the listen overrides."""

from __future__ import annotations

import os

from router.config.origin import FileOrigin, Reader
from router.config.topology import Address

DOC = """\
router: {default_group: scores, memcache: 127.0.0.1:11211, http: 127.0.0.1:8080}
nodes: [{name: a, address: 127.0.0.1:7001}]
groups: {scores: {source: {sql: "sqlite:///app.db", query: "select v from t where k = ?"}}}
security: {token_file: token}
"""


def test_a_file_resolves_beside_itself_unless_a_base_dir_is_given(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text("t")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "token").write_text("t")
    path = tmp_path / "conf" / "topology.yaml"
    path.write_text(DOC)
    topology = FileOrigin(str(path)).read()
    assert topology.base_dir == str(tmp_path / "conf") and topology.revision is None
    assert topology.security.token_file == str(tmp_path / "conf" / "token")
    topology = Reader(base_dir=str(tmp_path / "elsewhere")).load(str(path))
    assert topology.security.token_file == str(tmp_path / "elsewhere" / "token")


def test_a_document_that_is_no_file_resolves_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("t")
    monkeypatch.chdir(tmp_path)
    topology = Reader().parse(DOC, "etcd://e:2379/k", revision=9)
    assert topology.base_dir == os.getcwd() and topology.revision == 9
    assert topology.path == "etcd://e:2379/k"
    assert topology.security.token_file == str(tmp_path / "token")


def test_listen_overrides_replace_only_the_addresses(tmp_path):
    (tmp_path / "token").write_text("t")
    reader = Reader(str(tmp_path), memcache=Address("0.0.0.0", 12000))
    topology = reader.parse(DOC, "doc")
    assert str(topology.router.memcache) == "0.0.0.0:12000"
    assert str(topology.router.http) == "127.0.0.1:8080"
    assert topology.router.default_group == "scores"
    assert reader.flags("/b") == ["--base-dir", "/b", "--memcache", "0.0.0.0:12000"]
