"""EtcdOrigin on a Clock and an in-memory etcd: first read, watch, refusal, outages, compaction.

The real client against a real etcd is tests/integration/test_etcd.py; here the loop's
rules are held exactly: which revision a watch resumes from, when it reads afresh, how
long it waits between tries, and what the router serves meanwhile.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from router.cluster.router import Router
from router.config.etcd import Compacted, EtcdURL, EtcdUnavailable, Event, KeyValue
from router.config.etcd_origin import EtcdOrigin
from router.config.origin import Reader
from router.config.topology import Address, TopologyError
from tests.fakes import FakeNodes, FakeSources
from tests.helpers import outcomes

URL = "etcd://127.0.0.1:2379/ringcache/topology"


def document(*nodes: str, default: str = "scores") -> bytes:
    lines = [f"  - {{name: {n}, address: 127.0.0.1:{7001 + i}}}" for i, n in enumerate(nodes)]
    return ("router: {default_group: %s}\nnodes:\n%s\ngroups: {scores: {}}\n"
            % (default, "\n".join(lines))).encode()


class FakeEtcd:
    """One key's history, served as EtcdClient serves it: get, watch (replaying from a
    revision), and an outage that breaks every watch. ``deaf``: watches deliver nothing."""

    def __init__(self):
        self.url = EtcdURL.parse(URL)
        self.where = "http://127.0.0.1:2379"
        self.revision = 1
        self.history: list[Event] = []
        self.compacted = 0  # revisions below this are gone
        self.up = True
        self.deaf = False
        self.watches: list[tuple[int, object, Deferred]] = []
        self.gets = 0
        self.tries = 0  # gets and watches, answered or not
        self.watched_from: list[int] = []
        self.closed = False

    def put(self, value: bytes) -> int:
        self.revision += 1
        self._record(Event(KeyValue(value, self.revision), self.revision))
        return self.revision

    def delete(self) -> int:
        self.revision += 1
        self._record(Event(None, self.revision))
        return self.revision

    def _record(self, event: Event) -> None:
        self.history.append(event)
        if not self.deaf:
            for _, on_events, _ in list(self.watches):
                on_events([event])

    def compact(self) -> None:
        self.compacted = self.revision

    def go_down(self) -> None:
        self.up = False
        for _, _, d in list(self.watches):
            d.errback(EtcdUnavailable(f"{self.where}: connection lost"))
        self.watches.clear()

    async def get(self, key, keys_only=False):
        self.gets += 1
        self.tries += 1
        if not self.up:
            raise EtcdUnavailable(f"{self.where}: connection refused")
        current = self.history[-1].kv if self.history else None
        return current, self.revision

    async def watch(self, key, start_revision, on_events, on_created=lambda: None):
        self.tries += 1
        if not self.up:
            raise EtcdUnavailable(f"{self.where}: connection refused")
        self.watched_from.append(start_revision)
        if start_revision < self.compacted:
            raise Compacted(self.compacted)
        on_created()
        backlog = [e for e in self.history if e.revision >= start_revision]
        if backlog:
            on_events(backlog)
        entry = []
        d = Deferred(lambda _: self.watches.remove(entry[0]))
        entry.append((start_revision, on_events, d))
        self.watches.append(entry[0])
        await d

    def close(self):
        self.closed = True


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def etcd():
    fake = FakeEtcd()
    fake.put(document("node-a", "node-b"))
    return fake


def started(etcd, clock, **kwargs) -> EtcdOrigin:
    origin = EtcdOrigin(etcd, Reader(base_dir="/srv"), clock, random=lambda: 1.0, **kwargs)
    first = outcomes(Deferred.fromCoroutine(origin.first()))
    assert len(first) == 1, "the first document is read at once when etcd has it"
    return origin, first[0]


def serving(etcd, clock):
    """A router on the origin, as `ringcache router -c etcd://...` wires it."""
    origin, topology = started(etcd, clock)
    router = Router(topology, clock, clock=clock.seconds, node_client=FakeNodes(),
                    build_source=FakeSources(), origin=origin)
    router.start()
    changes = []
    origin.watch(clock, lambda: changes.append(_reload(router)))
    return origin, router, changes


def _reload(router):
    try:
        return router.reload()
    except TopologyError as exc:
        return exc


def test_the_first_document_is_the_key_at_its_revision_with_paths_in_the_base_dir(etcd, clock):
    origin, topology = started(etcd, clock)
    assert [n.name for n in topology.nodes] == ["node-a", "node-b"]
    assert topology.revision == 2 and topology.path == URL and topology.base_dir == "/srv"
    assert origin.status()["etcd"]["state"] == "watching"
    assert etcd.watched_from == [3]  # from the revision after the read


def test_overrides_apply_to_every_revision(etcd, clock):
    reader = Reader(memcache=Address("127.0.0.1", 12000), http=Address("127.0.0.1", 12001))
    origin = EtcdOrigin(etcd, reader, clock)
    topology = outcomes(Deferred.fromCoroutine(origin.first()))[0]
    assert (str(topology.router.memcache), str(topology.router.http)) == (
        "127.0.0.1:12000", "127.0.0.1:12001")
    etcd.put(document("node-a"))
    assert str(origin.read().router.memcache) == "127.0.0.1:12000"


def test_a_missing_key_is_waited_for(clock):
    etcd = FakeEtcd()
    origin = EtcdOrigin(etcd, Reader(), clock)
    first = outcomes(Deferred.fromCoroutine(origin.first()))
    assert first == []
    etcd.put(document("node-a"))
    assert [n.name for n in first[0].nodes] == ["node-a"]


def test_an_invalid_first_document_is_an_error_naming_the_url_and_revision(clock):
    etcd = FakeEtcd()
    etcd.put(document("node-a", default="nosuchgroup"))
    origin = EtcdOrigin(etcd, Reader(), clock)
    (failure,) = outcomes(Deferred.fromCoroutine(origin.first()))
    assert failure.check(TopologyError)
    assert str(failure.value).startswith(f"{URL} (revision 2): router.default_group: ")


def test_every_revision_is_a_reload(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    before = router.ring.digest
    etcd.put(document("node-a", "node-b", "node-c"))
    assert len(changes) == 1 and changes[0]["applied"] is True
    assert router.ring.digest != before and router.topology.revision == 3
    assert sorted(router.clients) == ["node-a", "node-b", "node-c"]
    assert router.ring_info()["config"] == {"origin": URL, "revision": 3, "last_error": None}


def test_an_invalid_revision_is_refused_and_the_old_ring_serves(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    digest = router.ring.digest
    etcd.put(document("node-a", default="nosuchgroup"))
    assert isinstance(changes[0], TopologyError)
    assert router.ring.digest == digest and router.topology.revision == 2
    status = router.config_status()
    assert status["failures"] == 1 and status["revision"] == 2
    assert status["last_error"].startswith(f"{URL} (revision 3): router.default_group")
    assert status["etcd"]["latest_revision"] == 3
    assert router.ring_info()["config"]["last_error"] == status["last_error"]
    etcd.put(b"\xff not text")
    assert "(revision 4): not UTF-8 text" in str(changes[1])
    etcd.delete()
    assert "the key is gone (revision 5)" in str(changes[2])
    assert router.ring.digest == digest
    etcd.put(document("node-a"))  # a good one again clears the error
    assert changes[3]["applied"] is True and router.config_status()["last_error"] is None


def test_a_batch_of_events_applies_only_the_newest(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    etcd.go_down()
    etcd.up = True
    etcd.history += [Event(KeyValue(document("node-a"), 3), 3),
                     Event(KeyValue(document("node-a", "node-c"), 4), 4)]
    etcd.revision = 4
    clock.advance(0.1)
    assert len(changes) == 1 and sorted(router.clients) == ["node-a", "node-c"]


def test_an_outage_keeps_the_ring_retries_with_capped_backoff_and_resumes(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    digest = router.ring.digest
    etcd.go_down()
    status = origin.status()["etcd"]
    assert status["state"] == "unreachable" and "connection lost" in status["error"]
    assert status["outages"] == 1 and router.ring.digest == digest
    # Waits of 0.1, 0.2, 0.4, 0.8, 1.6, then 2 s each (random=1.0: the top of the jitter).
    tries = []
    for _ in range(8):
        (retry,) = clock.getDelayedCalls()  # the one thing waiting: the next try
        before, wait = etcd.tries, retry.getTime() - clock.seconds()
        clock.advance(wait)
        assert etcd.tries == before + 1
        tries.append(round(wait, 6))
    assert tries == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert origin.status()["etcd"]["retries"] == 9
    # Back, with a revision written meanwhile: the watch resumes after the last one seen.
    etcd.up = True
    etcd.deaf = True
    etcd.put(document("node-a", "node-c"))
    etcd.deaf = False
    clock.advance(2.0)
    assert etcd.watched_from[-1] == 3 and etcd.gets == 1  # no fresh read was needed
    assert origin.status()["etcd"]["state"] == "watching" and origin.status()["etcd"]["retries"] == 0
    assert router.topology.revision == 3 and sorted(router.clients) == ["node-a", "node-c"]


def test_a_compacted_revision_means_a_fresh_read(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    etcd.go_down()
    etcd.up = True
    etcd.deaf = True
    etcd.put(document("node-a", "node-c"))
    etcd.put(document("node-c"))
    etcd.compact()
    etcd.deaf = False
    clock.advance(0.1)
    assert etcd.watched_from[-2:] == [3, 5] and etcd.gets == 2
    assert router.topology.revision == 4 and sorted(router.clients) == ["node-c"]


def test_a_liveness_read_notices_a_silent_etcd_and_a_missed_revision(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    etcd.deaf = True
    etcd.put(document("node-a", "node-c"))  # the watch says nothing
    assert changes == []
    etcd.deaf = False
    clock.advance(5.0)  # the check sees revision 3, reads afresh
    assert router.topology.revision == 3 and len(etcd.watches) == 1
    etcd.up = False  # a connection that dies without a word: only the check can tell
    clock.advance(5.0)
    assert origin.status()["etcd"]["state"] == "unreachable" and etcd.watches == []


def test_stop_leaves_nothing_running(etcd, clock):
    origin, router, changes = serving(etcd, clock)
    origin.stop()
    assert etcd.watches == [] and etcd.closed and clock.getDelayedCalls() == []
    assert origin.status()["etcd"]["state"] == "stopped"
    etcd.go_down()
    origin2, _ = started(etcd_up(etcd), clock)
    etcd.go_down()
    origin2.stop()
    assert clock.getDelayedCalls() == []


def etcd_up(etcd):
    etcd.up = True
    return etcd
