"""The memcached ``stats`` answers of a router: memcached's field names, with what a proxy
knows in them.

Counters of requests are the router's own (what its clients asked); counters of items and
memory are the nodes', summed over the nodes that answered (a node that did not is left
out, and ``nodes_up`` says how many did). ``stats items`` and ``stats slabs`` show one
slab class per group, numbered in topology order, since a group is what holds items of
one kind here; ``stats settings`` shows the limits the router enforces.
"""

from __future__ import annotations

import os
import resource

from twisted.internet.defer import succeed

# memcached's version, for clients that read one (libmemcached parses major.minor.patch);
# the commands of this version are what the router speaks. Then ringcache's own.
MEMCACHED_VERSION = "1.6.21"
RINGCACHE_VERSION = "0.1.0"
VERSION = f"{MEMCACHED_VERSION} ringcache-{RINGCACHE_VERSION}"

SUBCOMMANDS = ("items", "slabs", "settings")


def pairs(router, factory, args: tuple[bytes, ...], now: float):
    """A Deferred of the (name, value) pairs ``stats`` with ``args`` answers, or None for
    arguments the router does not know (memcached answers those ERROR)."""
    if len(args) > 1 or (args and args[0].decode("latin-1") not in SUBCOMMANDS):
        return None
    if args == (b"settings",):
        return succeed(settings(router, factory))

    def collect(nodes):
        if not args:
            return general(router, factory, nodes, now)
        return (items if args[0] == b"items" else slabs)(router, nodes)

    return router.node_stats().addCallback(collect)


def _requests(stats, ops, result=None) -> int:
    return sum(n for (protocol, op, outcome), n in stats.requests.items()
               if protocol == "memcache" and op in ops and (result is None or outcome == result))


def general(router, factory, nodes: dict, now: float) -> list[tuple[str, object]]:
    """``stats``: ``nodes`` maps node name -> NodeStats (or an error string)."""
    stats = router.stats
    live = [n for n in nodes.values() if not isinstance(n, str)]
    groups = [g for n in live for g in n.groups]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    count = stats.requests
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
        ("total_connections", factory.total_connections),
        ("cmd_get", _requests(stats, ("get", "gat"))),
        ("cmd_set", _requests(stats, ("set", "add", "replace", "append", "prepend", "cas"))),
        ("cmd_flush", _requests(stats, ("flush_all",))),
        ("cmd_touch", _requests(stats, ("touch", "gat"))),
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
        ("threads", 1),
        ("curr_items", sum(g.items for g in groups)),
        ("total_items", sum(g.sets for g in groups)),
        ("bytes", sum(n.bytes for n in live)),
        ("limit_maxbytes", sum(n.max_memory for n in live)),
        ("evictions", sum(g.evictions for g in groups)),
        ("expired_unfetched", 0),
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
    lines = []
    for number, _, found in _per_group(router, nodes):
        prefix = f"items:{number}:"
        lines += [(prefix + "number", sum(g.items for g in found)),
                  (prefix + "mem_requested", sum(g.bytes for g in found)),
                  (prefix + "evicted", sum(g.evictions for g in found)),
                  (prefix + "reclaimed", sum(g.expirations for g in found))]
    return lines


def slabs(router, nodes: dict) -> list[tuple[str, object]]:
    lines = []
    total = 0
    for number, _, found in _per_group(router, nodes):
        held = sum(g.bytes for g in found)
        total += sum(g.max_bytes for g in found)
        lines += [(f"{number}:used_chunks", sum(g.items for g in found)),
                  (f"{number}:mem_requested", held),
                  (f"{number}:total_pages", len(found)),
                  (f"{number}:get_hits", sum(g.hits for g in found)),
                  (f"{number}:cmd_set", sum(g.sets for g in found))]
    return lines + [("active_slabs", len(router.groups)), ("total_malloced", total)]


def settings(router, factory) -> list[tuple[str, object]]:
    limits = factory.limits
    return [
        ("maxbytes", 0),  # no one budget: each node has its own (stats: limit_maxbytes)
        ("maxconns", limits.max_connections),
        ("item_size_max", router.item_size_max),
        ("idle_timeout", int(limits.idle_timeout)),
        ("evictions", "on"),
        ("cas_enabled", "yes"),
        ("binding_protocol", "auto-negotiate"),
        ("num_threads", 1),
        ("flush_enabled", "yes"),
        ("meta_response_old", "no"),
    ]
