"""PythonSource on a fake reactor: where the function runs, what it may return, how it fails."""

from __future__ import annotations

import sys
from types import MappingProxyType

import pytest
from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from router.cluster.errors import SourceError
from router.config.topology import SourceSpec
from router.sources import DEFAULT_TIMEOUT, build_source
from router.sources.base import to_bytes
from router.sources.python import PythonSource
from tests.fakes import FakeReactor, SyncPool

HERE = __name__  # the functions below are the sources under test
PENDING: list[Deferred] = []


def plain(key):
    return f"plain:{key}"


def raw(key):
    return b"\x00\xff" + key.encode()


def nothing(key):
    return None


def number(key):
    return 42


def broken(key):
    raise KeyError(key)


async def coroutine(key):
    return f"async:{key}"


def returns_deferred(key) -> Deferred:
    return succeed(key.upper())


def returns_deferred_unquoted(key):
    return succeed(key.lower())


returns_deferred_unquoted.__annotations__["return"] = Deferred


@inlineCallbacks
def generator(key):
    value = yield succeed(key * 2)
    return value


def later(key) -> Deferred:
    d = Deferred()
    PENDING.append(d)
    return d


async def forever(key):
    await Deferred()


NOT_CALLABLE = "just a string"






@pytest.fixture
def reactor():
    return FakeReactor()


def source(reactor, function: str, timeout: float = 3.0) -> PythonSource:
    return PythonSource(f"{HERE}:{function}", reactor, "", timeout, make_pool=reactor.pool.make)


def load(src: PythonSource, key: str = "k"):
    out = []
    src.load(key).addBoth(out.append)
    return out


def test_plain_function_runs_in_the_thread_pool(reactor):
    src = source(reactor, "plain")
    assert load(src) == [b"plain:k"]
    assert reactor.pool.calls == ["plain"]


@pytest.mark.parametrize("function, value", [
    ("coroutine", b"async:k"),
    ("returns_deferred", b"K"),
    ("returns_deferred_unquoted", b"k"),
    ("generator", b"kk"),
])
def test_async_and_deferred_functions_run_in_the_reactor(reactor, function, value):
    assert load(source(reactor, function)) == [value]
    assert reactor.pool.calls == []


@pytest.mark.parametrize("function, value", [
    ("plain", b"plain:\xc3\xa9t\xc3\xa9"),  # str is sent as UTF-8
    ("raw", b"\x00\xff\xc3\xa9t\xc3\xa9"),  # bytes are kept
    ("nothing", None),                      # None is "not found"
])
def test_return_values(reactor, function, value):
    assert load(source(reactor, function), "été") == [value]


def test_deferred_firing_later(reactor):
    src = source(reactor, "later")
    got = load(src)
    assert got == []
    PENDING.pop().callback("done")
    assert got == [b"done"]


def test_wrong_return_type_is_a_source_error(reactor):
    [failure] = load(source(reactor, "number"))
    assert failure.check(SourceError)
    assert str(failure.value) == (f"source python:{HERE}:number failed: "
                                  "returned int, expected bytes, str or None")


def test_exception_is_a_source_error_naming_both(reactor):
    [failure] = load(source(reactor, "broken"))
    assert failure.check(SourceError)
    assert failure.value.source == f"python:{HERE}:broken"
    assert failure.value.reason == "KeyError: 'k'"


@pytest.mark.parametrize("function", ["plain", "forever", "later"])
def test_timeout(function):
    reactor = FakeReactor(SyncPool(hold=True))
    got = load(source(reactor, function, timeout=2.5))
    reactor.advance(2.499)
    assert got == []
    reactor.advance(0.001)
    [failure] = got
    assert failure.check(SourceError)
    assert str(failure.value) == f"source python:{HERE}:{function} failed: no answer within 2.5s"
    # A late answer changes nothing.
    reactor.pool.run_held()
    if function == "later":
        assert PENDING.pop().called  # cancelled by the timeout
    assert len(got) == 1


@pytest.mark.parametrize("target, problem", [
    ("no_such_module_here:load", "No module named 'no_such_module_here'"),
    (f"{HERE}:no_such_function", f"module '{HERE}' has no attribute 'no_such_function'"),
    (f"{HERE}:NOT_CALLABLE", f"{HERE}:NOT_CALLABLE is not callable"),
])
def test_import_problems_are_value_errors_naming_the_source(reactor, target, problem):
    with pytest.raises(ValueError) as info:
        PythonSource(target, reactor, "", 3.0, make_pool=reactor.pool.make)
    assert str(info.value) == f"source python:{target}: {problem}"


def test_base_dir_is_put_on_sys_path(reactor, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "ringcache_test_users.py").write_text("def lookup(key):\n    return key[::-1]\n")
    monkeypatch.delitem(sys.modules, "ringcache_test_users", raising=False)
    try:
        src = PythonSource("ringcache_test_users:lookup", reactor, str(tmp_path), 3.0,
                           make_pool=reactor.pool.make)
        assert sys.path[0] == str(tmp_path)
        assert load(src, "abc") == [b"cba"]
        PythonSource("ringcache_test_users:lookup", reactor, str(tmp_path), 3.0,
                     make_pool=reactor.pool.make)
        assert sys.path.count(str(tmp_path)) == 1
    finally:
        sys.modules.pop("ringcache_test_users", None)


def test_check_and_close(reactor):
    src = source(reactor, "plain")
    checked = []
    src.check().addBoth(checked.append)
    assert checked == [None]
    assert src.close() is None


# -- the source's own threads: as many as its group's concurrency --------------------------

def test_a_plain_function_gets_a_pool_of_its_own_sized_to_the_concurrency(reactor):
    src = PythonSource(f"{HERE}:plain", reactor, "", 3.0, concurrency=7,
                       make_pool=reactor.pool.make)
    assert reactor.pool.sizes == []  # no thread until the first load
    assert load(src) == [b"plain:k"] and load(src) == [b"plain:k"]
    assert (reactor.pool.sizes, reactor.pool.started, reactor.pool.calls) == (
        [7], 1, ["plain", "plain"])


def test_async_functions_need_no_pool(reactor):
    src = PythonSource(f"{HERE}:coroutine", reactor, "", 3.0, make_pool=reactor.pool.make)
    load(src)
    src.close()
    assert (reactor.pool.sizes, reactor.triggers) == ([], {})


def test_closing_stops_the_pool_once_its_running_calls_return():
    reactor = FakeReactor(SyncPool(hold=True))
    src = source(reactor, "plain")
    got = load(src)
    src.close()
    assert reactor.pool.stopped == 0  # a thread cannot be stopped: it runs to its end
    reactor.pool.run_held()
    assert (got, reactor.pool.stopped, reactor.triggers) == ([b"plain:k"], 1, {})
    # A load that waited under the old topology of a reload still runs, on a new pool.
    assert load(src) == []
    reactor.pool.run_held()
    assert (reactor.pool.started, reactor.pool.stopped) == (2, 2)


def test_the_reactor_shutting_down_stops_the_pool_for_good(reactor):
    src = source(reactor, "plain")
    load(src)
    reactor.fire("shutdown")
    assert reactor.pool.stopped == 1
    # A load that was waiting starts no thread that would keep the process alive.
    [failure] = load(src)
    assert str(failure.value) == (f"source python:{HERE}:plain failed: "
                                  "RuntimeError: the router is shutting down")
    src.close()
    assert (reactor.pool.started, reactor.pool.stopped) == (1, 1)


def test_build_source(reactor):
    spec = SourceSpec("python", f"{HERE}:plain", MappingProxyType({"timeout": 0.25}))
    src = build_source(spec, reactor, "")
    assert (type(src), src.name, src.timeout) == (PythonSource, f"python:{HERE}:plain", 0.25)
    assert src.threads.size == 16  # SourceSpec's default concurrency
    spec = SourceSpec("python", f"{HERE}:plain", MappingProxyType({}), concurrency=3)
    assert build_source(spec, reactor, "").threads.size == 3
    spec = SourceSpec("python", f"{HERE}:plain", MappingProxyType({}))
    assert build_source(spec, reactor, "").timeout == DEFAULT_TIMEOUT
    with pytest.raises(ValueError, match="source kind 'carrier-pigeon' is not supported"):
        build_source(SourceSpec("carrier-pigeon", "coop", MappingProxyType({})), reactor, "")


def test_to_bytes():
    assert to_bytes("s", bytearray(b"ab")) == b"ab"
    assert to_bytes("s", memoryview(b"cd")) == b"cd"
    with pytest.raises(SourceError, match="returned list, expected bytes, str or None"):
        to_bytes("s", [])
