"""Per-group load bounds (router/cluster/loads.py), alone, under a python source, and in the Router:
deterministic, with fake clocks and a thread pool the test runs by hand."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, fail

from twisted.internet.task import Clock

from router.cluster.errors import SourceBusy, SourceError
from router.cluster.loads import LoadLimiter
from router.cluster.router import Router
from router.memcache.server import MemcacheFactory
from router.sources.python import PythonSource
from shared import ringcache_pb2 as pb
from tests.fakes import (FakeNodes, FakeReactor, FakeSources, PlaneClient, SyncPool,
                         make_router, node, topology)
from tests.helpers import CountingTransport, outcomes

HERE = "tests.router.sources.test_python"  # its module-level functions are the sources below


class Loads:
    """Loads the test ends by hand: each start() records an answer and a finished Deferred."""

    def __init__(self, separate_finish: bool = False):
        self.separate_finish = separate_finish
        self.started: list[tuple[str, Deferred, Deferred]] = []

    def start(self, name: str):
        def start():
            answer = Deferred()
            finished = Deferred() if self.separate_finish else answer
            self.started.append((name, answer, finished))
            return answer, finished
        return start

    def names(self) -> list[str]:
        return [name for name, _, _ in self.started]


def test_runs_up_to_concurrency_queues_up_to_queue_and_refuses_the_rest_at_once():
    limiter, loads = LoadLimiter("python:db:get", concurrency=2, queue=1), Loads()
    got = [outcomes(limiter.run(loads.start(name))) for name in "abcd"]
    assert loads.names() == ["a", "b"]
    assert (limiter.running, limiter.waiting, limiter.refused) == (2, 1, 1)
    assert got[:3] == [[], [], []]
    [failure] = got[3]
    assert failure.check(SourceBusy)
    assert str(failure.value) == "source python:db:get busy: 2 loads running, 1 waiting"


def test_a_freed_slot_goes_to_the_first_waiting_load():
    limiter, loads = LoadLimiter("s", concurrency=1, queue=3), Loads()
    got = {name: outcomes(limiter.run(loads.start(name))) for name in "abcd"}
    assert loads.names() == ["a"]
    loads.started[0][1].callback(b"A")
    assert loads.names() == ["a", "b"]
    loads.started[1][1].errback(SourceError("s", "down"))
    assert loads.names() == ["a", "b", "c"]
    assert got["a"] == [b"A"]
    assert got["b"][0].check(SourceError)
    assert (limiter.running, limiter.waiting) == (1, 1)


def test_the_slot_is_held_until_the_work_finishes_not_until_the_answer():
    limiter, loads = LoadLimiter("s", concurrency=1, queue=1), Loads(separate_finish=True)
    first = outcomes(limiter.run(loads.start("a")))
    outcomes(limiter.run(loads.start("b")))
    _, answer, finished = loads.started[0]
    answer.callback(b"A")  # e.g. a timeout answered the client; the thread runs on
    assert first == [b"A"]
    assert (loads.names(), limiter.running, limiter.waiting) == (["a"], 1, 1)
    finished.callback(None)
    assert (loads.names(), limiter.running, limiter.waiting) == (["a", "b"], 1, 0)


def test_loads_that_end_at_once_free_their_slot_without_recursing():
    limiter, loads = LoadLimiter("s", concurrency=1, queue=5000), Loads()
    first = limiter.run(loads.start("first"))
    quick = [outcomes(limiter.run(lambda: (fail(SourceError("s", "down")),) * 2))
             for _ in range(5000)]
    loads.started[0][1].callback(b"v")
    assert outcomes(first) == [b"v"]
    assert all(got[0].check(SourceError) for got in quick)
    assert (limiter.running, limiter.waiting) == (0, 0)


def test_a_start_that_raises_frees_its_slot_and_fails_its_load():
    limiter = LoadLimiter("s", concurrency=1, queue=1)

    def broken():
        raise RuntimeError("bug")

    [failure] = outcomes(limiter.run(broken))
    assert failure.check(RuntimeError)
    assert limiter.running == 0


# -- fairness: waiting loads are started a connection at a time, in turn -----------------

def queue_of(limiter: LoadLimiter, loads: Loads, names: str, conn) -> dict:
    """Run a load per letter of ``names`` for ``conn``; their outcome lists by name."""
    return {name: outcomes(limiter.run(loads.start(name), conn)) for name in names.split()}


def free_slots(loads: Loads, n: int) -> None:
    """End the oldest running loads, one at a time, ``n`` times."""
    for _ in range(n):
        running = [answer for _, answer, _ in loads.started if not answer.called]
        running[0].callback(b"v")


def test_waiting_loads_are_started_a_connection_at_a_time_in_turn():
    limiter, loads = LoadLimiter("s", concurrency=1, queue=10), Loads()
    queue_of(limiter, loads, "a0 a1 a2 a3", "A")
    queue_of(limiter, loads, "b1 b2", "B")
    queue_of(limiter, loads, "c1", "C")
    assert (loads.names(), limiter.waiting) == (["a0"], 6)
    free_slots(loads, 6)
    assert loads.names() == ["a0", "a1", "b1", "c1", "a2", "b2", "a3"]
    assert (limiter.running, limiter.waiting) == (1, 0)


def test_a_connection_that_starts_waiting_is_served_after_one_load_of_each_other():
    limiter, loads = LoadLimiter("s", concurrency=2, queue=100), Loads()
    queue_of(limiter, loads, " ".join(f"a{i}" for i in range(50)), "A")
    free_slots(loads, 3)
    assert loads.names() == ["a0", "a1", "a2", "a3", "a4"]
    queue_of(limiter, loads, "b0 b1", "B")  # B joins the turn order behind A
    free_slots(loads, 1)
    assert loads.names()[-1] == "a5"
    free_slots(loads, 1)
    assert loads.names()[-1] == "b0"
    free_slots(loads, 2)
    assert loads.names()[-3:] == ["b0", "a6", "b1"]


def test_loads_of_one_connection_start_first_come_first_served():
    limiter, loads = LoadLimiter("s", concurrency=2, queue=10), Loads()
    queue_of(limiter, loads, "a b c d e", None)
    free_slots(loads, 3)
    assert loads.names() == ["a", "b", "c", "d", "e"]


def test_the_queue_bound_is_over_all_connections_and_a_newcomer_displaces_the_longest():
    limiter, loads = LoadLimiter("python:db:get", concurrency=1, queue=3), Loads()
    a = queue_of(limiter, loads, "a0 a1 a2 a3", "A")
    assert (limiter.running, limiter.waiting) == (1, 3)
    # B waits for nothing and A for three: A's newest load gives B its place.
    b = queue_of(limiter, loads, "b1", "B")
    [failure] = a["a3"]
    assert failure.check(SourceBusy)
    assert str(failure.value) == "source python:db:get busy: 1 loads running, 3 waiting"
    # B now waits for one and A for two: within one of each other, so B's next is refused.
    b.update(queue_of(limiter, loads, "b2", "B"))
    assert str(b["b2"][0].value) == "source python:db:get busy: 1 loads running, 3 waiting"
    c = queue_of(limiter, loads, "c1", "C")
    assert a["a2"][0].check(SourceBusy)
    assert (limiter.waiting, limiter.refused) == (3, 3)
    free_slots(loads, 3)
    assert loads.names() == ["a0", "a1", "b1", "c1"]
    assert (a["a1"], b["b1"], c["c1"]) == ([b"v"], [b"v"], [])


def test_a_connection_alone_fills_the_queue_and_its_excess_is_refused_at_once():
    limiter, loads = LoadLimiter("s", concurrency=2, queue=3), Loads()
    got = queue_of(limiter, loads, "a b c d e f g", "A")
    assert [name for name, out in got.items() if out] == ["f", "g"]
    assert (limiter.running, limiter.waiting, limiter.refused) == (2, 3, 2)


def test_a_cancelled_waiting_load_leaves_the_queue():
    limiter, loads = LoadLimiter("s", concurrency=1, queue=1), Loads()
    limiter.run(loads.start("a0"), "A")
    waiting = limiter.run(loads.start("a1"), "A")
    got = outcomes(waiting)
    waiting.cancel()
    assert got[0].check(CancelledError)
    assert limiter.waiting == 0
    b = outcomes(limiter.run(loads.start("b1"), "B"))  # the place is free again
    free_slots(loads, 1)
    assert (loads.names(), b) == (["a0", "b1"], [])


def test_a_running_load_is_cancelled_through_its_answer():
    limiter, loads = LoadLimiter("s", concurrency=1, queue=1), Loads(separate_finish=True)
    limiter.run(loads.start("a0"), "A")
    queued = limiter.run(loads.start("a1"), "A")
    got = outcomes(queued)
    loads.started[0][1].callback(b"A0")
    loads.started[0][2].callback(None)  # a0's work ends: a1 runs
    queued.cancel()
    _, answer, finished = loads.started[1]
    assert answer.called and got[0].check(CancelledError)
    assert limiter.running == 1  # until its work has ended
    finished.callback(None)
    assert limiter.running == 0


# -- a python source in threads: a timed-out load keeps its slot until the thread returns --

def test_a_stuck_thread_keeps_its_slot_and_a_queued_load_times_out_from_its_own_start():
    reactor = FakeReactor(SyncPool(hold=True))
    source = PythonSource(f"{HERE}:plain", reactor, "", timeout=2.5, concurrency=1,
                          make_pool=reactor.pool.make)
    limiter = LoadLimiter(source.name, concurrency=1, queue=1)
    first = outcomes(limiter.run(lambda: source.start("a")))
    second = outcomes(limiter.run(lambda: source.start("b")))
    third = outcomes(limiter.run(lambda: source.start("c")))
    assert third[0].check(SourceBusy)
    reactor.advance(2.5)
    assert str(first[0].value) == f"source python:{HERE}:plain failed: no answer within 2.5s"
    # The thread still runs: the slot stays taken, the queued load has not started.
    reactor.advance(10)
    assert (limiter.running, limiter.waiting, second) == (1, 1, [])
    assert str(outcomes(limiter.run(lambda: source.start("d")))[0].value) == (
        f"source python:{HERE}:plain busy: 1 loads running, 1 waiting")
    [(on_result, fn, args, kwargs)] = reactor.pool.held
    reactor.pool.run_held()  # the stuck thread returns; its late value is dropped
    assert (limiter.running, limiter.waiting, len(first)) == (1, 0, 1)
    reactor.advance(2.4)
    assert second == []  # its 2.5 s count from when it started, not from when it queued
    reactor.pool.run_held()
    assert second == [b"plain:b"]
    assert limiter.running == 0


def test_a_coroutine_load_that_times_out_is_cancelled_and_frees_its_slot():
    reactor = FakeReactor()
    source = PythonSource(f"{HERE}:forever", reactor, "", timeout=1.0, concurrency=1,
                          make_pool=reactor.pool.make)
    limiter = LoadLimiter(source.name, concurrency=1, queue=0)
    got = outcomes(limiter.run(lambda: source.start("a")))
    reactor.advance(1.0)
    assert got[0].check(SourceError)
    assert limiter.running == 0


# -- in the Router -----------------------------------------------------------------------

BOUNDED = {"scores": {"source": {"python": "fake:scores", "concurrency": 2, "queue": 1}}}


def test_the_core_loads_through_the_groups_bounds_and_refuses_the_excess_at_once():
    router = make_router(topology(groups=BOUNDED))
    [source] = [g.source for g in router.groups.values()]
    got = {key: outcomes(router.get("scores", key)) for key in (b"a", b"b", b"c", b"d")}
    for _ in range(2):  # the miss, then the check again inside the flight
        for sent in node(router).take():
            sent.answer(pb.NOT_FOUND)
    assert [key for key, _ in source.loads] == ["a", "b"]
    [failure] = got[b"d"]
    assert failure.check(SourceBusy)
    assert str(failure.value) == "source python:fake:scores busy: 2 loads running, 1 waiting"
    # Refused loads are not loads: nothing started, nothing counted, nothing timed.
    assert router.stats.loads == 2
    assert router.stats.load_results == {}
    source.loads[0][1].callback(b"A")
    assert [key for key, _ in source.loads] == ["a", "b", "c"]
    assert router.stats.loads == 3


class Connections:
    """Memcached client connections to one Router whose node (node-a) is a PlaneClient
    holding nothing: every get misses and reads through group scores' fake source."""

    def __init__(self, groups):
        self.router = Router(topology(groups=groups), Clock(), clock=lambda: 1000.0,
                             node_client=FakeNodes(PlaneClient), build_source=FakeSources())
        self.router.start()
        self.factory = MemcacheFactory(self.router, self.router.reactor)
        self.source = self.router.groups["scores"].source

    def open(self):
        protocol = self.factory.buildProtocol(None)
        transport = CountingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def miss(self, protocol, line: bytes) -> None:
        """Send ``line``; the node answers that it holds none of its keys, twice (the
        miss, then the look again inside each key's flight)."""
        protocol.dataReceived(line)
        node = self.router.clients["node-a"]
        node.answer_prepared(lambda request: pb.Response(values=[b""] * len(request.keys)))
        for sent in node.take():
            sent.answer(pb.NOT_FOUND)

    def loaded(self) -> list[str]:
        return [key for key, _ in self.source.loads]

    def finish_next(self) -> None:
        """The oldest running load answers; its value is then cached on the node."""
        next(d for _, d in self.source.loads if not d.called).callback(b"v")
        for sent in self.router.clients["node-a"].take():
            sent.answer()


ONE_AT_A_TIME = {"scores": {"source": {"python": "fake:scores", "concurrency": 1,
                                       "queue": 100}}}


def test_one_clients_burst_of_misses_delays_anothers_miss_by_one_load():
    conns = Connections(ONE_AT_A_TIME)
    (a, _), (b, b_out) = conns.open(), conns.open()
    conns.miss(a, b"get " + b" ".join(b"a%d" % i for i in range(20)) + b"\r\n")
    conns.miss(b, b"get b0\r\n")
    assert conns.loaded() == ["a0"]
    conns.finish_next()
    assert conns.loaded() == ["a0", "a1"]  # A was first in the turn order
    conns.finish_next()
    assert conns.loaded() == ["a0", "a1", "b0"]
    conns.finish_next()
    conns.router.reactor.advance(0)
    assert b_out.value() == b"VALUE b0 0 1\r\nv\r\nEND\r\n"
    assert conns.loaded() == ["a0", "a1", "b0", "a2"]


def test_a_load_coalesced_by_singleflight_counts_for_the_client_that_started_it():
    conns = Connections(ONE_AT_A_TIME)
    (a, _), (b, b_out), (c, _) = conns.open(), conns.open(), conns.open()
    conns.miss(a, b"get a0 shared a1\r\n")
    conns.miss(b, b"get shared\r\n")  # joins A's waiting flight: B queues nothing
    conns.miss(c, b"get c0\r\n")
    limiter = conns.router.groups["scores"].loads
    assert (limiter.waiting, conns.router.flight.coalesced) == (3, 1)
    for _ in range(3):
        conns.finish_next()
    assert conns.loaded() == ["a0", "shared", "c0", "a1"]
    conns.router.reactor.advance(0)
    assert b_out.value() == b"VALUE shared 0 1\r\nv\r\nEND\r\n"


def test_a_reload_that_changes_concurrency_replaces_the_limiter_and_the_threads():
    def groups(concurrency):
        return {"scores": {"source": {"python": f"{HERE}:plain", "concurrency": concurrency}}}

    router = make_router(topology(groups=groups(4)))
    old = router.groups["scores"]
    assert (old.loads.concurrency, old.source.threads.size) == (4, 4)
    router.reload(topology(groups=groups(8)))
    new = router.groups["scores"]
    assert (new.loads.concurrency, new.source.threads.size) == (8, 8)
    assert (old.source.threads.closed, new.source.threads.closed) == (True, False)
