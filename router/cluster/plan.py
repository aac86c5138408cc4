"""What a topology change moves: the ring a topology makes, and the plan from one ring to another.

One home for both, so that a router's reload, its dry run (POST /v1/plan) and
`ringcache topology push` build rings and count moves the same way.
"""

from __future__ import annotations

from router.cluster.ring import HashRing


def ring_for(topology) -> HashRing:
    """The ring ``topology`` places its nodes on (by name and weight, never address)."""
    return HashRing(((n.name, n.weight) for n in topology.nodes), vnodes=topology.router.vnodes)


def plan(ring: HashRing | None, topology) -> dict:
    """What going from ``ring`` (None: no ring yet) to ``topology``'s ring would move:
    the share of the key space per (old owner, new owner) pair, and each node's share."""
    new = ring_for(topology)
    if ring is None:
        return {"digest": None, "new_digest": new.digest, "moved": 1.0, "moves": [],
                "shares_before": {}, "shares_after": new.shares()}
    return {
        "digest": ring.digest,
        "new_digest": new.digest,
        "moved": ring.diff(new),
        "moves": [{"from": old, "to": to, "share": share}
                  for (old, to), share in sorted(ring.moves(new).items())],
        "shares_before": ring.shares(),
        "shares_after": new.shares(),
    }
