"""The memcached ``stats`` answers of a router: memcached's field names, with what a proxy
knows in them.

Counters of requests are the router's own (what its clients asked); counters of items and
memory are the nodes', summed over the nodes that answered (a node that did not is left
out, and ``nodes_up`` says how many did). ``stats items``, ``stats slabs`` and ``stats cachedump`` show one
slab class per group, numbered in topology order, since a group is what holds items of
one kind here; ``stats settings`` shows the limits the router enforces; ``stats conns``
this listener's client connections; ``stats sizes`` is "disabled", as in memcached by
default. ``stats reset`` starts the router's request counters (and total_connections,
and router/memcache/detail.py's per-prefix counters) from zero for these answers only: /metrics keeps counting, and the nodes' counters of
items (evictions, total_items) are theirs and go on too.
"""

from __future__ import annotations

import os
import resource
from collections import Counter

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from router.cluster import transfer
from router.memcache.keys import client_key, uri_encoded
from shared import entry

# memcached's version, for clients that read one (libmemcached parses major.minor.patch);
# the commands of this version are what the router speaks. Then ringcache's own.
MEMCACHED_VERSION = "1.6.21"
RINGCACHE_VERSION = "0.1.0"
VERSION = f"{MEMCACHED_VERSION} ringcache-{RINGCACHE_VERSION}"

# What a subcommand answers from the router alone; items and slabs ask the nodes.
LOCAL = ("settings", "sizes", "conns")
SUBCOMMANDS = ("items", "slabs", *LOCAL)
# memcached's classes are numbered below this; past it cachedump says "Illegal slab id".
MAX_CLASSES = 64


def pairs(router, factory, args: tuple[bytes, ...], now: float):
    """A Deferred of the (name, value) pairs ``stats`` with ``args`` answers, or None for
    a subcommand the router does not know (memcached answers those ERROR). As memcached,
    only the first argument counts."""
    which = args[0].decode("latin-1") if args else ""
    if args and which not in SUBCOMMANDS:
        return None
    if which == "settings":
        return succeed(settings(router, factory))
    if which == "sizes":
        return succeed([("sizes_status", "disabled")])
    if which == "conns":
        return succeed(conns(factory, now))

    def collect(nodes):
        if not args:
            return general(router, factory, nodes, now)
        return (items if which == "items" else slabs)(router, nodes)

    return router.node_stats().addCallback(collect)


def reset(router, factory) -> None:
    """``stats reset``: the counters these answers show start from zero again."""
    factory.stats_base = Counter(router.stats.requests)
    factory.prefixes.clear()
    factory.connections_base = factory.total_connections


def _counts(router, factory) -> Counter:
    """The router's request counters since the last ``stats reset``."""
    base = getattr(factory, "stats_base", None)
    counts = router.stats.requests
    return counts if base is None else counts - base


def _requests(count: Counter, ops, result=None) -> int:
    return sum(n for (protocol, op, outcome), n in count.items()
               if protocol == "memcache" and op in ops and (result is None or outcome == result))


def general(router, factory, nodes: dict, now: float) -> list[tuple[str, object]]:
    """``stats``: ``nodes`` maps node name -> NodeStats (or an error string)."""
    stats = router.stats
    live = [n for n in nodes.values() if not isinstance(n, str)]
    groups = [g for n in live for g in n.groups]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    count = _counts(router, factory)
    return [
        ("pid", os.getpid()),
        ("uptime", int(now - factory.started)),
        ("time", int(router.clock())),
        ("version", MEMCACHED_VERSION),
        ("ringcache_version", RINGCACHE_VERSION),
        ("pointer_size", 64),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("max_connections", factory.limits.max_connections),
        ("curr_connections", factory.connections),
        ("rejected_connections", factory.bounds.refused),
        ("connection_structures", factory.connections),
        ("total_connections",
         factory.total_connections - getattr(factory, "connections_base", 0)),
        ("cmd_get", _requests(count, ("get", "gat"))),
        ("cmd_set", _requests(count, ("set", "add", "replace", "append", "prepend", "cas"))),
        ("cmd_flush", _requests(count, ("flush_all",))),
        ("cmd_touch", _requests(count, ("touch", "gat"))),
        ("get_hits", count[("memcache", "get", "hit")] + count[("memcache", "gat", "hit")]),
        ("get_misses", count[("memcache", "get", "miss")] + count[("memcache", "gat", "miss")]),
        ("delete_hits", count[("memcache", "delete", "ok")]),
        ("delete_misses", count[("memcache", "delete", "miss")]),
        ("incr_hits", count[("memcache", "incr", "ok")]),
        ("incr_misses", count[("memcache", "incr", "miss")]),
        ("decr_hits", count[("memcache", "decr", "ok")]),
        ("decr_misses", count[("memcache", "decr", "miss")]),
        ("cas_hits", count[("memcache", "cas", "ok")]),
        ("cas_misses", count[("memcache", "cas", "miss")]),
        ("cas_badval", count[("memcache", "cas", "exists")]),
        ("touch_hits", count[("memcache", "touch", "ok")]),
        ("touch_misses", count[("memcache", "touch", "miss")]),
        # What the router never does (no SASL, no listener pause, no allocator of its
        # own): memcached's fields for them, at 0.
        ("auth_cmds", 0),
        ("auth_errors", 0),
        ("accepting_conns", 1),
        ("listen_disabled_num", 0),
        ("conn_yields", 0),
        ("malloc_fails", 0),
        ("threads", 1),
        ("curr_items", sum(g.items for g in groups)),
        ("total_items", sum(g.sets for g in groups)),
        ("bytes", sum(n.bytes for n in live)),
        ("limit_maxbytes", sum(n.max_memory for n in live)),
        ("evictions", sum(g.evictions for g in groups)),
        ("expired_unfetched", 0),
        ("evicted_unfetched", 0),
        ("evicted_active", 0),
        ("reclaimed", sum(g.expirations for g in groups)),
        ("loads", stats.loads),
        ("coalesced", router.flight.coalesced),
        ("node_errors", stats.node_errors),
        ("ring_digest", router.ring.digest),
        ("nodes", len(router.clients)),
        ("nodes_up", len(live)),
    ]


def _per_group(router, nodes: dict) -> list[tuple[int, str, list]]:
    """(class number, group name, that group's GroupStats on every node that answered)."""
    out = []
    for number, name in enumerate(router.groups, 1):
        found = [g for n in nodes.values() if not isinstance(n, str)
                 for g in n.groups if g.name == name]
        out.append((number, name, found))
    return out


def items(router, nodes: dict) -> list[tuple[str, object]]:
    """memcached's fields per class that holds items; what a node does not keep (LRU
    segments, ages, crawler counts) is 0."""
    lines = []
    for number, _, found in _per_group(router, nodes):
        held = sum(g.items for g in found)
        if not held:
            continue
        prefix = f"items:{number}:"
        fields = {"number": held, "number_hot": 0, "number_warm": 0, "number_cold": held,
                  "age_hot": 0, "age_warm": 0, "age": 0,
                  "mem_requested": sum(g.bytes for g in found),
                  "evicted": sum(g.evictions for g in found), "evicted_nonzero": 0,
                  "evicted_time": 0, "outofmemory": 0, "tailrepairs": 0,
                  "reclaimed": sum(g.expirations for g in found), "expired_unfetched": 0,
                  "evicted_unfetched": 0, "evicted_active": 0, "crawler_reclaimed": 0,
                  "crawler_items_checked": 0, "lrutail_reflocked": 0, "moves_to_cold": 0,
                  "moves_to_warm": 0, "moves_within_lru": 0, "direct_reclaims": 0,
                  "hits_to_hot": 0, "hits_to_warm": 0,
                  "hits_to_cold": sum(g.hits for g in found), "hits_to_temp": 0}
        lines += [(prefix + name, value) for name, value in fields.items()]
    return lines


def slabs(router, nodes: dict) -> list[tuple[str, object]]:
    lines = []
    total = 0
    for number, _, found in _per_group(router, nodes):
        held = sum(g.items for g in found)
        total += sum(g.max_bytes for g in found)
        if not held:
            continue
        # A group takes items of every size up to item_size_max: one "chunk" each.
        lines += [(f"{number}:chunk_size", router.item_size_max),
                  (f"{number}:chunks_per_page", 1),
                  (f"{number}:used_chunks", held),
                  (f"{number}:free_chunks", 0),
                  (f"{number}:mem_requested", sum(g.bytes for g in found)),
                  (f"{number}:total_pages", len(found)),
                  (f"{number}:get_hits", sum(g.hits for g in found)),
                  (f"{number}:cmd_set", sum(g.sets for g in found))]
    return lines + [("active_slabs", len(router.groups)), ("total_malloced", total)]


def conns(factory, now: float) -> list[tuple[str, object]]:
    """One client connection of this listener per ``N:`` (its file descriptor), in their
    order, as memcached lists them."""
    lines = []
    for conn in sorted(factory.bounds.open, key=lambda c: c.number):
        transport, number = conn.transport, conn.number
        peer, host = transport.getPeer(), transport.getHost()
        lines += [(f"{number}:addr", f"tcp:{getattr(peer, 'host', '?')}:{getattr(peer, 'port', 0)}"),
                  (f"{number}:listen_addr",
                   f"tcp:{getattr(host, 'host', '?')}:{getattr(host, 'port', 0)}"),
                  (f"{number}:state", "conn_watch" if getattr(conn, "watching", False)
                   else "conn_nread" if conn.partial_since is not None else "conn_parse_cmd"),
                  (f"{number}:secs_since_last_cmd", int(now - conn.last_active))]
    return lines


def cachedump(router, number: int, limit: int, now: float) -> Deferred:
    """``stats cachedump CLASS LIMIT``: up to LIMIT (0: all) keys of the group numbered
    CLASS, as ``ITEM key [N b; T s]`` lines (N the value's bytes, T its unix expiry, 0
    for none), then END; a class the topology lacks lists none."""
    groups = transfer.groups_of(router, None)
    if not 1 <= number <= len(groups):
        return succeed(b"END\r\n")
    group = groups[number - 1]
    default = router.topology.router.default_group
    lines: list[bytes] = []

    class Enough(Exception):
        pass

    async def emit(entries, _):
        for key, stored, deadline, _rank in entries:
            if not entry.present(stored):
                continue
            value = entry.unpack(stored)[0]
            lines.append(b"ITEM %s [%d b; %d s]\r\n" % (
                uri_encoded(client_key(group.name, key, default)), len(value),
                0 if deadline is None else int(deadline)))
            if limit and len(lines) >= limit:
                raise Enough()

    async def walk():
        try:
            await transfer.dump(router, [group], emit)
        except Enough:
            pass
        return b"".join(lines) + b"END\r\n"

    return ensureDeferred(walk())


def settings(router, factory) -> list[tuple[str, object]]:
    limits = factory.limits
    return [
        ("maxbytes", 0),  # no one budget: each node has its own (stats: limit_maxbytes)
        ("maxconns", limits.max_connections),
        ("tcpport", 0),  # the router may listen on several (workers share one)
        ("udpport", 0),
        ("verbosity", 0),
        ("evictions", "on"),
        ("domain_socket", "NULL"),
        ("shutdown_command", "no"),
        ("num_threads", 1),
        ("stat_key_prefix", ":"),
        ("detail_enabled", "yes" if factory.prefixes.enabled else "no"),
        ("cas_enabled", "yes"),
        ("tcp_backlog", getattr(limits, "backlog", 1024)),
        ("binding_protocol", "auto-negotiate"),
        ("auth_enabled_sasl", "no"),
        ("auth_enabled_ascii", "no"),
        ("item_size_max", router.item_size_max),
        ("slab_reassign", "no"),
        ("slab_automove", 0),
        ("lru_crawler", "no"),
        ("idle_timeout", int(limits.idle_timeout)),
        ("flush_enabled", "yes"),
        ("dump_enabled", "yes"),
        ("meta_response_old", "no"),
    ]
