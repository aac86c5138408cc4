"""memcached's ``lru_crawler metadump``: every key the cluster serves, one line each, in
memcached's words, streamed (router/cluster/transfer.py walks the nodes):

    key=<key, %-encoded> exp=<unix time, -1: none> la=0 cas=<CAS unique> fetch=no cls=1 size=<n>

then ``END``. ``size`` is the bytes of the key and of the entry its node stores; a key of
another group than the default one is written GROUP:KEY, the memcached key that reads it.
``la`` (last access) is 0: nodes keep no access times; every key is listed under class 1
whatever the classes asked (``all``, ``hash`` or numbers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from router.cluster import transfer
from router.memcache.keys import client_key, uri_encoded
from shared import entry


async def metadump(router, write: Callable[[bytes], Awaitable]) -> bytes:
    """``await write(lines)`` for each batch of lines; answers the last line, END."""
    default = router.topology.router.default_group
    groups = transfer.groups_of(router, None)

    async def emit(entries, index):
        name = groups[index].name
        lines = []
        for key, stored, deadline, _ in entries:
            cas = entry.unpack_cas(stored)[2] if entry.present(stored) else 0
            exp = -1 if deadline is None else int(deadline)
            lines.append(b"key=%s exp=%d la=0 cas=%d fetch=no cls=1 size=%d\n" % (
                uri_encoded(client_key(name, key, default)), exp, cas,
                len(key) + len(stored)))
        await write(b"".join(lines))

    await transfer.dump(router, groups, emit)
    return b"END\r\n"
