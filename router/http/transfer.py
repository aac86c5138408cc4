"""The HTTP side of backup, restore and the key listing (router/cluster/transfer.py):

- ``GET /v1/backup[?group=G]``: a backup file (docs/snapshot.md), streamed as it is made;
  ``X-Ringcache-Entries`` estimates the entries (the nodes' counts) for a progress bar. A
  response cut short has no trailer, which restore refuses.
- ``POST /v1/restore[?group=G]``: a backup or snapshot file as the body; each entry goes
  to its owners on the current ring; answers a JSON summary.
- ``GET /v1/keys?group=G[&prefix=P][&limit=N]``: the group's keys, one a line, streamed;
  a byte that is not printable ASCII, a space or ``%`` is written as %XX.

Each streamed response writes a block, then waits until the client has taken it (the
request's producer), so a slow client holds the router to a block or two.
"""

from __future__ import annotations

import json
from urllib.parse import quote_from_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from router.cluster import transfer
from router.http.bounds import HTTPError

STREAMED = object()  # a handler's answer when it wrote the response itself
OCTETS = b"application/octet-stream"
_KEY_SAFE = bytes(range(0x21, 0x7F)).replace(b"%", b"").decode()


@implementer(IPushProducer)
class Pacer:
    """Told by the transport when the client falls behind; ``ready()`` waits until it
    caught up (or raises ConnectionDone once it left)."""

    def __init__(self, request):
        self._paused = False
        self._waiting: Deferred | None = None
        self.gone = False
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._wake()

    def stopProducing(self):
        self.gone = True
        self._wake()

    def _finished(self, _):
        self.gone = True
        self._wake()

    def _wake(self):
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def ready(self) -> None:
        while self._paused and not self.gone:
            self._waiting = Deferred()
            await self._waiting
        if self.gone:
            raise ConnectionAbortedError("the client went away")


def _arg(request, name: bytes) -> str | None:
    values = request.args.get(name)
    return values[-1].decode("utf-8", "replace") if values else None


async def backup(router, request, wall: float):
    groups = transfer.groups_of(router, _arg(request, b"group"))
    counts, blocks = [0] * len(groups), 0
    estimate = await _estimate(router, groups)
    request.setHeader(b"Content-Type", OCTETS)
    request.setHeader(b"X-Ringcache-Entries", b"%d" % estimate)
    pacer = Pacer(request)
    request.write(transfer.file_start(transfer.header_of(router, groups, wall)))

    async def emit(entries, index):
        nonlocal blocks
        await pacer.ready()
        request.write(transfer.entry_block(index, entries))
        counts[index] += len(entries)
        blocks += 1

    try:
        await transfer.dump(router, groups, emit)
        await pacer.ready()
        request.write(transfer.file_end(counts, blocks))
    except Exception:
        _cut(request, pacer)  # the client sees the stream break: its file has no trailer
        raise
    _end(request, pacer)
    return STREAMED


async def keys(router, request):
    group = _arg(request, b"group")
    if group is None:
        raise HTTPError(400, "name the group: /v1/keys?group=G")
    limit_text = _arg(request, b"limit")
    if limit_text is not None and not limit_text.isdigit():
        raise HTTPError(400, f"limit: expected a whole number, got {limit_text!r}")
    limit = int(limit_text) if limit_text is not None else None
    prefix = (_arg(request, b"prefix") or "").encode("utf-8", "surrogateescape")
    groups = transfer.groups_of(router, group)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    pacer = Pacer(request)
    written = 0

    class Enough(Exception):
        pass

    async def emit(entries, index):
        nonlocal written
        await pacer.ready()
        if limit is not None:
            entries = entries[:limit - written]
        written += len(entries)
        request.write(b"".join(quote_from_bytes(k, safe=_KEY_SAFE).encode() + b"\n"
                               for k, *_ in entries))
        if limit is not None and written >= limit:
            raise Enough()

    try:
        if limit != 0:
            await transfer.dump(router, groups, emit, prefix=prefix, keys_only=True)
    except Enough:
        pass
    except Exception:
        _cut(request, pacer)
        raise
    _end(request, pacer)
    return STREAMED


async def restore(router, request, wall: float):
    only = _arg(request, b"group")
    summary = await transfer.restore(router, request.content.read, only, wall)
    return json.dumps(summary.as_dict()).encode() + b"\n"


async def _estimate(router, groups) -> int:
    names = {g.name for g in groups}
    total = 0
    for stats in (await router.node_stats()).values():
        if not isinstance(stats, str):
            total += sum(g.items for g in stats.groups if g.name in names)
    return total


def _end(request, pacer: Pacer) -> None:
    request.unregisterProducer()
    if not pacer.gone:
        request.finish()


def _cut(request, pacer: Pacer) -> None:
    """Break a response begun: no final chunk, so the client knows it is short."""
    request.unregisterProducer()
    pacer.gone = True
    request.channel.transport.abortConnection()
