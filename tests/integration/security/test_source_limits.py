"""Source loads bounded per group, against a real router and nodes: the 10,000-miss
multi-get of issue 11 (and, since issue 17, another client's miss that takes a place in
the queue that multi-get filled rather than being refused), a stuck HTTP origin whose
connection the router must close, and a PostgreSQL statement the router gave up on."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from router.memcache.keys import MAX_KEYS_PER_GET
from tests.integration.cluster import Cluster
from tests.integration.servers import timed_error, wait_for

pytestmark = pytest.mark.integration

CONCURRENCY, QUEUE = 4, 8
BUSY = (f"source python:gated_source:load busy: {CONCURRENCY} loads running, {QUEUE} waiting")
# A group of the same source with a queue of one: once one client's load waits there,
# another client's miss cannot take its place (it would wait for no fewer) and is refused.
NARROW_BUSY = f"source python:gated_source:load busy: {CONCURRENCY} loads running, 1 waiting"

# A source that holds every load until the test opens its gate: the bounds can then be
# watched full, with no race against loads finishing. Each load notes its key first.
GATED_SOURCE = """
import os, time

HERE = os.path.dirname(os.path.abspath(__file__))

def load(key):
    with open(os.path.join(HERE, "gated.log"), "a") as f:
        f.write(key + "\\n")
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(HERE, "gate-open")) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "gated-" + key
"""


class SilentOrigin:
    """An HTTP origin that accepts, reads the request and never answers; it notes when
    each connection is closed by the other side."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.closed: list[float] = []  # monotonic times the router closed a connection
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._hold, args=(sock,), daemon=True).start()

    def _hold(self, sock):
        with sock:
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            self.closed.append(time.monotonic())

    def stop(self):
        self.listener.close()


@pytest.fixture(scope="module")
def origin():
    o = SilentOrigin()
    yield o
    o.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, origin):
    directory = tmp_path_factory.mktemp("loads")
    (directory / "gated_source.py").write_text(GATED_SOURCE)
    groups = f"""
groups:
  scores:
    source: {{python: sources_for_tests:value}}
  gated:
    source: {{python: gated_source:load, timeout: 30s, concurrency: {CONCURRENCY}, queue: {QUEUE}}}
  narrow:
    source: {{python: gated_source:load, timeout: 30s, concurrency: {CONCURRENCY}, queue: 1}}
  silent:
    source: {{http: "http://127.0.0.1:{origin.port}/{{key}}", timeout: 500ms}}
"""
    c = Cluster(directory, nodes=2, groups=groups).start()
    yield c
    c.stop()


@pytest.fixture
def gate(cluster):
    """Closed for the test, then opened (and the loads it held waited for)."""
    gate = cluster.dir / "gate-open"
    gate.unlink(missing_ok=True)
    yield gate
    gate.touch()
    assert wait_for(lambda: load_state(cluster)["running"] == 0
                    and load_state(cluster, "narrow")["running"] == 0)


def patient(cluster) -> Client:
    """A memcached client that waits for a multi-get the source takes seconds over."""
    return Client(("127.0.0.1", cluster.memcache_port), timeout=30, connect_timeout=5)


def gated_loads(cluster, prefix: str) -> list[str]:
    log = cluster.dir / "gated.log"
    return [key for key in (log.read_text().split() if log.exists() else [])
            if key.startswith(prefix)]


def load_state(cluster, group: str = "gated") -> dict:
    return cluster.http_json("GET", "/v1/stats")["router"]["source_loads"][group]


def flood(cluster, keys: list[str], outcome: dict) -> threading.Thread:
    """A multi-get of ``keys`` in a thread; its SERVER_ERROR text lands in ``outcome``."""
    def multiget():
        try:
            outcome["values"] = patient(cluster).get_many(keys)
        except MemcacheServerError as exc:
            outcome["error"] = exc.args[0].decode()

    thread = threading.Thread(target=multiget)
    thread.start()
    return thread


def full(cluster, group: str = "gated", queue: int = QUEUE) -> bool:
    state = load_state(cluster, group)
    return (state["running"], state["waiting"]) == (CONCURRENCY, queue)


def test_a_multiget_of_4096_misses_starts_at_most_concurrency_plus_queue_loads(cluster, gate):
    # As many distinct keys as one get may name (a 10,000-key get is refused outright).
    keys = [f"gated:m{i}" for i in range(MAX_KEYS_PER_GET)]
    outcome, other = {}, {}
    thread, others = flood(cluster, keys, outcome), None
    try:
        assert wait_for(lambda: full(cluster)
                        and load_state(cluster)["refused"] == len(keys) - 12, timeout=30)
        # Meanwhile another client's miss in the group is not refused: it takes the place
        # of the flood's newest waiting load (router/cluster/loads.py) ...
        others = flood(cluster, ["gated:other-client"], other)
        assert wait_for(lambda: load_state(cluster)["refused"] == len(keys) - 11)
        assert full(cluster)
        # ... and a miss in another group is served as usual.
        assert cluster.memcache().get("scores:unbothered") == b"value-of-unbothered"
        assert len(gated_loads(cluster, "m")) == CONCURRENCY  # the queued have not started
    finally:
        gate.touch()
        thread.join(60)
        if others is not None:
            others.join(60)
    assert outcome["error"] == BUSY
    # 4 ran and 7 waited; the other 4,085 keys never reached the source.
    assert len(gated_loads(cluster, "m")) == CONCURRENCY + QUEUE - 1
    assert (gated_loads(cluster, "other"), other) == (
        ["other-client"], {"values": {"gated:other-client": b"gated-other-client"}})
    # Once they are done, the next miss is served at once.
    started = time.monotonic()
    assert cluster.memcache().get("gated:later") == b"gated-later"
    assert time.monotonic() - started < 2.0


def test_a_miss_past_the_bounds_is_503_over_http(cluster, gate):
    keys = [f"narrow:h{i}" for i in range(CONCURRENCY + 1 + 5)]
    thread = flood(cluster, keys, {})
    try:
        assert wait_for(lambda: full(cluster, "narrow", 1)
                        and load_state(cluster, "narrow")["refused"] == 5, timeout=30)
        message, seconds = timed_error(lambda: cluster.memcache().get("narrow:at-once"))
        assert (message, seconds < 1.0) == (NARROW_BUSY, True)  # not after the 30 s timeout
        status, body = cluster.http("GET", "/v1/narrow/over-http")
        assert (status, json.loads(body)) == (503, {"error": NARROW_BUSY})
    finally:
        gate.touch()
        thread.join(60)


def test_an_http_miss_takes_its_turn_beside_a_flooding_client(cluster, gate):
    thread = flood(cluster, [f"gated:f{i}" for i in range(CONCURRENCY + QUEUE + 5)], {})
    answer, asking = {}, None
    try:
        assert wait_for(lambda: full(cluster), timeout=30)
        refused = load_state(cluster)["refused"]
        asking = threading.Thread(target=lambda: answer.update(
            zip(("status", "body"), cluster.http("GET", "/v1/gated/over-http"))))
        asking.start()
        assert wait_for(lambda: load_state(cluster)["refused"] == refused + 1)
    finally:
        gate.touch()
        thread.join(60)
        if asking is not None:
            asking.join(60)
    assert answer == {"status": 200, "body": b"gated-over-http"}


def test_an_http_load_that_times_out_has_its_connection_closed_at_the_origin(cluster, origin):
    # The router's start-up probe (a HEAD, unanswered too) is over before the first load.
    assert wait_for(lambda: len(origin.closed) == origin.accepted == 1, timeout=5)
    message, _ = timed_error(lambda: cluster.memcache().get("silent:k"))
    timed_out = time.monotonic()
    assert message.endswith("failed: no answer within 0.5s")
    assert origin.accepted == 2
    assert wait_for(lambda: len(origin.closed) == 2, timeout=2)
    assert origin.closed[1] - timed_out < 1.0
    # The next load opens a new connection: the cancelled one was not put back in the pool.
    timed_error(lambda: cluster.memcache().get("silent:k2"))
    assert origin.accepted == 3


def test_a_sql_load_keeps_its_slot_until_the_statement_timeout_frees_it(tmp_path,
                                                                         postgres_server):
    # pg_sleep(5) outlives the 0.5 s timeout; PostgreSQL cancels it at the statement timeout
    # the source sets (timeout + 1 s), and only then is the pool's thread, and the slot, free.
    groups = f"""
groups:
  scores: {{}}
  stuck:
    source: {{sql: "{postgres_server.url}", query: "SELECT CAST(? AS TEXT) FROM pg_sleep(5)", timeout: 500ms, concurrency: 1, queue: 1}}
"""
    cluster = Cluster(tmp_path, nodes=1, groups=groups).start()
    try:
        started = time.monotonic()
        message, _ = timed_error(lambda: cluster.memcache().get("stuck:a"))
        assert message.endswith("failed: no answer within 0.5s")
        queued = {}

        def second():
            queued["message"], _ = timed_error(lambda: cluster.memcache().get("stuck:b"))
            queued["at"] = time.monotonic() - started

        thread = threading.Thread(target=second)
        thread.start()
        try:
            assert wait_for(lambda: cluster.http_json("GET", "/v1/stats")["router"]["source_loads"]
                            ["stuck"]["waiting"] == 1, timeout=2)
            # "a" answered its timeout long ago, yet still holds the one slot.
            message, seconds = timed_error(lambda: cluster.memcache().get("stuck:c"))
            assert message.endswith(" busy: 1 loads running, 1 waiting")
            assert seconds < 1.0
        finally:
            thread.join(10)
        # "b" ran once the statement timeout freed the slot (~1.5 s), then timed out itself.
        assert queued["message"].endswith("failed: no answer within 0.5s")
        assert 1.5 <= queued["at"] < 3.5
    finally:
        cluster.stop()
