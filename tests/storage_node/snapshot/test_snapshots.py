"""A node's data dir (storage_node/snapshot/): a snapshot written as the node stops or while
it serves, the journal of what changed since, and the start that brings back exactly
what may be served. Real files in a temporary dir; the reactor and both clocks fake."""

from __future__ import annotations

import itertools
import os

import pytest

from shared import entry
from shared import ringcache_pb2 as pb
from storage_node.node import Node
from storage_node.snapshot import files, journal
from storage_node.snapshot.service import Snapshots
from tests.fakes import FakeClock, FakeReactor
from tests.storage_node.cores.core_contract import walk_all

MiB = 1 << 20
NAME = "node-a"


class InlineWriter:
    """files.WriterThread's interface, writing at once in the caller's thread (the real
    one is tested on its own below): a snapshot in these tests is deterministic."""

    def __init__(self, file, call_from_thread):
        self.file, self.on_room = file, None

    def write(self, data):
        self.file.write(data)
        return True

    def commit(self, done):
        try:
            self.file.commit()
        except OSError as exc:
            done(exc)
        else:
            done(None)

    def abort(self):
        self.file.abort()


class Setup:
    """One data dir, and nodes started on it one after the other (a restart each)."""

    def __init__(self, directory):
        self.directory = directory
        self.wall = FakeClock(1_800_000_000.0)
        self.logged: list[str] = []

    def start(self, name=NAME, max_memory=16 * MiB, max_age=3600.0, every=0.0):
        clock = FakeClock(50.0)  # a new process: its monotonic clock starts anywhere
        node = Node(max_memory, clock=clock, log=self.logged.append)
        reactor = FakeReactor()
        # A timer each call of which takes a second: one take (1,024 entries) per turn.
        snapshots = Snapshots(node, self.directory, name, reactor, every=every, max_age=max_age,
                              wall=self.wall, log=self.logged.append, writer=InlineWriter,
                              timer=itertools.count().__next__)
        snapshots.load()
        node.clock_, node.reactor_, node.snapshots_ = clock, reactor, snapshots
        return node


def configure(node, *groups):
    answer = node.handle(pb.Request(id=1, op=pb.CONFIGURE, groups=[
        pb.GroupConfig(name=n, policy=p, max_bytes=b) for n, p, b in groups]))
    assert answer.status == pb.OK, answer.error


def put(node, key, value=b"v", group="g", **fields):
    answer = node.handle(pb.Request(id=1, op=pb.SET, group=group, key=key, value=value, **fields))
    assert answer.status == pb.OK
    return answer.cas


def get(node, key, group="g", **fields) -> pb.Response:
    return node.handle(pb.Request(id=1, op=pb.GET, group=group, key=key, **fields))


def node_stats(node) -> pb.NodeStats:
    return node.handle(pb.Request(id=1, op=pb.STATS)).stats


def run_periodic(node, turns=None):
    """A periodic snapshot, the reactor turned until it is done (or ``turns`` turns)."""
    results = []
    node.snapshots_.snapshot().addCallback(results.append)
    reactor, n = node.reactor_, 0
    while not results and (turns is None or n < turns):
        # One reactor turn: the first call due (Clock.advance would run every call that
        # comes due meanwhile, the turns after it too).
        call = min(reactor.getDelayedCalls(), key=lambda c: c.getTime())
        reactor.calls.remove(call)
        call.func(*call.args, **call.kw)
        n += 1
    return results


@pytest.fixture
def setup(tmp_path):
    return Setup(tmp_path / "data")


def filled(setup):
    node = setup.start()
    configure(node, ("g", "adaptive", MiB), ("h", "lru", MiB))
    for i in range(200):
        put(node, b"k%03d" % i, b"value %d" % i, flags=i, ttl=100 if i % 4 == 0 else 0)
    for i in range(0, 200, 3):
        get(node, b"k%03d" % i)
    put(node, b"other", b"in h", group="h")
    node.handle(pb.Request(id=1, op=pb.SET, group="g", key=b"absent", negative=True, ttl=30))
    return node


def test_a_node_stopped_comes_back_with_every_entry_flags_cas_ttl_and_order(setup):
    before = filled(setup)
    answers = {i: get(before, b"k%03d" % i) for i in range(200)}
    walked = {name: walk_all(before.groups.get(name).core) for name in "gh"}
    before.snapshots_.stop()
    setup.wall.now += 10
    after = setup.start()
    core_after = {name: walk_all(after.groups.get(name).core) for name in "gh"}
    for i in range(200):
        if i % 4:
            assert get(after, b"k%03d" % i) == answers[i]
        else:  # ttl 100 at the snapshot, 10 s of it spent while the node was down
            assert after.groups.get("g").core.ttl_left(b"k%03d" % i) == pytest.approx(90)
    assert get(after, b"absent").negative
    assert get(after, b"other", group="h").value == b"in h"
    # The same entries in the same order and states (ttls 10 s shorter).
    for name in "gh":
        assert [(k, v, r) for k, v, _, r in core_after[name]] == [(k, v, r) for k, v, _, r in walked[name]]
    assert put(after, b"new") > max(a.cas for a in answers.values())
    snapshot = node_stats(after).snapshot
    assert (snapshot.restored, snapshot.restored_entries) == ("loaded", 202)
    assert snapshot.restored_age == pytest.approx(10)


def test_expired_entries_do_not_come_back(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB))
    put(node, b"short", ttl=5)
    put(node, b"long", ttl=500)
    node.snapshots_.stop()
    setup.wall.now += 6
    after = setup.start()
    assert get(after, b"short").status == pb.NOT_FOUND
    assert get(after, b"long").status == pb.OK
    assert len(after.groups.get("g").core) == 1


def test_a_pending_delayed_flush_is_kept_by_the_wall_clock(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB), ("h", "lru", MiB))
    put(node, b"k")
    put(node, b"k", group="h")
    for group, delay in (("g", 20), ("h", 5)):
        node.handle(pb.Request(id=1, op=pb.FLUSH_GROUP, group=group, ttl=delay))
    node.snapshots_.stop()
    setup.wall.now += 10  # h's flush came due while the node was down, g's not yet
    after = setup.start()
    assert get(after, b"k", group="h").status == pb.NOT_FOUND
    assert get(after, b"k").status == pb.OK
    after.clock_.now += 10
    assert get(after, b"k").status == pb.NOT_FOUND


def test_groups_are_matched_by_name_and_a_smaller_budget_keeps_the_hottest(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB), ("gone", "lru", MiB))
    for i in range(10):
        put(node, b"k%d" % i, b"x" * 1000)
    get(node, b"k0")
    node.snapshots_.stop()
    after = setup.start()
    assert not after.configured  # until the router's CONFIGURE, the file's groups serve
    assert get(after, b"k0").status == pb.OK
    configure(after, ("g", "lru", 3 * (1000 + 16 + 304)))
    kept = [i for i in range(10) if get(after, b"k%d" % i).status == pb.OK]
    assert kept == [0, 8, 9]  # lru: the most recent three, k0 read last
    assert [g.name for g in node_stats(after).groups] == ["g"]


def test_a_periodic_snapshot_walks_a_slice_per_turn_and_notes_what_changes_meanwhile(setup):
    node = setup.start()
    configure(node, ("g", "adaptive", 64 * MiB))
    for i in range(20_000):
        put(node, b"k%05d" % i)
    results = run_periodic(node, turns=2)
    assert not results  # 20,000 entries take more than two slices
    put(node, b"k00000", b"changed during the walk")
    node.handle(pb.Request(id=1, op=pb.DELETE, group="g", key=b"k19999"))
    assert run_periodic(node) == [True] or results
    # The node dies (no final snapshot): what changed since the snapshot began is
    # forgotten, the rest comes back.
    after = setup.start()
    assert get(after, b"k00000").status == pb.NOT_FOUND
    assert get(after, b"k19999").status == pb.NOT_FOUND
    assert get(after, b"k00001").status == pb.OK
    assert len(after.groups.get("g").core) == 19_998
    assert any("2 changed since forgotten" in line for line in setup.logged)


def test_writes_after_the_last_snapshot_are_forgotten_after_a_crash(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB), ("h", "lru", MiB))
    for key in (b"a", b"b", b"c"):
        put(node, key)
        put(node, key, group="h")
    assert run_periodic(node) == [True]
    put(node, b"a", b"newer")  # acknowledged after the snapshot
    node.handle(pb.Request(id=1, op=pb.DELETE, group="g", key=b"b"))
    node.handle(pb.Request(id=1, op=pb.FLUSH_GROUP, group="h"))
    cas = put(node, b"z")
    after = setup.start()  # kill -9: no final snapshot
    assert [get(after, k).status for k in (b"a", b"b", b"c", b"z")] == [
        pb.NOT_FOUND, pb.NOT_FOUND, pb.OK, pb.NOT_FOUND]
    assert len(after.groups.get("h").core) == 0
    assert put(after, b"later") > cas  # no CAS unique given out before is given again


@pytest.mark.parametrize("left", [0, 3])
def test_a_death_just_after_a_journal_is_created_costs_nothing(setup, left):
    # A snapshot begins by creating the next journal, then writes its magic: a kill -9
    # between the two leaves a journal empty or cut inside its magic. It noted no write,
    # so the snapshot in force loads whole.
    node = setup.start()
    configure(node, ("g", "lru", MiB))
    put(node, b"a", b"kept")
    assert run_periodic(node) == [True]
    (newest,) = journal.sequences(setup.directory)
    with open(journal.path(setup.directory, newest), "r+b") as f:
        f.truncate(left)
    after = setup.start()
    assert node_stats(after).snapshot.restored == "loaded"
    assert get(after, b"a").value == b"kept"


def test_a_damaged_journal_refuses_the_snapshot_and_says_which_file(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB))
    put(node, b"a")
    assert run_periodic(node) == [True]
    put(node, b"b")  # noted in the journal
    (newest,) = journal.sequences(setup.directory)
    path = journal.path(setup.directory, newest)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    setup.logged.clear()
    after = setup.start()
    assert node_stats(after).snapshot.restored == "refused"
    assert get(after, b"a").status == pb.NOT_FOUND  # b may have changed: nothing is trusted
    assert len(setup.logged) == 1 and path.name in setup.logged[0]


def test_a_snapshot_cut_short_leaves_the_previous_one_in_force(setup):
    node = setup.start()
    configure(node, ("g", "adaptive", 64 * MiB))
    put(node, b"first")
    assert run_periodic(node) == [True]
    for i in range(20_000):
        put(node, b"k%05d" % i)
    run_periodic(node, turns=2)  # then the process dies, a temporary file half written
    assert (setup.directory / files.TEMPORARY).exists()
    after = setup.start()
    assert get(after, b"first").status == pb.OK
    assert get(after, b"k00000").status == pb.NOT_FOUND  # written after the first snapshot
    assert not (setup.directory / files.TEMPORARY).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign"])
def test_a_damaged_file_is_refused_with_one_line_and_moved_aside(setup, damage):
    node = filled(setup)
    node.snapshots_.stop()
    path = setup.directory / files.SNAPSHOT
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"#!/bin/sh\necho not a snapshot\n")
    path.write_bytes(bytes(data))
    setup.logged.clear()
    after = setup.start()
    assert len(setup.logged) == 1 and setup.logged[0].startswith(f"refusing snapshot {path}: ")
    assert list(after.groups) == [] and not path.exists()
    assert (setup.directory / files.REFUSED).read_bytes() == bytes(data)
    assert node_stats(after).snapshot.restored == "refused"
    put(after, b"k")  # serves, and its next snapshot is whole again
    after.snapshots_.stop()
    setup.logged.clear()
    assert get(setup.start(), b"k").status == pb.OK


def test_another_node_s_snapshot_is_refused(setup):
    filled(setup).snapshots_.stop()
    setup.logged.clear()
    after = setup.start(name="node-b")
    assert setup.logged == [f"refusing snapshot {setup.directory / files.SNAPSHOT}: written by "
                            f"node 'node-a', this is 'node-b'; the node starts empty (the file "
                            f"is kept as {files.REFUSED})"]
    assert list(after.groups) == []


def test_a_snapshot_older_than_max_age_is_not_loaded(setup):
    filled(setup).snapshots_.stop()
    setup.wall.now += 7200
    setup.logged.clear()
    after = setup.start(max_age=3600)
    assert list(after.groups) == []
    assert setup.logged[0].startswith("not loading snapshot ")
    assert node_stats(after).snapshot.restored == "too old"


def test_a_group_whose_core_cannot_list_its_entries_is_left_out(setup):
    node = setup.start()
    node.groups.allowed_policies = frozenset({"python:tests.storage_node.cores.core_contract:FifoCore"})
    configure(node, ("g", "lru", MiB), ("f", "python:tests.storage_node.cores.core_contract:FifoCore", MiB))
    put(node, b"k")
    put(node, b"k", group="f")
    node.snapshots_.stop()
    assert any("groups f not written" in line for line in setup.logged)
    after = setup.start()
    assert get(after, b"k").status == pb.OK
    assert after.groups.groups.keys() == {"g"}  # f's policy is not allowed on this start


def test_a_journal_that_cannot_be_written_removes_the_snapshot_in_force(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB))
    put(node, b"k")
    assert run_periodic(node) == [True]
    os.close(node.snapshots_.journal._fd)  # the disk goes away under the journal
    node.snapshots_.journal._fd = os.open(os.devnull, os.O_RDONLY)
    put(node, b"k", b"newer")
    assert not (setup.directory / files.SNAPSHOT).exists()
    assert any(line.startswith("cannot write the journal") for line in setup.logged)
    assert node_stats(node).snapshot.failures == 1
    assert get(setup.start(), b"k").status == pb.NOT_FOUND  # never the older value


def test_the_stats_tell_the_last_snapshot(setup):
    node = filled(setup)
    setup.wall.now += 3
    assert run_periodic(node) == [True]
    snapshot = node_stats(node).snapshot
    assert (snapshot.written, snapshot.last_entries, snapshot.failures) == (1, 202, 0)
    assert snapshot.last_at == setup.wall.now
    assert snapshot.last_bytes == (setup.directory / files.SNAPSHOT).stat().st_size
    assert snapshot.data_dir == str(setup.directory) and not snapshot.in_progress


def test_the_schedule_snapshots_every_period(setup):
    node = setup.start(every=60)
    configure(node, ("g", "lru", MiB))
    node.snapshots_.start()
    put(node, b"k")
    node.reactor_.advance(30)
    assert node_stats(node).snapshot.written == 0
    node.clock_.now += 61
    node.reactor_.advance(1)
    node.reactor_.advance(0)
    assert node_stats(node).snapshot.written == 1


def test_a_second_node_on_one_data_dir_is_refused(setup):
    held = files.lock(setup.directory)
    try:
        with pytest.raises(files.DataDirError, match="in use by another node"):
            files.lock(setup.directory)
    finally:
        held.close()


def test_the_writer_thread_writes_in_order_and_commits(tmp_path):
    import queue
    import threading

    calls: queue.SimpleQueue = queue.SimpleQueue()
    writer = files.WriterThread(files.SnapshotFile(tmp_path), lambda fn, *a: calls.put((fn, a)),
                                max_queued=10)
    assert writer.write(b"12345") is True
    assert writer.write(b"67890") is False  # 10 bytes queued: the most allowed
    room = threading.Event()
    writer.on_room = room.set
    done = []
    writer.commit(done.append)
    while not done:
        fn, args = calls.get(timeout=5)
        fn(*args)
    assert room.is_set() and done == [None]
    assert (tmp_path / files.SNAPSHOT).read_bytes() == b"1234567890"
    assert not (tmp_path / files.TEMPORARY).exists()


def test_entries_keep_their_cas_unique_through_a_restart(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB))
    cas = put(node, b"k", b"v", flags=7)
    node.snapshots_.stop()
    after = setup.start()
    answer = get(after, b"k")
    assert (answer.value, answer.flags, answer.cas) == (b"v", 7, cas)
    # a client's cas with the unique it read before the restart still matches
    answer = after.handle(pb.Request(id=1, op=pb.CAS, group="g", key=b"k", value=b"w", cas=cas))
    assert answer.status == pb.OK
    assert entry.unpack_cas(after.groups.get("g").core.get(b"k"))[0] == b"w"


def test_a_data_dir_that_takes_no_new_file_fails_the_snapshot_not_the_node(setup):
    node = setup.start()
    configure(node, ("g", "lru", MiB))
    put(node, b"k")
    (setup.directory / files.TEMPORARY).mkdir()  # in the way: the new file cannot be made
    assert run_periodic(node) == [False]
    node.snapshots_.stop()
    assert node_stats(node).snapshot.failures == 2
    assert get(node, b"k").status == pb.OK
    assert any("snapshot to " in line and "failed" in line for line in setup.logged)
