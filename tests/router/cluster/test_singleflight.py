"""SingleFlight: one execution per key for concurrent callers, nothing remembered after it lands."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from router.cluster.singleflight import SingleFlight


class Calls:
    """A flight function that counts its runs and answers Deferreds the test fires."""

    def __init__(self):
        self.started: list[Deferred] = []

    def __call__(self) -> Deferred:
        d = Deferred()
        self.started.append(d)
        return d


def results(ds):
    out = []
    for d in ds:
        d.addBoth(out.append)
    return out


def test_concurrent_callers_share_one_run_and_its_result():
    flight, fn = SingleFlight(), Calls()
    waiters = [flight.do("k", fn) for _ in range(100)]
    got = results(waiters)
    assert len(fn.started) == 1
    assert got == []
    assert len(flight) == 1
    fn.started[0].callback(b"v")
    assert got == [b"v"] * 100
    assert len(flight) == 0
    assert flight.coalesced == 99


def test_failure_reaches_every_waiter_and_is_not_cached():
    flight, fn = SingleFlight(), Calls()
    waiters = [flight.do("k", fn) for _ in range(3)]
    errors = []
    for d in waiters:
        d.addErrback(lambda f: errors.append(f.value))
    boom = RuntimeError("boom")
    fn.started[0].errback(boom)
    assert errors == [boom, boom, boom]
    assert len(flight) == 0
    # The next call runs fn again rather than replaying the failure.
    retry = results([flight.do("k", fn)])
    assert len(fn.started) == 2
    fn.started[1].callback(b"ok")
    assert retry == [b"ok"]


def test_synchronous_exception_and_plain_value():
    flight = SingleFlight()
    errors = []
    flight.do("k", lambda: 1 / 0).addErrback(lambda f: errors.append(f.type))
    assert errors == [ZeroDivisionError]
    assert results([flight.do("k", lambda: 42)]) == [42]
    assert len(flight) == 0
    assert flight.coalesced == 0


def test_entry_removed_before_waiters_fire():
    flight, fn = SingleFlight(), Calls()
    seen = []

    def again(result):
        # Called while the first flight lands: it must start a second flight.
        seen.append((result, len(flight)))
        flight.do("k", fn)

    flight.do("k", fn).addCallback(again)
    fn.started[0].callback("first")
    assert seen == [("first", 0)]
    assert len(fn.started) == 2
    assert len(flight) == 1
    assert flight.coalesced == 0


def test_different_keys_run_separately():
    flight, fn = SingleFlight(), Calls()
    a = results([flight.do("a", fn), flight.do("a", fn)])
    b = results([flight.do("b", fn)])
    assert len(fn.started) == 2
    assert len(flight) == 2
    fn.started[1].callback("for b")
    assert (a, b) == ([], ["for b"])
    fn.started[0].callback("for a")
    assert a == ["for a", "for a"]
    assert flight.coalesced == 1


@pytest.mark.parametrize("callers", [1, 2, 7])
def test_coalesced_counts_joiners_across_flights(callers):
    flight, fn = SingleFlight(), Calls()
    for round_ in range(3):
        for _ in range(callers):
            flight.do("k", fn)
        fn.started[round_].callback(None)
    assert len(fn.started) == 3
    assert flight.coalesced == 3 * (callers - 1)


def test_deferred_firing_later_on_a_clock():
    clock = Clock()
    flight = SingleFlight()
    runs = []

    def slow():
        runs.append(clock.seconds())
        return deferLater(clock, 2.0, lambda: "loaded")

    first = results([flight.do("k", slow)])
    clock.advance(1.0)
    second = results([flight.do("k", slow)])
    clock.advance(0.999)
    assert (first, second) == ([], [])
    clock.advance(0.001)
    assert first == second == ["loaded"]
    assert runs == [0.0]
    # After landing, a new call runs again at the current time.
    flight.do("k", slow)
    assert runs == [0.0, 2.0]
