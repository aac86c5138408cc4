"""A topology kept in an etcd key: read, then watched; every new revision is a reload.

The loop reads the key, then watches it from the next revision. Each change is handed to
the router (``on_change`` -> Router.reload -> ``read()``, which parses the latest
revision), so a document from etcd goes through the same validation, plan and swap as a
file, and an invalid one is refused with the old ring serving. When etcd cannot be
reached the router keeps its ring, says so in ``status()`` and tries again with capped,
jittered backoff; the watch resumes from the revision after the last one seen, so no
revision is missed, and a compacted revision means a fresh read. While watching, a light
read every ``check_every`` seconds proves etcd is still there (a connection can die
without a word) and catches up if a change was ever missed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from router.config.etcd import Compacted, EtcdUnavailable, Event
from router.config.topology import Topology, TopologyError

log = Logger()

CHECK_EVERY = 5.0  # seconds between liveness reads while watching
FIRST_RETRY = 0.1  # seconds before the first retry; doubled up to MAX_RETRY
MAX_RETRY = 2.0  # so a router is back within ~2 s of etcd


class EtcdOrigin:
    kind = "etcd"

    def __init__(self, client, reader, clock, check_every: float = CHECK_EVERY,
                 first_retry: float = FIRST_RETRY, max_retry: float = MAX_RETRY,
                 random: Callable[[], float] = random.random):
        self.client = client  # router/config/etcd.py EtcdClient, or a fake in tests
        self.name = client.url.text
        self.key = client.url.key
        self.reader = reader
        self.clock = clock
        self.check_every = check_every
        self.first_retry, self.max_retry = first_retry, max_retry
        self._random = random
        self.state = "connecting"  # connecting | watching | unreachable | error | stopped
        self.since = clock.seconds()
        self.error: str | None = None  # why etcd is not being watched now
        self.retries = 0  # failed attempts since etcd last answered
        self.outages = 0
        self._latest: Event | None = None  # the newest revision of the key seen
        self._next: int | None = None  # where the watch resumes; None: read afresh first
        self._on_change: Callable[[], object] = lambda: None
        self._first = Deferred()  # fires once a document (not "no such key") is seen
        self._task: Deferred | None = None
        self._watching: Deferred | None = None
        self._interrupted: Exception | None = None

    # -- the origin interface (router/config/origin.py) -----------------------------------

    async def first(self) -> Topology:
        """Start, wait for the key to hold a document, and answer it parsed (TopologyError
        when it is invalid). Until then etcd's absence or the key's is only logged."""
        self.start()
        await self._first
        return self.read()

    def read(self) -> Topology:
        latest = self._latest
        if latest is None:
            raise TopologyError(f"{self.name}: nothing read from etcd yet")
        if latest.kv is None:
            raise TopologyError(f"{self.name}: the key is gone (revision {latest.revision}); "
                                "the old topology keeps serving until one is pushed")
        where = f"{self.name} (revision {latest.revision})"
        try:
            text = latest.kv.value.decode("utf-8")
            return self.reader.parse(text, self.name, revision=latest.revision)
        except UnicodeDecodeError:
            raise TopologyError(f"{where}: not UTF-8 text") from None
        except TopologyError as exc:
            message = str(exc)
            if message.startswith(self.name + ": "):
                message = message[len(self.name) + 2:]
            raise TopologyError(f"{where}: {message}") from None

    def watch(self, reactor, on_change: Callable[[], object]) -> None:
        """Call ``on_change()`` for every new revision from now on."""
        self._on_change = on_change
        self.start()

    def start(self) -> None:
        if self._task is None:
            self._task = Deferred.fromCoroutine(self._run())
            self._task.addErrback(lambda f: None if f.check(CancelledError) else
                                  log.failure("the etcd watch loop failed", f))

    def stop(self) -> None:
        self.state, self.since = "stopped", self.clock.seconds()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self.client.close()

    def status(self) -> dict:
        latest = self._latest
        return {"origin": "etcd", "etcd": {
            "state": self.state, "since": self.since, "error": self.error,
            "retries": self.retries, "outages": self.outages, "endpoint": self.client.where,
            "key": self.key, "latest_revision": latest.revision if latest else None}}

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while self.state != "stopped":
            try:
                if self._next is None:
                    kv, revision = await self.client.get(self.key)
                    self._answered()
                    self._next = revision + 1
                    self._seen([Event(kv, kv.mod_revision if kv else revision)])
                await self._watch()
                raise EtcdUnavailable(f"{self.client.where}: etcd ended the watch")
            except Compacted as exc:
                log.warn("etcd {key}: {why}; reading it afresh", key=self.key, why=exc)
                self._next = None
            except CancelledError:
                if self.state == "stopped":
                    return
                problem, self._interrupted = self._interrupted, None
                if problem is not None:  # the liveness read failed
                    self._failed(problem)
                    await self._pause()
            except Exception as exc:
                self._failed(exc)
                await self._pause()

    async def _watch(self) -> None:
        self._watching = Deferred.fromCoroutine(
            self.client.watch(self.key, self._next, self._events, self._answered))
        check = LoopingCall(lambda: Deferred.fromCoroutine(self._check()))
        check.clock = self.clock
        check.start(self.check_every, now=False)
        try:
            await self._watching
        finally:
            self._watching = None
            if check.running:
                check.stop()

    async def _check(self) -> None:
        """A light read: etcd still answers, and nothing newer than what we saw is there."""
        watching = self._watching
        try:
            kv, revision = await self.client.get(self.key, keys_only=True)
        except Exception as exc:
            if self._watching is watching:  # not a watch started since
                self._interrupt(exc)
            return
        if self._watching is not watching:
            return
        seen = self._latest
        current = kv.mod_revision if kv is not None else None
        if seen is None or (current is None) != (seen.kv is None) or (
                current is not None and current > seen.revision):
            log.warn("etcd {key}: revision {current} was not delivered by the watch; "
                     "reading it afresh", key=self.key, current=current)
            self._next = None
            self._interrupt(None)

    def _interrupt(self, problem: Exception | None) -> None:
        if self._watching is not None:
            self._interrupted = problem
            self._watching.cancel()

    def _events(self, events: list[Event]) -> None:
        self._next = max(self._next or 0, events[-1].revision + 1)
        self._seen(events)

    def _seen(self, events: list[Event]) -> None:
        """Only the newest of a batch matters: the router applies whole documents."""
        latest = events[-1]
        if self._latest is not None and latest.revision <= self._latest.revision:
            return
        self._latest = latest
        if not self._first.called:
            if latest.kv is None:
                log.warn("etcd {key} holds no topology yet; waiting for one "
                         "(ringcache topology push FILE {url})", key=self.key, url=self.name)
                return
            self._first.callback(None)
            return
        try:
            self._on_change()
        except Exception:  # the router records a refusal itself; anything else is a bug
            log.failure("applying etcd revision {revision} failed", revision=latest.revision)

    # -- etcd's health ------------------------------------------------------------------

    def _answered(self) -> None:
        if self.state in ("unreachable", "error"):
            log.info("etcd {where} answers again after {n} tries; watching {key}",
                     where=self.client.where, n=self.retries, key=self.key)
        if self.state != "watching":
            self.state, self.since = "watching", self.clock.seconds()
        self.error, self.retries = None, 0

    def _failed(self, exc: Exception) -> None:
        state = "unreachable" if isinstance(exc, EtcdUnavailable) else "error"
        if self.state not in ("unreachable", "error"):
            self.outages += 1
            log.warn("etcd: {error}; {serving}trying again", error=exc,
                     serving="serving the last topology and " if self._first.called else "")
        if self.state != state:
            self.state, self.since = state, self.clock.seconds()
        self.error = str(exc)
        self.retries += 1

    async def _pause(self) -> None:
        delay = min(self.max_retry, self.first_retry * 2 ** min(self.retries - 1, 16))
        await deferLater(self.clock, delay * (0.5 + self._random() / 2))
