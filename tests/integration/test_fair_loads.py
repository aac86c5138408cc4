"""One client's burst of misses does not starve another client's loads (router/cluster/loads.py),
and a plain-function source really runs its group's ``concurrency`` loads at once.

Real processes: client A sends one `get` of 2,000 distinct missing keys of a group whose
python source takes 0.3 s a key; once A's loads are running, client B's single miss of the
same group must be answered within 0.8 s (one load of A's, then B's own, and slack). First
come first served, B waited for A's whole queue (60 s with the queue holding all 2,000).
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

SOURCES = '''
import threading, time

def slow(key):
    time.sleep(0.3)
    return "slow-" + key

# Passes only when 16 loads are in it at once (then the next 16, and so on).
_sixteen = threading.Barrier(16, timeout=20)

def together(key):
    _sixteen.wait()
    return "met-" + key
'''

GROUPS = """
groups:
  scores: {}
  slow:
    source: {python: fair_sources:slow, timeout: 120s, concurrency: 16, queue: 4096}
  bounded:
    source: {python: fair_sources:slow, timeout: 120s}
  together:
    source: {python: fair_sources:together, timeout: 30s, concurrency: 16}
"""

BURST = 2000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fair")
    (directory / "fair_sources.py").write_text(SOURCES)
    c = Cluster(directory, nodes=1, groups=GROUPS).start()
    yield c
    c.stop()


def source_loads(cluster, group: str) -> dict:
    return cluster.http_json("GET", "/v1/stats")["router"]["source_loads"][group]


def wait_for_loads(cluster, group: str, condition, what: str, timeout: float = 30.0) -> None:
    """Until ``condition(group's source_loads)`` holds."""
    deadline = time.monotonic() + timeout
    while not condition(loads := source_loads(cluster, group)):
        assert time.monotonic() < deadline, f"never {what}: {loads}"
        time.sleep(0.02)


def queued(at_least: int):
    """A condition on source_loads: all 16 loads running and ``at_least`` waiting."""
    return lambda loads: loads["running"] == 16 and loads["waiting"] >= at_least


def burst_of_misses(cluster, group: str) -> socket.socket:
    """Client A: one get of BURST distinct keys of ``group``, none cached."""
    a = socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=10)
    a.sendall(b"get " + b" ".join(b"%s:a-%d" % (group.encode(), i) for i in range(BURST))
              + b"\r\n")
    return a


def timed_miss(cluster, key: str) -> tuple[float, bytes | None]:
    """Client B's get of one missing ``key``: (seconds it took, the value)."""
    b = cluster.memcache()
    try:
        start = time.perf_counter()
        value = b.get(key)
        return time.perf_counter() - start, value
    finally:
        b.close()


def test_one_clients_2000_slow_misses_delay_anothers_miss_by_about_one_load(cluster):
    a = burst_of_misses(cluster, "slow")
    try:
        # (First come first served, B would wait for 1,000 loads: 19 s.)
        wait_for_loads(cluster, "slow", queued(1000), "A's loads queued")
        seconds, value = timed_miss(cluster, "slow:b")
        assert value == b"slow-b"
        assert seconds < 0.8, f"B's miss took {seconds:.2f}s behind A's burst"
        assert queued(500)(source_loads(cluster, "slow"))  # A's still wait
    finally:
        a.close()


def test_a_client_that_filled_the_queue_gives_up_a_place_to_another(cluster):
    # Default bounds: 16 running, 256 waiting. A's burst fills the queue and the rest of
    # it is refused; while A still waits for most of the queue, B's miss is not refused
    # (it takes the place of A's newest load when the queue is full) and waits for about
    # one of A's loads, not for A's queue.
    a = burst_of_misses(cluster, "bounded")
    try:
        wait_for_loads(cluster, "bounded", lambda loads: queued(200)(loads)
                       and loads["refused"] > 0, "A's queue full")
        seconds, value = timed_miss(cluster, "bounded:b")
        assert value == b"slow-b"  # first come first served, it was refused at once
        assert seconds < 0.8, f"B's miss took {seconds:.2f}s behind A's burst"
    finally:
        a.close()


def test_a_plain_function_source_runs_its_groups_concurrency_at_once(cluster):
    # Each load waits until 16 are in the function together: with fewer threads than the
    # group's concurrency (the reactor's pool had 10), none would ever answer.
    client = cluster.memcache()
    keys = [f"together:k{i}" for i in range(32)]
    assert client.get_many(keys) == {key: b"met-" + key.split(":")[1].encode() for key in keys}
