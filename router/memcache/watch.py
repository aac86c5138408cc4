"""memcached's ``watch``: a client connection that asks becomes a sink of log lines.

``watch [FLAG ...]`` (no flag: ``fetchers``) answers ``OK``; from then on the connection
is read no more and is sent one line per event it asked for, in memcached 1.6's words
(logger.c), until it closes:

    ts=SECONDS.MICROS gid=N type=item_get key=KEY status=found|not_found clsid=C cfd=FD size=B
    ts=SECONDS.MICROS gid=N type=item_store key=KEY status=stored|not_stored|exists|not_found cmd=CMD ttl=T clsid=C cfd=FD size=B

``fetchers`` logs each key of the text protocol's get, gets and gat commands, and the look
up a storage command makes first (memcached's store fetches the old item: here the router
asks the key's owner); ``mutations`` logs each text storage command's outcome. The key is
URI-encoded, ``clsid`` is the group's number in ``stats items`` (one class per group), and
``cfd`` the client's number in ``stats conns``. The other flags memcached takes (rawcmds,
evictions, sysevents, connevents, proxyreqs, proxyevents, proxyuser) are taken and log
nothing here; binary, meta and HTTP commands are not logged. Each router worker process
has its watchers, who see its own clients' commands. While no one watches, nothing here
runs; while someone watches fetchers, gets leave the data plane's one-call path for the
one that reads each key (as ``stats detail on`` does).

A watcher that does not read what it is sent costs at most MAX_BUFFERED bytes: past that
its lines are dropped and counted, and it is told ``skipped=N`` once it has drained.
"""

from __future__ import annotations

import time

from twisted.logger import Logger

from router.cluster.errors import RingcacheError
from router.memcache.keys import uri_encoded
from shared import ringcache_pb2 as pb

log = Logger()

FLAGS = frozenset(("rawcmds", "evictions", "fetchers", "mutations", "sysevents",
                   "connevents", "proxyreqs", "proxyevents", "proxyuser"))
MAX_BUFFERED = 1 << 20  # bytes a watcher may leave unread before its lines are dropped


class Watchers:
    """The watching connections of one memcached listener (MemcacheFactory.watchers)."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._watching: dict[object, frozenset[str]] = {}  # connection -> its flags
        self._skipped: dict[object, int] = {}
        self._gid = 0
        self.fetching = self.mutating = False  # whether any watcher wants them

    def add(self, connection, flags: frozenset[str]) -> None:
        self._watching[connection] = flags
        self._update()

    def remove(self, connection) -> None:
        if self._watching.pop(connection, None) is not None:
            self._skipped.pop(connection, None)
            self._update()

    def __len__(self) -> int:
        return len(self._watching)

    def item_get(self, key: bytes, found: bool, clsid: int, cfd: int, size: int) -> None:
        self._emit("fetchers", b"type=item_get key=%s status=%s clsid=%d cfd=%d size=%d\n" % (
            uri_encoded(key), b"found" if found else b"not_found", clsid, cfd, size))

    def item_store(self, key: bytes, outcome: str, command: str, ttl: int, clsid: int,
                   cfd: int, size: int) -> None:
        """``outcome``: a write's (router/cluster/writes.py), memcached's status words."""
        self._emit("mutations", b"type=item_store key=%s status=%s cmd=%s ttl=%d clsid=%d "
                                b"cfd=%d size=%d\n" % (uri_encoded(key), outcome.encode(),
                                                        command.encode(), ttl, clsid, cfd, size))

    def _update(self) -> None:
        flags = self._watching.values()
        self.fetching = any("fetchers" in f for f in flags)
        self.mutating = any("mutations" in f for f in flags)

    def _emit(self, flag: str, event: bytes) -> None:
        self._gid += 1
        now = self._clock()
        line = b"ts=%d.%d gid=%d " % (int(now), int(now % 1 * 1_000_000), self._gid) + event
        for connection, flags in list(self._watching.items()):  # a write may close one
            if flag not in flags:
                continue
            if connection.unsent() > MAX_BUFFERED:
                self._skipped[connection] = self._skipped.get(connection, 0) + 1
                continue
            skipped = self._skipped.pop(connection, 0)
            connection.send_log((b"skipped=%d\n" % skipped if skipped else b"") + line)


def class_of(router, key: bytes) -> int:
    """The "slab class" of a client key in stats and watch lines: its group's number."""
    group = router.resolve(key)[0]
    for number, name in enumerate(router.groups, 1):
        if name == group:
            return number
    return 0


def look_up(router, watchers: Watchers, key: bytes, number: int):
    """What memcached's store logs first, a fetch of the key: the router asks its owner
    (in this turn's frame, ahead of the store) and tells the watchers. A Deferred that
    fires once the line is sent (or the node did not answer: no line)."""
    group, name = router.resolve(key)
    d = router.clients[router.owner(group, name)].request(pb.GET, group, name)

    def answered(response) -> None:
        found = response.status == pb.OK
        watchers.item_get(key, found, class_of(router, key), number,
                          len(response.value) if found else 0)

    def failed(failure) -> None:
        if not failure.check(RingcacheError):
            log.failure("unexpected error telling watchers of a store's look up", failure)

    return d.addCallback(answered).addErrback(failed)


def log_store(router, watchers: Watchers, looked_up, event, outcome: str, number: int) -> None:
    """A text storage command's line, after its look up's (which the node answered first)."""
    def send(_=None) -> None:
        watchers.item_store(event.key, outcome, event.command, max(event.exptime, 0),
                            class_of(router, event.key), number, len(event.value))

    if looked_up is None:
        send()
    else:
        looked_up.addCallback(send)
