"""`ringcache backup`, `restore` and `keys`, and `lru_crawler metadump`, for real: every
entry out through the router into one file, flush_all, and back in, with its flags and
ttl; onto a cluster with another ring too."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from shared.snapshot import Reader
from tests.helpers import RINGCACHE
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

GROUPS = """
groups:
  scores:
    source: {python: sources_for_tests:value}
  sessions: {}
  copies: {replicas: 2}
"""


def ringcache(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*RINGCACHE, *args, "--router", cluster.http_base],
                          capture_output=True, text=True, timeout=120)


def fill(mc) -> None:
    for i in range(1500):
        assert mc.set(f"sessions:s{i}", f"v{i}", expire=0 if i % 3 else 120, flags=i % 7,
                      noreply=False)
        assert mc.set(f"copies:c{i}", f"w{i}", noreply=False)


def check(mc) -> None:
    for i in range(1500):
        assert mc.get(f"sessions:s{i}") == f"v{i}".encode()
        assert mc.get(f"copies:c{i}") == f"w{i}".encode()


def test_backup_flush_all_restore_brings_every_entry_back(tmp_path):
    cluster = Cluster(tmp_path, nodes=3, groups=GROUPS).start()
    try:
        mc = cluster.memcache()
        fill(mc)
        path = tmp_path / "all.rcs"
        done = ringcache(cluster, "backup", str(path))
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith("backup: 3,000 entries, ")  # one line, not a bar
        with open(path, "rb") as f:
            reader = Reader(f.read)
            counts = {}
            for index, entries in reader.entry_blocks():
                name = reader.header.groups[index].name
                counts[name] = counts.get(name, 0) + len(entries)
        assert reader.header.kind == "backup"
        assert counts == {"sessions": 1500, "copies": 1500}  # each replicated key once

        listed = ringcache(cluster, "keys", "sessions", "--prefix", "s14", "--limit", "5")
        assert listed.returncode == 0 and len(listed.stdout.split()) == 5
        assert all(key.startswith("s14") for key in listed.stdout.split())
        everything = ringcache(cluster, "keys", "sessions").stdout.split()
        assert sorted(everything) == sorted(f"s{i}" for i in range(1500))

        deadlines = {key: int(fields[b"exp"]) for key, fields in metadump(cluster).items()}
        mc.flush_all()
        assert mc.get("sessions:s1") is None
        done = ringcache(cluster, "restore", str(path))
        assert done.returncode == 0, done.stderr
        assert "3,000 entries read, 4,500 stored (0 expired)" in done.stderr  # 2 copies each
        check(mc)
        assert meta_get(cluster, "sessions:s3").split()[2:] == [b"f3"]  # flags kept
        exps = {key: int(fields[b"exp"]) for key, fields in metadump(cluster).items()}
        assert exps[b"sessions%3As1"] == -1
        assert deadlines[b"sessions%3As3"] - 1 <= exps[b"sessions%3As3"] <= deadlines[b"sessions%3As3"]
    finally:
        cluster.stop()


def meta_get(cluster, key: str) -> bytes:
    with socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=5) as s:
        s.sendall(f"mg {key} v f\r\n".encode())
        data = b""
        while data.count(b"\r\n") < 2:
            data += s.recv(4096)
    return data.split(b"\r\n")[0]


def test_a_restore_onto_another_ring_sends_each_entry_to_its_new_owner(tmp_path):
    (tmp_path / "a").mkdir()
    first = Cluster(tmp_path / "a", nodes=2, groups=GROUPS).start()
    path = tmp_path / "sessions.rcs"
    try:
        fill(first.memcache())
        done = ringcache(first, "backup", str(path), "--group", "sessions")
        assert done.returncode == 0, done.stderr
    finally:
        first.stop()
    (tmp_path / "b").mkdir()
    second = Cluster(tmp_path / "b", nodes=4, groups=GROUPS).start()
    try:
        done = ringcache(second, "restore", str(path))
        assert done.returncode == 0, done.stderr
        mc = second.memcache()
        assert all(mc.get(f"sessions:s{i}") == f"v{i}".encode() for i in range(1500))
        stats = second.http_json("GET", "/v1/stats")["nodes"]
        items = [sum(int(g.get("items", 0)) for g in n["groups"] if g["name"] == "sessions")
                 for n in stats.values()]
        assert sum(items) == 1500 and all(n > 0 for n in items)  # spread over the new ring
    finally:
        second.stop()


def test_a_damaged_backup_is_refused_and_changes_nothing(tmp_path):
    cluster = Cluster(tmp_path, nodes=2, groups=GROUPS).start()
    try:
        mc = cluster.memcache()
        fill(mc)
        path = tmp_path / "all.rcs"
        assert ringcache(cluster, "backup", str(path)).returncode == 0
        mc.flush_all()
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        done = ringcache(cluster, "restore", str(path))
        assert done.returncode == 2 and done.stderr.count("\n") == 1
        assert "cut" in done.stderr
        assert mc.get("sessions:s1") is None
        assert ringcache(cluster, "restore", str(tmp_path / "nope.rcs")).returncode == 2
        assert ringcache(cluster, "backup", str(path), "--group", "nope").returncode == 1
    finally:
        cluster.stop()


def metadump(cluster) -> dict[bytes, dict]:
    """lru_crawler metadump all, then version: each dumped key's fields."""
    with socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=10) as s:
        s.sendall(b"lru_crawler metadump all\r\nversion\r\n")
        data = b""
        while b"VERSION" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    lines = data.split(b"\n")
    assert b"END\r" in lines and lines[-2].startswith(b"VERSION")  # END, then the next answer
    return {fields[b"key"]: fields for fields in
            (dict(part.split(b"=", 1) for part in line.split())
             for line in lines if line.startswith(b"key="))}


def test_lru_crawler_metadump_lists_every_key_in_memcached_s_words(tmp_path):
    cluster = Cluster(tmp_path, nodes=3, groups=GROUPS).start()
    try:
        mc = cluster.memcache()
        now = time.time()
        for i in range(300):
            assert mc.set(f"sessions:m{i}", "x" * 10, expire=100 if i % 2 else 0, noreply=False)
        dumped = metadump(cluster)
        assert len(dumped) == 300
        plain, timed = dumped[b"sessions%3Am0"], dumped[b"sessions%3Am1"]
        # size: the key and what the node stores (a kind byte, the CAS unique, the value)
        assert plain[b"exp"] == b"-1" and plain[b"size"] == b"21" and plain[b"cls"] == b"1"
        assert now + 95 < int(timed[b"exp"]) <= now + 101
    finally:
        cluster.stop()
