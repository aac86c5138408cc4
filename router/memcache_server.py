"""The memcached text-protocol front end: a thin Twisted wrapper over MemcacheParser.

Pipelined commands are answered in request order even though their node answers come
back in any order: each command takes a slot in a queue, and completed slots at the
head of the queue are written together, once per reactor turn.
"""

from __future__ import annotations

import os
from collections import deque

import mmh3
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from router import memcache_parser as mc
from router.errors import RingcacheError, TooLarge
from router.memcache_parser import EXPIRED, exptime_to_ttl

log = Logger()

VERSION = "ringcache-0.1.0"

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
        self.factory.connections += 1
        self.factory.total_connections += 1

    def connectionLost(self, reason):
        self.factory.connections -= 1
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.slots.clear()

    def dataReceived(self, data: bytes):
        parser = self.parser
        parser.receive_data(data)
        while not self._quitting and (event := parser.next_event()) is not None:
            self._dispatch(event)
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
        if self._flush_call is None and self.transport is not None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        slots = self.slots
        out = []
        while slots and slots[0].data is not None:
            out.append(slots.popleft().data)
        if out:
            self.transport.writeSequence(out)
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
        if kind is mc.Get:
            self._get(event)
        elif kind is mc.Store:
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
            if not event.noreply:
                self._answer(mc.server_error(event.message))

    def _get(self, event) -> None:
        router = self.router
        resolve = router.resolve
        with_cas = event.with_cas
        keys = event.keys
        if len(keys) == 1:
            key = keys[0]
            group, gkey = resolve(key)
            self._later(router.get(group, gkey), lambda item: self._hits(keys, (item,), with_cas))
            return
        d = router.get_many([resolve(k) for k in keys])
        d.addErrback(lambda f: f.value.subFailure)  # FirstError -> the first key's failure
        self._later(d, lambda items: self._hits(keys, items, with_cas))

    def _hits(self, keys, items, with_cas: bool) -> bytes:
        parts = []
        hits = 0
        for key, item in zip(keys, items):
            if item is not None:
                hits += 1
                cas = cas_token(item.value) if with_cas else None
                parts.append(mc.value_line(key, item.flags, item.value, cas))
        count = self.router.stats.count
        if hits:
            count("memcache", "get", "hit", hits)
        if hits < len(keys):
            count("memcache", "get", "miss", len(keys) - hits)
        parts.append(mc.END)
        return b"".join(parts)

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
        if ttl is EXPIRED:
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
