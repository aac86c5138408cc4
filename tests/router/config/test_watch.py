"""FileWatch on a Clock: content changes, symlink swaps as Kubernetes does them, missing files."""

from __future__ import annotations

import os

import pytest
from twisted.internet.task import Clock

from router.config.watch import FileWatch


def write(path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    # A fixed mtime: the test must not depend on the filesystem's timestamp granularity.
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def clock():
    return Clock()


def watch(path, clock, changes: list) -> FileWatch:
    w = FileWatch(str(path), lambda: changes.append(clock.seconds()), clock, interval=1.0)
    w.start()
    return w


def test_no_change_no_trigger(tmp_path, clock):
    path = tmp_path / "topology.yaml"
    write(path, "a: 1\n", 1_000_000_000)
    changes = []
    watch(path, clock, changes)
    clock.pump([1.0] * 5)
    assert changes == []


def test_content_change_triggers_once(tmp_path, clock):
    path = tmp_path / "topology.yaml"
    write(path, "a: 1\n", 1_000_000_000)
    changes = []
    watch(path, clock, changes)
    clock.advance(1.0)
    write(path, "a: 2\n", 2_000_000_000)  # same size: the mtime tells
    clock.advance(0.5)
    assert changes == []  # not before the next poll
    clock.pump([0.5, 1.0, 1.0])
    assert changes == [2.0]
    write(path, "a: 30\n", 2_000_000_000)  # same mtime: the size tells
    clock.pump([1.0, 1.0])
    assert changes == [2.0, 5.0]


def test_symlink_swapped_to_a_new_target_triggers(tmp_path, clock):
    # Kubernetes: ..data -> ..2024_01 and topology.yaml -> ..data/topology.yaml; an update
    # writes a new directory and renames a new ..data link over the old one.
    for name, text in (("..2024_01", "a: 1\n"), ("..2024_02", "a: 2\n")):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "topology.yaml", text, 1_000_000_000)  # equal mtime and size
    os.symlink("..2024_01", tmp_path / "..data")
    os.symlink("..data/topology.yaml", tmp_path / "topology.yaml")
    changes = []
    watch(tmp_path / "topology.yaml", clock, changes)
    clock.advance(1.0)
    os.symlink("..2024_02", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    clock.pump([1.0, 1.0])
    assert changes == [2.0]


def test_missing_file_waits_for_it_to_reappear(tmp_path, clock):
    path = tmp_path / "topology.yaml"
    write(path, "a: 1\n", 1_000_000_000)
    changes = []
    watch(path, clock, changes)
    path.unlink()
    clock.pump([1.0] * 3)
    assert changes == []
    write(path, "a: 2\n", 2_000_000_000)
    clock.pump([1.0] * 3)
    assert changes == [4.0]


def test_file_missing_at_start_triggers_when_it_appears(tmp_path, clock):
    path = tmp_path / "topology.yaml"
    changes = []
    watch(path, clock, changes)
    clock.advance(1.0)
    write(path, "a: 1\n", 1_000_000_000)
    clock.pump([1.0, 1.0])
    assert changes == [2.0]


def test_stop_ends_polling(tmp_path, clock):
    path = tmp_path / "topology.yaml"
    write(path, "a: 1\n", 1_000_000_000)
    changes = []
    w = watch(path, clock, changes)
    w.stop()
    w.stop()  # a second stop is harmless
    write(path, "a: 2\n", 2_000_000_000)
    clock.pump([1.0] * 3)
    assert changes == []
    assert clock.getDelayedCalls() == []
