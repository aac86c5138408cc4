"""The `python: module:function` source: a user function called per missed key.

A plain function runs in the reactor's thread pool so a slow database call cannot stall
the router. An ``async def`` function, and a function annotated ``-> Deferred`` (or
decorated with inlineCallbacks), runs in the reactor thread, because Twisted APIs must
be called from there.
"""

from __future__ import annotations

import importlib
import inspect
import sys

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, maybeDeferred
from twisted.internet.threads import deferToThreadPool

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


class PythonSource:
    def __init__(self, target: str, reactor, base_dir: str, timeout: float):
        self.name = f"python:{target}"
        self.reactor = reactor
        self.timeout = timeout
        try:
            self.fn = import_callable(target, base_dir)
        except Exception as exc:
            raise ValueError(f"source {self.name}: {exc}") from None
        self._in_reactor = _runs_in_reactor(self.fn)

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
            finished = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.fn, key)
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
        return None
