"""The `python: module:function` source: a user function called per missed key.

A plain function runs in a thread pool of the source's own, as many threads as its
group's ``concurrency``, so a slow database call cannot stall the router and the group
really runs that many loads at once (the reactor's shared pool has 10 threads, and other
users). An ``async def`` function, and a function annotated ``-> Deferred`` (or decorated
with inlineCallbacks), runs in the reactor thread, because Twisted APIs must be called
from there.
"""

from __future__ import annotations

import importlib
import inspect
import sys

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, fail, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from router.cluster.errors import SourceError
from router.sources.base import detached, to_bytes


def _runs_in_reactor(fn) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    inner = inspect.unwrap(fn)
    if inspect.isgeneratorfunction(inner):  # @inlineCallbacks
        return True
    returns = inspect.signature(fn).return_annotation
    return returns is Deferred or (isinstance(returns, str) and returns.endswith("Deferred"))


def import_callable(target: str, base_dir: str):
    """``module:function`` imported with ``base_dir`` (the topology's directory) on sys.path."""
    module_name, _, attr = target.partition(":")
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{target} is not callable")
    return fn


def thread_pool(size: int, name: str) -> ThreadPool:
    """A pool of at most ``size`` threads, none until work comes."""
    return ThreadPool(minthreads=0, maxthreads=size, name=name)


class SourceThreads:
    """A source's own thread pool: started (in the reactor thread) when the first call
    comes, stopped when the source is closed and no call is running.

    A call cannot be stopped, so a closed source's calls run to their end and its pool
    stops after the last; a call that comes after the close (a load that waited under the
    old topology of a reload) starts a pool again, stopped again after it.
    """

    def __init__(self, reactor, size: int, name: str, make_pool=thread_pool):
        self.reactor = reactor
        self.size, self.name = size, name
        self._make_pool = make_pool
        self._pool = None
        self._running = 0
        self.closed = False
        self._shutdown = None
        self._shut_down = False  # the reactor has: no thread is started again

    def call(self, fn, *args) -> Deferred:
        if self._shut_down:
            return fail(RuntimeError("the router is shutting down"))
        if self._pool is None:
            self._pool = self._make_pool(self.size, self.name)
            self._pool.start()
            # The pool's threads would keep the process from exiting: stop them with it.
            self._shutdown = self.reactor.addSystemEventTrigger("during", "shutdown",
                                                                self._shutting_down)
        self._running += 1
        return deferToThreadPool(self.reactor, self._pool, fn, *args).addBoth(self._returned)

    def _returned(self, result):
        self._running -= 1
        if self.closed and not self._running:
            self._stop()
        return result

    def close(self) -> None:
        self.closed = True
        if not self._running:
            self._stop()

    def _shutting_down(self) -> None:
        self._shut_down = True
        self._shutdown = None  # fired: nothing to remove
        self._stop()

    def _stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._shutdown is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown)
            self._shutdown = None
        pool.stop()  # no call is running: its idle threads exit at once


class PythonSource:
    def __init__(self, target: str, reactor, base_dir: str, timeout: float,
                 concurrency: int = 16, make_pool=thread_pool):
        """``concurrency``: the group's, the threads a plain function gets; ``make_pool(size,
        name)``: a ThreadPool (tests pass one they run by hand)."""
        self.name = f"python:{target}"
        self.reactor = reactor
        self.timeout = timeout
        try:
            self.fn = import_callable(target, base_dir)
        except Exception as exc:
            raise ValueError(f"source {self.name}: {exc}") from None
        self._in_reactor = _runs_in_reactor(self.fn)
        self.threads = None if self._in_reactor else SourceThreads(
            reactor, concurrency, f"source {self.name}", make_pool)

    def load(self, key: str) -> Deferred:
        return self.start(key)[0]

    def start(self, key: str) -> tuple[Deferred, Deferred]:
        """The answer, and when the function has really returned: a thread cannot be
        stopped, so a plain function that times out keeps running (and its load keeps
        its slot, router/cluster/loads.py) until it returns. A coroutine or Deferred is cancelled."""
        if self._in_reactor:
            answer = finished = maybeDeferred(self.fn, key)
            answer.addCallback(self._awaited)
        else:
            finished = self.threads.call(self.fn, key)
            answer = detached(finished)
        answer.addTimeout(self.timeout, self.reactor)
        answer.addCallbacks(lambda value: to_bytes(self.name, value), self._failed)
        return answer, finished

    @staticmethod
    def _awaited(result):
        if inspect.isawaitable(result) and not isinstance(result, Deferred):
            return Deferred.fromCoroutine(result)
        return result

    def _failed(self, failure):
        if failure.check(SourceError):
            return failure
        if failure.check(DeferredTimeout):
            raise SourceError(self.name, f"no answer within {self.timeout:g}s")
        exc = failure.value
        raise SourceError(self.name, f"{type(exc).__name__}: {exc}")

    def check(self) -> Deferred:
        return maybeDeferred(lambda: None)

    def close(self) -> None:
        if self.threads is not None:
            self.threads.close()
