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
from urllib.parse import quote_from_bytes

from router.cluster import transfer
from shared import entry


async def metadump(router, write: Callable[[bytes], Awaitable]) -> bytes:
    """``await write(lines)`` for each batch of lines; answers the last line, END."""
    default = router.topology.router.default_group
    groups = transfer.groups_of(router, None)

    async def emit(entries, index):
        name = groups[index].name
        prefix = b"" if name == default else name.encode() + b":"
        lines = []
        for key, stored, deadline, _ in entries:
            cas = entry.unpack_cas(stored)[2] if entry.present(stored) else 0
            exp = -1 if deadline is None else int(deadline)
            lines.append(b"key=%s exp=%d la=0 cas=%d fetch=no cls=1 size=%d\n" % (
                quote_from_bytes(prefix + key, safe="").encode(), exp, cas,
                len(key) + len(stored)))
        await write(b"".join(lines))

    await transfer.dump(router, groups, emit)
    return b"END\r\n"
