"""The memcached text-protocol front end: a thin Twisted wrapper over MemcacheParser.

Pipelined commands are answered in request order even though their node answers come
back in any order: each command takes a slot in a queue, and completed slots at the
head of the queue are written together, once per reactor turn, or at once when every
command the client sent has its answer.
"""

from __future__ import annotations

import os
from collections import deque

import mmh3
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from router import memcache_parser as mc
from router.errors import RingcacheError, TooLarge
from router.memcache_parser import EXPIRED, exptime_to_ttl
from shared.net import cancel_call, write_now

log = Logger()

VERSION = "ringcache-0.1.0"

# The ttl of an item stored already expired (memcached's negative exptime) where the
# store must stay conditional.
ALREADY_EXPIRED = 1e-6

# Answers queued but not yet written, per connection; past this a pipelining client is
# paused until the queue drains to half, so one client cannot fill the router's memory.
MAX_OUTSTANDING = 4096


class _Slot:
    """One command's place in the answer order; ``data`` is None until it is answered."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None):
        self.data = data


def cas_token(value: bytes) -> int:
    # The router keeps no versions: the token is a hash of the value, so it changes when
    # the value does. Stable, but `cas` itself is not offered (see _store).
    return mmh3.hash64(value, signed=False)[0] or 1


def _first_failure(failure):
    return failure.value.subFailure  # get_many's FirstError -> the first key's own failure


def _error_line(failure) -> bytes:
    exc = failure.value
    if isinstance(exc, TooLarge):
        return mc.server_error("object too large for cache")
    if isinstance(exc, RingcacheError):
        return mc.server_error(str(exc))
    log.failure("unexpected error answering a memcached command", failure)
    return mc.server_error("internal error")


class MemcacheProtocol(Protocol):
    def __init__(self, factory: MemcacheFactory):
        self.router = factory.router
        self.factory = factory
        self.reactor = factory.reactor
        self.parser = mc.MemcacheParser(item_size_max=factory.router.item_size_max)
        self.slots: deque[_Slot] = deque()
        self._flush_call = None
        self._paused = False
        self._quitting = False

    def connectionMade(self):
        if ITCPTransport.providedBy(self.transport):
            # Answers are whole and written once per turn: Nagle would only hold them
            # back until the client's delayed ACK, up to 40 ms.
            self.transport.setTcpNoDelay(True)
        self.factory.connections += 1
        self.factory.total_connections += 1

    def connectionLost(self, reason):
        self.factory.connections -= 1
        cancel_call(self._flush_call)
        self._flush_call = None
        self.slots.clear()

    def dataReceived(self, data: bytes):
        parser = self.parser
        parser.receive_data(data)
        get = mc.Get
        run = []  # consecutive gets, sent to the router as one multi-key read
        while not self._quitting and (event := parser.next_event()) is not None:
            if type(event) is get:
                run.append(event)
                continue
            if run:
                self._gets(run)
                run = []
            self._dispatch(event)
        if run:
            self._gets(run)
        self._flush()
        if len(self.slots) > MAX_OUTSTANDING and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    # -- answer ordering --------------------------------------------------------------

    def _answer(self, data: bytes) -> None:
        # Even an immediate answer queues: commands ahead of it may still be waiting,
        # and the flush at the end of the turn writes everything ready at once.
        self.slots.append(_Slot(data))

    def _pending(self) -> _Slot:
        slot = _Slot()
        self.slots.append(slot)
        return slot

    def _fill(self, data: bytes, slot: _Slot) -> None:
        slot.data = data
        slots = self.slots
        if slots and slots[-1].data is not None:
            # Every command sent so far is answered: waiting for the end of the turn
            # could batch nothing more (the common case of a client awaiting its answers).
            self._flush()
        elif self._flush_call is None and self.transport is not None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        cancel_call(self._flush_call)
        self._flush_call = None
        slots = self.slots
        out = []
        while slots and slots[0].data is not None:
            out.append(slots.popleft().data)
        if out:
            write_now(self.transport, out[0] if len(out) == 1 else b"".join(out))
        if self._paused and len(slots) <= MAX_OUTSTANDING // 2:
            self._paused = False
            self.transport.resumeProducing()
        if self._quitting and not slots:
            self.transport.loseConnection()

    def _later(self, d, on_result, noreply: bool = False) -> None:
        """Answer from Deferred ``d`` via ``on_result(result) -> bytes`` in this slot."""
        slot = self._pending()
        d.addCallbacks(on_result, _error_line)
        if noreply:
            d.addBoth(lambda _: b"")
        d.addCallback(self._fill, slot)

    # -- commands ---------------------------------------------------------------------

    def _dispatch(self, event) -> None:
        kind = type(event)
        if kind is mc.Store:
            self._store(event)
        elif kind is mc.Delete:
            self._delete(event)
        elif kind is mc.Touch:
            self._touch(event)
        elif kind is mc.Version:
            self._answer(mc.version_line(VERSION))
        elif kind is mc.Stats:
            self._answer(self._stats(event))
        elif kind is mc.Quit:
            self._quitting = True
        elif kind is mc.Unknown:
            self.router.stats.count("memcache", "unknown", "error")
            self._answer(mc.ERROR)
        elif kind is mc.ClientError:
            self.router.stats.count("memcache", "invalid", "error")
            if not event.noreply:
                self._answer(mc.client_error(event.message))
        elif kind is mc.ServerError:
            self.router.stats.count("memcache", "invalid", "error")
            line = mc.server_error(event.message)
            if event.key is None:
                if not event.noreply:
                    self._answer(line)
                return
            # A store refused as too large drops the old value first, as memcached does.
            d = self.router.delete(*self.router.resolve(event.key))
            d.addBoth(lambda _: line)
            self._later(d, bytes, event.noreply)

    # The hot path: one slot and one pair of callbacks per get, no closures.

    def _get(self, event) -> None:
        router = self.router
        keys = event.keys
        slot = _Slot()
        self.slots.append(slot)
        if len(keys) == 1:
            d = router.get(*router.resolve(keys[0]))
        else:
            resolve = router.resolve
            d = router.get_many([resolve(k) for k in keys])
            d.addErrback(_first_failure)
        d.addCallbacks(self._hits, self._failed, (keys, event.with_cas, slot), None, (slot,))

    def _gets(self, events: list) -> None:
        """Pipelined gets from one read: one router read for all their keys (one Deferred
        per node batch, not per key), each command still answered in its own slot."""
        if len(events) == 1:
            self._get(events[0])
            return
        slots = []
        for _ in events:
            slot = _Slot()
            self.slots.append(slot)
            slots.append(slot)
        resolve = self.router.resolve
        d = self.router.read_many([resolve(k) for event in events for k in event.keys])
        d.addCallbacks(self._run_answered, self._run_failed, (events, slots), None, (slots,))

    def _run_answered(self, results: list, events: list, slots: list) -> None:
        start = 0
        for event, slot in zip(events, slots):
            keys = event.keys
            items = results[start:start + len(keys)]
            start += len(keys)
            failure = next((r for r in items if isinstance(r, Failure)), None)
            if failure is not None:
                self._fill(_error_line(failure), slot)
            else:
                self._hits(items[0] if len(keys) == 1 else items, keys, event.with_cas, slot)

    def _run_failed(self, failure, slots: list) -> None:
        line = _error_line(failure)
        for slot in slots:
            self._fill(line, slot)

    def _hits(self, items, keys, with_cas: bool, slot: _Slot) -> None:
        """Fill ``slot`` with the answer to a get of ``keys``: ``items`` is one Item or None
        for a single key, else a list of them."""
        count = self.router.stats.count
        if len(keys) == 1:
            if items is None:
                count("memcache", "get", "miss")
                self._fill(mc.END, slot)
            else:
                count("memcache", "get", "hit")
                cas = cas_token(items.value) if with_cas else None
                self._fill(mc.value_line(keys[0], items.flags, items.value, cas) + mc.END, slot)
            return
        parts = []
        for key, item in zip(keys, items):
            if item is not None:
                cas = cas_token(item.value) if with_cas else None
                parts.append(mc.value_line(key, item.flags, item.value, cas))
        hits = len(parts)
        if hits:
            count("memcache", "get", "hit", hits)
        if hits < len(keys):
            count("memcache", "get", "miss", len(keys) - hits)
        parts.append(mc.END)
        self._fill(b"".join(parts), slot)

    def _failed(self, failure, slot: _Slot) -> None:
        self._fill(_error_line(failure), slot)

    def _store(self, event) -> None:
        router = self.router
        command = event.command
        if command not in ("set", "add", "replace"):
            self.router.stats.count("memcache", command, "error")
            if not event.noreply:
                self._answer(mc.server_error(f"{command} is not supported by ringcache"))
            return
        group, key = router.resolve(event.key)
        ttl = exptime_to_ttl(event.exptime, self.router.clock())
        if ttl is EXPIRED and command == "add":
            # add stays conditional: NOT_STORED if the key exists, else an item that is
            # gone at once (a microsecond is less than any round trip to read it back).
            d = router.add(group, key, event.value, ALREADY_EXPIRED, event.flags)
        elif ttl is EXPIRED:
            # memcached stores an already-expired item, i.e. the key reads as absent;
            # a replace of a missing key is still NOT_STORED.
            d = router.delete(group, key)
            if command != "replace":
                d.addCallback(lambda _: True)
        else:
            d = getattr(router, command)(group, key, event.value, ttl, event.flags)

        def stored(ok: bool) -> bytes:
            self.router.stats.count("memcache", command, "ok" if ok else "not_stored")
            return mc.STORED if ok else mc.NOT_STORED

        self._later(d, stored, event.noreply)

    def _delete(self, event) -> None:
        group, key = self.router.resolve(event.key)

        def deleted(found: bool) -> bytes:
            self.router.stats.count("memcache", "delete", "ok" if found else "miss")
            return mc.DELETED if found else mc.NOT_FOUND

        self._later(self.router.delete(group, key), deleted, event.noreply)

    def _touch(self, event) -> None:
        group, key = self.router.resolve(event.key)
        ttl = exptime_to_ttl(event.exptime, self.router.clock())
        if ttl is EXPIRED:
            d = self.router.delete(group, key)
        else:
            d = self.router.touch(group, key, ttl)

        def touched(found: bool) -> bytes:
            self.router.stats.count("memcache", "touch", "ok" if found else "miss")
            return mc.TOUCHED if found else mc.NOT_FOUND

        self._later(d, touched, event.noreply)

    def _stats(self, event) -> bytes:
        if event.args:
            return mc.END  # no sub-statistics (items, slabs, ...) in a proxy
        router, factory = self.router, self.factory
        stats = router.stats
        requests = stats.requests
        gets = sum(n for (p, op, _), n in requests.items() if p == "memcache" and op == "get")
        sets = sum(n for (p, op, _), n in requests.items()
                   if p == "memcache" and op in ("set", "add", "replace"))
        return mc.stat_lines([
            ("pid", os.getpid()),
            ("uptime", int(self.reactor.seconds() - factory.started)),
            ("time", int(router.clock())),
            ("version", VERSION),
            ("curr_connections", factory.connections),
            ("total_connections", factory.total_connections),
            ("cmd_get", gets),
            ("cmd_set", sets),
            ("get_hits", requests[("memcache", "get", "hit")]),
            ("get_misses", requests[("memcache", "get", "miss")]),
            ("loads", stats.loads),
            ("coalesced", router.flight.coalesced),
            ("node_errors", stats.node_errors),
            ("ring_digest", router.ring.digest),
            ("nodes", len(router.clients)),
            ("nodes_up", sum(c.state == "up" for c in router.clients.values())),
        ])


class MemcacheFactory(Factory):
    def __init__(self, router, reactor):
        self.router = router
        self.reactor = reactor
        self.connections = 0
        self.total_connections = 0
        self.started = reactor.seconds()

    def buildProtocol(self, addr):
        return MemcacheProtocol(self)
