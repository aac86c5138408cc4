"""Belady's OPT for bench/eviction.py: hits of a clairvoyant cache that always evicts what
is requested again furthest in the future (and so never admits an object that would be
that one). For objects of one size this is the optimum; with sizes the optimum is
NP-hard, so for sized traces two estimates are run and the better one counts:
Belady by next use over the byte budget, and Belady-Size (evict the largest
size x time-to-next-use among 64 sampled residents, as in the LRB paper's bound).
"""

from __future__ import annotations

import heapq
import random

NEVER = 1 << 62


def next_uses(keys: list[int]) -> list[int]:
    """For each request, the index of the next request of the same key (NEVER if none)."""
    following: dict[int, int] = {}
    out = [NEVER] * len(keys)
    for i in range(len(keys) - 1, -1, -1):
        key = keys[i]
        out[i] = following.get(key, NEVER)
        following[key] = i
    return out


def belady(keys: list[int], sizes: list[int] | None, capacity: int, nexts: list[int]) -> list[bool]:
    """Hit or miss per request; evicts the resident used furthest in the future."""
    resident: dict[int, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, key), stale entries skipped
    used = 0
    hits = [False] * len(keys)
    for i, key in enumerate(keys):
        nxt = nexts[i]
        size = 1 if sizes is None else sizes[key]
        if key in resident:
            hits[i] = True
        elif size > capacity or nxt == NEVER:
            continue  # never admitted: it would be the first to go
        else:
            while used + size > capacity:
                far, victim = heap[0]
                if resident.get(victim) != -far:
                    heapq.heappop(heap)
                    continue
                if -far <= nxt:
                    break  # everything resident is needed sooner than this object
                heapq.heappop(heap)
                del resident[victim]
                used -= 1 if sizes is None else sizes[victim]
            if used + size > capacity:
                continue
            used += size
        resident[key] = nxt
        if nxt == NEVER:
            del resident[key]
            used -= size
        else:
            heapq.heappush(heap, (-nxt, key))
        if len(heap) > 4 * len(resident) + 64:
            heap = [(-n, k) for k, n in resident.items()]
            heapq.heapify(heap)
    return hits


def belady_size(keys: list[int], sizes: list[int], capacity: int, nexts: list[int],
                samples: int = 64) -> list[bool]:
    """Hit or miss per request; evicts the largest size x distance to next use of a sample."""
    rng = random.Random(0)
    resident: dict[int, int] = {}  # key -> its next use
    slot: dict[int, int] = {}  # key -> its index in order, for O(1) removal
    order: list[int] = []
    used = 0
    hits = [False] * len(keys)
    for i, key in enumerate(keys):
        nxt, size = nexts[i], sizes[key]
        if key in resident:
            hits[i] = True
            resident[key] = nxt
            continue
        if size > capacity or nxt == NEVER:
            continue
        while used + size > capacity:
            picks = order if len(order) <= samples else rng.sample(order, samples)
            victim = max(picks, key=lambda k: (resident[k] - i) * sizes[k])
            if (resident[victim] - i) * sizes[victim] <= (nxt - i) * size:
                break  # the newcomer is the worst of them: do not admit it
            used -= sizes[victim]
            del resident[victim]
            last = order.pop()
            if last != victim:
                order[slot[victim]] = last
                slot[last] = slot[victim]
            del slot[victim]
        if used + size > capacity:
            continue
        resident[key] = nxt
        slot[key] = len(order)
        order.append(key)
        used += size
    return hits
