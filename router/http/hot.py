"""What GET /v1/hot, `ringcache hot` and the status page show: per group, the hottest keys
with their estimated rates, hottest first, and the group's near cache.

A router with workers (router/process/workers.py) asks each for its own view and adds
them up: a key's rate over the router is the sum of the rates each process saw, since
each process samples the gets it serves.
"""

from __future__ import annotations

TOP = 20  # keys per group, unless asked for (?top=N)
MAX_TOP = 200


def hot_document(router, top: int = TOP) -> dict:
    """This process's view: {"groups": {name: {keys, samples, window_seconds, near_cache}}}."""
    groups = {}
    now = router.reactor.seconds()
    for name, g in router.groups.items():
        near = g.near
        keys = [{"key": key.decode("utf-8", "replace"), "rate": round(rate, 3), "hot": hot,
                 "near": near is not None and near.holds(key, now)}
                for key, rate, hot in g.hot.top(top)]
        groups[name] = {
            "keys": keys,
            "samples": len(g.hot),
            "window_seconds": round(g.hot.span(), 3),
            "sampled_every": g.hot.every,
            "near_cache": None if near is None else {
                "max_bytes": near.max_bytes, "ttl": near.ttl, "bytes": near.nbytes,
                "keys": len(near), "hits": near.hits},
        }
    return {"groups": groups}


def merged(documents: list[dict], top: int = TOP) -> dict:
    """Several processes' hot_document as one: rates and counts summed per group and key."""
    groups: dict[str, dict] = {}
    for doc in documents:
        for name, view in doc["groups"].items():
            total = groups.setdefault(name, {"keys": {}, "samples": 0, "window_seconds": 0.0,
                                             "sampled_every": view["sampled_every"],
                                             "near_cache": None})
            total["samples"] += view["samples"]
            total["window_seconds"] = max(total["window_seconds"], view["window_seconds"])
            for entry in view["keys"]:
                mine = total["keys"].setdefault(entry["key"], {**entry, "rate": 0.0})
                mine["rate"] = round(mine["rate"] + entry["rate"], 3)
                mine["hot"] = mine["hot"] or entry["hot"]
                mine["near"] = mine["near"] or entry["near"]
            near = view["near_cache"]
            if near is not None:
                if total["near_cache"] is None:
                    total["near_cache"] = dict(near)
                else:
                    for field in ("max_bytes", "bytes", "keys", "hits"):
                        total["near_cache"][field] += near[field]
    for view in groups.values():
        ranked = sorted(view["keys"].values(), key=lambda e: (-e["rate"], e["key"]))
        view["keys"] = ranked[:top]
    return {"groups": groups}
