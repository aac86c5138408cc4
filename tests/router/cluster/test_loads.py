"""Per-group load bounds (router/cluster/loads.py), alone, under a python source, and in the Router:
deterministic, with fake clocks and a thread pool the test runs by hand."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail

from router.cluster.errors import SourceBusy, SourceError
from router.cluster.loads import LoadLimiter
from router.sources.python import PythonSource
from shared import ringcache_pb2 as pb
from tests.fakes import FakeReactor, SyncPool, make_router, node, topology
from tests.helpers import outcomes

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


# -- a python source in threads: a timed-out load keeps its slot until the thread returns --

def test_a_stuck_thread_keeps_its_slot_and_a_queued_load_times_out_from_its_own_start():
    reactor = FakeReactor(SyncPool(hold=True))
    source = PythonSource(f"{HERE}:plain", reactor, "", timeout=2.5)
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
    source = PythonSource(f"{HERE}:forever", reactor, "", timeout=1.0)
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
