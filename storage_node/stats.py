"""The node's STATS answer: node-wide counters, each group's, and the snapshots'."""

from __future__ import annotations

from dataclasses import dataclass

from shared import ringcache_pb2 as pb


@dataclass
class NodeCounters:
    """What the node counts beyond its groups: kept by the protocol and the dispatch."""

    started: float
    connections: int = 0  # open connections, kept by the protocol
    frames: int = 0
    requests: int = 0


def node_stats(node) -> pb.NodeStats:
    counters = node.counters
    now = node.clock()
    stats = pb.NodeStats(
        max_memory=node.max_memory,
        uptime=now - counters.started,
        connections=counters.connections,
        frames=counters.frames,
        requests=counters.requests,
        configured=node.configured,
    )
    for group in node.groups:
        core = group.core
        group.flush_due(now)
        stats.groups.add(
            name=group.spec.name,
            policy=group.spec.policy,
            items=len(core),
            bytes=core.nbytes,
            max_bytes=group.budget,  # what the core enforces, after any scaling
            hits=group.hits,
            misses=group.misses,
            evictions=getattr(core, "evictions", 0),
            expirations=getattr(core, "expirations", 0),
            sets=group.sets,
        )
        stats.bytes += core.nbytes
    if node.snapshot_stats is not None:
        stats.snapshot.CopyFrom(node.snapshot_stats)
    leases = node.leases
    stats.leases.CopyFrom(pb.LeaseStats(
        granted=leases.granted, parked=leases.parked, handed_on=leases.handed_on,
        lapsed=leases.lapsed, fills_dropped=leases.fills_dropped, voided=leases.voided,
        waiting=leases.waiting, refused=leases.refused))
    return stats
