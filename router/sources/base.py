"""What a data source for read-through is, and what every kind of source shares.

A source has one job, ``load(key) -> Deferred[bytes | None]``: the value, or None for
"not found". Failures are errbacks carrying router.cluster.errors.SourceError. ``check()`` is a
start-up connectivity probe (its failure is a warning, never a refusal to start) and
``close()`` releases connections on reload or shutdown.

A load that times out is cancelled where the driver allows it (the Deferred's canceller
closes the HTTP connection, drops the Redis reply). Work that cannot be cancelled (a
function or a query running in a thread) may outlive its answer; such a source also has
``start(key) -> (answer, finished)``, ``finished`` firing when the thread has returned,
so that router/cluster/loads.py keeps the load's slot taken until then.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from router.cluster.errors import SourceError


class Source(Protocol):
    name: str

    def load(self, key: str) -> Deferred: ...

    def check(self) -> Deferred: ...

    def close(self) -> Deferred | None: ...


def start_load(source: Source, key: str) -> tuple[Deferred, Deferred]:
    """(answer, finished) of one load: ``finished`` fires when its work has ended."""
    start = getattr(source, "start", None)
    if start is not None:
        return start(key)
    d = source.load(key)
    return d, d


def detached(work: Deferred) -> Deferred:
    """A Deferred with ``work``'s outcome that may time out while ``work`` carries on (a
    thread cannot be stopped). ``work`` then fires with None, a late outcome dropped."""
    answer = Deferred()

    def settle(result):
        if not answer.called:  # else the answer timed out and nobody waits for this
            answer.callback(result)

    work.addBoth(settle)
    return answer


def to_bytes(source_name: str, value) -> bytes | None:
    """What a source returned, as the bytes to cache (None stays 'not found')."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise SourceError(source_name, f"returned {type(value).__name__}, expected bytes, str or None")
