"""`ringcache node --data-dir` as a real process: it restarts with its cache, a kill -9 at
any moment never brings back a value older than a write it acknowledged, and a damaged
file costs the cache, never the node."""

from __future__ import annotations

import random
import signal
import time

import pytest

from shared import entry
from shared import ringcache_pb2 as pb
from tests.helpers import (RINGCACHE, NodeConnection, free_port, port_open, start_process,
                           stop_process, wait_for)

pytestmark = pytest.mark.integration

GROUP = "g"


class Node:
    """One node's port and data dir, started and stopped again and again."""

    def __init__(self, data_dir, *flags: str):
        self.port = free_port()
        self.args = [*RINGCACHE, "node", "--listen", f"127.0.0.1:{self.port}",
                     "--data-dir", str(data_dir), *flags]
        self.proc = None
        self.conn = None

    def start(self):
        self.proc = start_process(self.args, lambda: port_open(self.port), timeout=30)
        self.conn = NodeConnection(self.port)
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        self.conn.close()
        return stop_process(self.proc, sig, timeout=30)

    def call(self, *requests):
        return self.conn.call(*requests)

    def configure(self, policy="adaptive", max_bytes=256 << 20):
        (answer,) = self.call(pb.Request(id=1, op=pb.CONFIGURE, groups=[
            pb.GroupConfig(name=GROUP, policy=policy, max_bytes=max_bytes)]))
        assert answer.status == pb.OK

    def set_many(self, items, ttl=0.0):
        answers = self.call(*[pb.Request(id=i, op=pb.SET, group=GROUP, key=k, value=v, ttl=ttl)
                              for i, (k, v) in enumerate(items)])
        assert all(a.status == pb.OK for a in answers)

    def values(self, keys) -> dict:
        (answer,) = self.call(pb.Request(id=1, op=pb.GET_MANY, group=GROUP, keys=keys))
        return {key: entry.unpack(v)[0] for key, v in zip(keys, answer.values) if v}

    def stats(self) -> pb.NodeStats:
        return self.call(pb.Request(id=1, op=pb.STATS))[0].stats


def keys(n):
    return [b"key:%06d" % i for i in range(n)]


def test_a_restart_keeps_every_cached_key_and_drops_the_expired(tmp_path):
    node = Node(tmp_path / "data").start()
    node.configure()
    names = keys(20_000)
    for i in range(0, len(names), 1000):
        node.set_many([(k, b"value of " + k) for k in names[i:i + 1000]])
    node.set_many([(b"short", b"s")], ttl=2)
    node.set_many([(b"long", b"l")], ttl=60)
    started = time.monotonic()
    assert node.stop() == 0
    node.start()
    got = {}
    for i in range(0, len(names), 1000):
        got.update(node.values(names[i:i + 1000]))
    assert got == {k: b"value of " + k for k in names}  # 100% hit after the restart
    snapshot = node.stats().snapshot
    assert (snapshot.restored, snapshot.restored_entries) == ("loaded", 20_002)
    assert node.values([b"long"]) == {b"long": b"l"}
    time.sleep(max(0.0, started + 2.2 - time.monotonic()))  # the 2 s ttl ran on while down
    assert node.values([b"short"]) == {}
    assert node.stop() == 0


def test_kill_9_at_random_moments_never_brings_back_an_older_value(tmp_path):
    # Snapshots all the time, writes all the time, and kill -9 now and then: after each
    # restart the snapshot in force is loaded whole, and every key answers its last
    # acknowledged value or a miss, never an older value.
    rng = random.Random(19)
    node = Node(tmp_path / "data", "--snapshot-every", "0.2s").start()
    node.configure()
    names = keys(30_000)
    acknowledged = {}
    for i in range(0, len(names), 1000):
        batch = [(k, b"0:" + k) for k in names[i:i + 1000]]
        node.set_many(batch)
        acknowledged.update(batch)
    wait_for(lambda: node.stats().snapshot.written > 0, timeout=30)
    for round_ in range(1, 7):
        deadline = time.monotonic() + rng.uniform(0.1, 1.5)
        while time.monotonic() < deadline:
            batch = [(k, b"%d:" % round_ + k) for k in rng.sample(names, 200)]
            node.set_many(batch)
            acknowledged.update(batch)
        assert node.stop(signal.SIGKILL) == -9
        node.start()
        snapshot = node.stats().snapshot
        assert snapshot.restored == "loaded", node.proc.read_stderr()
        got = {}
        for i in range(0, len(names), 1000):
            got.update(node.values(names[i:i + 1000]))
        assert {k: v for k, v in got.items() if acknowledged[k] != v} == {}
        assert len(got) == snapshot.restored_entries > 0
    assert node.stop() == 0


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign", "empty"])
def test_a_damaged_snapshot_is_refused_and_the_node_serves(tmp_path, damage):
    node = Node(tmp_path / "data").start()
    node.configure()
    node.set_many([(k, k) for k in keys(2000)])
    assert node.stop() == 0
    path = tmp_path / "data" / "snapshot.rcs"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2],
                      "flipped": data[:1000] + bytes([data[1000] ^ 1]) + data[1001:],
                      "foreign": b"\x7fELF" + data[4:],
                      "empty": b""}[damage])
    node.start()
    assert node.stats().snapshot.restored == "refused"
    assert node.values(keys(10)) == {}
    node.configure()
    node.set_many([(b"k", b"v")])
    assert node.values([b"k"]) == {b"k": b"v"}
    assert node.stop() == 0
    assert node.proc.read_stderr().count("refusing snapshot") == 1
    node.start()  # and its own snapshot of the new entry comes back
    assert node.values([b"k"]) == {b"k": b"v"}
    assert node.stop() == 0


def test_a_data_dir_in_use_is_refused(tmp_path):
    node = Node(tmp_path / "data").start()
    other = Node(tmp_path / "data")
    proc = start_process(other.args, lambda: True)
    try:
        assert proc.wait(10) == 2
        assert "is in use by another node" in proc.read_stderr()
    finally:
        stop_process(proc)
        assert node.stop() == 0
