"""What the client commands print for people: the router's JSON documents as tables.

Every function takes the document the router answered (the same one `--json` prints)
and returns text ending in a newline.
"""

from __future__ import annotations

from shared.units import format_size

REASON_WIDTH = 48  # a down node's reason in the STATE column; --json has it whole


def table(rows: list[tuple], right: set[int] = frozenset()) -> list[str]:
    """Rows of cells as aligned lines; columns in ``right`` are right-aligned (numbers)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in cells]


def percent(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def ratio(hits: int, misses: int):
    return hits / (hits + misses) if hits + misses else None


def shorten(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def size(n) -> str:
    return "-" if n is None else format_size(int(n))


def ms(seconds, count) -> str:
    return f"{seconds / count * 1000:.2f}ms" if count else "-"


def stats(document: dict) -> str:
    router, config = document["router"], document.get("config", {})
    nodes = document.get("nodes", {})
    up = sum(1 for n in router.get("health", {}).values() if n.get("state") == "up")
    lines = [f"ring {config.get('digest', '?')}: {up} of {len(router.get('health', {}))} nodes up, "
             f"hit ratio {percent(ratio(router['hits'], router['misses']))} "
             f"({router['hits']} hits, {router['misses']} misses), {router['loads']} loads, "
             f"{router.get('node_errors', 0)} node errors"]
    if config.get("last_error"):
        lines.append(f"last reload refused: {shorten(config['last_error'], 200)}")
    held: dict[str, dict] = {}
    for node in nodes.values():
        for g in node.get("groups", []):
            t = held.setdefault(g["name"], {"items": 0, "bytes": 0, "max_bytes": 0, "evictions": 0})
            for key in t:
                t[key] += g.get(key, 0)
    rows = [("GROUP", "HIT RATIO", "HITS", "MISSES", "LOADS", "LOAD TIME", "ITEMS", "BYTES",
             "BUDGET", "EVICTIONS")]
    for name, g in router.get("groups", {}).items():
        h = held.get(name, {})
        finished = sum(g.get("load_results", {}).values())
        rows.append((name, percent(ratio(g["hits"], g["misses"])), g["hits"], g["misses"],
                     g["loads"], ms(g.get("load_seconds", 0), finished), h.get("items", "-"),
                     size(h.get("bytes")), size(h.get("max_bytes")), h.get("evictions", "-")))
    lines += ["", *table(rows, right=set(range(1, 10)))]
    rows = [("NODE", "STATE", "ITEMS", "BYTES", "MEMORY", "ERRORS", "TIMEOUTS", "ROUND TRIP")]
    for name, h in router.get("health", {}).items():
        node = nodes.get(name, {})
        trips = h.get("latency", {})
        state = h["state"] if h["state"] == "up" else f"{h['state']} ({shorten(h.get('down_reason') or node.get('error', ''), 32)})"
        rows.append((name, state, sum(g.get("items", 0) for g in node.get("groups", [])),
                     size(node.get("bytes")), size(node.get("max_memory")), h.get("errors", 0),
                     h.get("timeouts", 0), ms(trips.get("seconds", 0), trips.get("count", 0))))
    lines += ["", *table(rows, right={2, 3, 4, 5, 6, 7})]
    latency = router.get("latency", {})
    if latency:
        rows = [("REQUESTS", "COUNT", "MEAN")]
        rows += [(name.replace("/", " "), l["count"], ms(l["seconds"], l["count"]))
                 for name, l in latency.items()]
        lines += ["", *table(rows, right={1, 2})]
    workers = document.get("workers")
    if workers:
        lines += ["", f"workers: {sum(w['up'] for w in workers)} of {len(workers)} up, "
                      f"{sum(w.get('connections', 0) for w in workers)} client connections"]
    return "\n".join(lines) + "\n"


def ring(document: dict) -> str:
    """The ring: one line per node with its share and health."""
    rows = [("NAME", "ADDRESS", "WEIGHT", "SHARE", "STATE", "DOWNS", "TIMEOUTS")]
    for node in document["nodes"]:
        state = node["state"]
        if node.get("down_reason"):
            state += f" ({shorten(node['down_reason'])})"
        rows.append((node["name"], node["address"], f"{node['weight']:g}",
                     percent(node["share"]), state, node.get("marked_down", 0),
                     node.get("timeouts", 0)))
    lines = [f"ring {document['digest']}, {document['vnodes']} vnodes per unit of weight"]
    warmup = document.get("warmup") or {}
    if warmup.get("active"):
        lines.append(f"warming up from ring {warmup['previous_digest']}: "
                     f"{warmup['seconds_left']:.0f}s left")
    lines += table(rows, right={2, 3, 5, 6})
    workers = document.get("workers")
    if workers:
        up = sum(w["up"] for w in workers)
        lines.append(f"workers: {up} of {len(workers)} up")
        for w in workers:
            state = "up" if w["up"] else "down"
            same = "" if w["digest"] in (None, document["digest"]) else f", ring {w['digest']}"
            lines.append(f"  worker {w['index']}: pid {w['pid']}, {state}{same}")
    return "\n".join(lines) + "\n"


def hot(document: dict) -> str:
    """Per group, its hottest keys with their estimated rates, hottest first."""
    lines = []
    for name, view in document["groups"].items():
        near = view.get("near_cache")
        head = (f"group {name}: {view['samples']} samples (1 get in {view['sampled_every']}) "
                f"over {view['window_seconds']:.1f}s")
        if near is not None:
            head += (f"; near cache {size(near['bytes'])} of {size(near['max_bytes'])}, "
                     f"{near['keys']} keys, {near['hits']} hits")
        lines.append(head)
        if not view["keys"]:
            lines.append("  (no gets sampled yet)")
            continue
        rows = [("KEY", "GETS/S", "HOT", "NEAR")]
        rows += [(shorten(e["key"]), f"{e['rate']:.1f}", "yes" if e["hot"] else "-",
                  "yes" if e["near"] else "-") for e in view["keys"]]
        lines += ["  " + line for line in table(rows, right={1})]
    return "\n".join(lines) + "\n"


def plan(document: dict) -> str:
    lines = [f"{percent(document['moved'])} of the keys would move "
             f"(ring {document['digest']} -> {document['new_digest']})"]
    moves = document.get("moves", [])
    if moves:
        rows = [("FROM", "TO", "SHARE")] + [(m["from"], m["to"], percent(m["share"])) for m in moves]
        lines += ["", *table(rows, right={2})]
    before, after = document.get("shares_before", {}), document.get("shares_after", {})
    names = list(before) + [n for n in after if n not in before]
    if names:
        rows = [("NODE", "SHARE NOW", "SHARE AFTER")]
        rows += [(n, percent(before.get(n)), percent(after.get(n))) for n in names]
        lines += ["", *table(rows, right={1, 2})]
    return "\n".join(lines) + "\n"


def reload(document: dict) -> str:
    text = f"applied: ring {document['digest']}, {percent(document.get('moved', 0.0))} of the keys moved"
    for key, what in (("nodes_added", "added"), ("nodes_removed", "removed"),
                      ("nodes_changed", "changed")):
        if document.get(key):
            text += f"; {what} {', '.join(document[key])}"
    return text + "\n"


def where(document: dict) -> str:
    state = document.get("state")
    detail = ", ".join(str(x) for x in (document.get("address"), state) if x)
    return f"{document['group']}/{document['key']} is on {document['node']}" + (
        f" ({detail})" if detail else "") + "\n"
