"""How a core's entries leave it and come back in eviction order: the optional ``walk()`` /
``restore()`` pair of the core interface, and what the node does for a core without them.

``core.walk()`` returns a cursor over the core's live entries, coldest first (the order
the policy would evict them in); ``cursor.take(n)`` gives up to ``n`` more as tuples
``(key, value, ttl_left, rank)`` and ``[]`` once the walk is over. ``ttl_left`` is the
seconds the entry has left (None: no expiry); ``rank`` is the policy's own state of the
entry (the adaptive core's queue and count, the LFU core's frequency; 0 for LRU).

The cursor is made for a walk spread over many reactor turns while the core serves:
between two ``take`` calls the core may be read and written. Walking is not an access
(nothing moves, nothing is counted) and never changes the core. It yields every entry
that is live from the walk's start until the cursor reaches it, with its value as it is
then; an entry written after the start may or may not come, and a key may come twice
(the later one is its newer state); an expired entry never comes. ``clear()`` ends every
walk in progress. What a walk costs up front is the copy of the order (4 to 8 bytes an
entry: the built-in cores' docstrings say how long it takes).

``core.restore(key, value, ttl, rank)`` stores an entry as the hottest so far, in the
state ``rank`` says (``rank=None``: the entry came from another policy; the core places
it as it sees fit for an entry proven once). Restoring a walk's entries in its order into
an empty core of the same policy and budget rebuilds the order and states the walk saw;
into a smaller budget, restore evicts as set does, in the policy's order, so the hottest
entries are the ones that stay. Like set, it raises ValueError for an entry larger than
the whole budget, and replaces an entry already under the key.

A plugin core without ``walk`` is not snapshotted (its group restarts empty, and a
change of its policy or budget empties it, as the node logs); one without ``restore``
gets the entries through ``set(key, value, ttl)``, coldest first, which rebuilds the
order of any recency policy.
"""

from __future__ import annotations

# Entries per take() when a walk runs to its end in one go.
BATCH = 4096


def walker(core):
    """The core's cursor, or None for a core that cannot list its entries."""
    walk = getattr(core, "walk", None)
    return walk() if walk is not None else None


def restorer(core, same_policy: bool):
    """``put(key, value, ttl, rank)`` for entries coming into ``core``: its restore() (the
    rank only from a core of the same policy), else its set()."""
    restore = getattr(core, "restore", None)
    if restore is None:
        set_ = core.set
        return lambda key, value, ttl, rank: set_(key, value, ttl)
    if same_policy:
        return restore
    return lambda key, value, ttl, rank: restore(key, value, ttl, None)


def move_entries(old, new) -> int | None:
    """Every live entry of core ``old`` into core ``new``, coldest first; the number moved
    (some may have been evicted again to fit), or None if ``old`` cannot list them."""
    cursor = walker(old)
    if cursor is None:
        return None
    name = getattr(old, "name", "")
    put = restorer(new, bool(name) and name == getattr(new, "name", ""))
    moved = 0
    while batch := cursor.take(BATCH):
        for key, value, ttl, rank in batch:
            try:
                put(key, value, ttl, rank)
            except ValueError:  # larger than the new budget: not kept, like any set
                continue
            moved += 1
    return moved
