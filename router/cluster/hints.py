"""Hinted handoff: the keys a copy missed while it could not take writes, handed to it
when it comes back (as Dynamo and Cassandra do).

A write that one copy of a key did not take (its node was down, or did not answer in
time) while others did leaves a hint for that node: the key. When the node comes back,
before it serves again, it is sent a DELETE of every hinted key: it forgets what it may
hold in an older version, and the next read of such a key misses there and is repaired
from a copy that has it (router/cluster/reads.py). A node restarted from its snapshot
comes back the same way, so it never serves a value older than a write acknowledged
while it was away.

Hints are bounded: past ``limit`` keys for one node, the groups concerned are flushed on
that node instead when it returns, as every replicated group used to be. A node this
router never saw up may have missed writes from before the router started: its
replicated groups are flushed when it comes up (what this router cannot vouch for).
A flush of a whole group (memcached's flush_all) that a node missed is a hint too.
"""

from __future__ import annotations

from collections.abc import Callable

from shared import ringcache_pb2 as pb

# Keys kept per node before its hinted groups fall back to a flush: at about 100 bytes a
# hint, 10 MB per node that is away.
LIMIT = 100_000


class Hints:
    """The NodeClient returning hook (router/cluster/nodeclient.py): what a node that
    comes back is sent before it serves again."""

    def __init__(self, replicated_groups: Callable[[], list[str]], limit: int = LIMIT):
        self._replicated = replicated_groups
        self.limit = limit
        self._keys: dict[str, dict[tuple[str, bytes], None]] = {}  # node -> hinted keys
        self._flush: dict[str, set[str]] = {}  # node -> groups to flush
        self.noted = 0
        self.replayed = 0
        self.flushes = 0

    def note(self, node: str, group: str, key: bytes | None) -> None:
        """A write of (group, key) (key None: the whole group) that ``node`` missed."""
        self.noted += 1
        flush = self._flush.get(node)
        if key is None or (flush and group in flush):
            self._flush.setdefault(node, set()).add(group)
            return
        keys = self._keys.setdefault(node, {})
        keys[group, key] = None
        if len(keys) > self.limit:
            # Past the bound: every group with hints is flushed instead of replayed.
            self._flush.setdefault(node, set()).update(g for g, _ in keys)
            del self._keys[node]

    def pending(self, node: str) -> int:
        return len(self._keys.get(node, ())) + len(self._flush.get(node, ()))

    def on_return(self, node: str, seen_up: bool) -> list[tuple]:
        """The requests to send ``node`` as it comes back, taken off the hints:
        (op, group, key). ``seen_up`` is False for a node this router never saw up."""
        groups = self._flush.pop(node, set())
        if not seen_up:
            groups.update(self._replicated())
        keys = self._keys.pop(node, {})
        requests = [(pb.FLUSH_GROUP, group, b"") for group in sorted(groups)]
        requests += [(pb.DELETE, group, key) for group, key in keys if group not in groups]
        self.flushes += len(groups)
        self.replayed += len(requests) - len(groups)
        return requests

    def replay_failed(self, node: str, requests: list[tuple]) -> None:
        """The node went away again before it took ``requests``: they wait for its next
        return, with whatever was noted meanwhile."""
        for op, group, key in requests:
            self.note(node, group, None if op == pb.FLUSH_GROUP else key)
