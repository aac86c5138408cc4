"""Router counters: plain integers on the hot path, exported to Prometheus at scrape time.

Incrementing an int attribute costs a few tens of nanoseconds; a prometheus_client
labelled counter takes a lock per call. So requests, hits and misses are counted in
plain Python and a custom collector reads them when /metrics is scraped; only the rare
events (source loads) and sampled latencies use real prometheus_client histograms.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)


class RouterStats:
    def __init__(self):
        self.hits = 0
        self.misses = 0
        self.loads = 0
        self.node_errors = 0
        self.failovers = 0
        self.warmup_hits = 0
        self.negative_hits = 0
        self.replica_errors = 0
        self.read_repairs = 0  # copies a read found missing and wrote back
        # (protocol, op, result) -> count, e.g. ("memcache", "get", "hit")
        self.requests: Counter = Counter()
        # (group, result) -> count; result is "ok", "not_found" or "error"
        self.load_results: Counter = Counter()
        self.registry = CollectorRegistry(auto_describe=True)
        self.source_latency = Histogram(
            "ringcache_source_latency_seconds", "Time to load one key from a group's source",
            ["group"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.node_latency = Histogram(
            "ringcache_node_latency_seconds",
            "Round trip of a sampled request frame to a storage node",
            ["node"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def count(self, protocol: str, op: str, result: str, n: int = 1) -> None:
        self.requests[(protocol, op, result)] += n

    def observe_load(self, group: str, seconds: float, failure, found: bool = True) -> None:
        result = "error" if failure is not None else ("ok" if found else "not_found")
        self.load_results[(group, result)] += 1
        self.source_latency.labels(group).observe(seconds)

    def attach(self, router) -> None:
        """Export this router's live counters through ``self.registry``."""
        self.registry.register(_RouterCollector(router))


class _RouterCollector:
    def __init__(self, router):
        self.router = router

    def describe(self):
        return []

    def collect(self):
        router, stats = self.router, self.router.stats
        requests = CounterMetricFamily("ringcache_requests", "Client requests by protocol, op and result",
                                       labels=["protocol", "op", "result"])
        for (protocol, op, result), n in sorted(stats.requests.items()):
            requests.add_metric([protocol, op, result], n)
        yield requests
        for name, value, doc in (
            ("ringcache_hits", stats.hits, "Gets answered from a storage node"),
            ("ringcache_misses", stats.misses, "Gets the owning node did not have"),
            ("ringcache_loads", stats.loads, "Loads started from a source"),
            ("ringcache_coalesced", router.flight.coalesced,
             "Misses that waited on another caller's load (singleflight)"),
            ("ringcache_node_errors", stats.node_errors, "Requests whose node was unreachable"),
            ("ringcache_failovers", stats.failovers,
             "Gets answered by a replica or the source because a node was unreachable"),
            ("ringcache_warmup_hits", stats.warmup_hits,
             "Misses after a ring change answered by the key's previous owner"),
            ("ringcache_negative_hits", stats.negative_hits,
             "Gets answered 'not found' from a cached negative entry"),
            ("ringcache_replica_errors", stats.replica_errors,
             "Writes that reached some replicas but not all"),
            ("ringcache_read_repairs", stats.read_repairs,
             "Copies of a replicated key a read found missing and wrote back"),
            ("ringcache_hints_noted", router.hints.noted,
             "Writes a copy missed, kept to replay when its node returns"),
            ("ringcache_hints_replayed", router.hints.replayed,
             "Hinted keys sent to a node that came back"),
            ("ringcache_hint_flushes", router.hints.flushes,
             "Groups flushed on a node that came back, its hints past their bound"),
            ("ringcache_reloads", router.reloads, "Topology reloads applied"),
            ("ringcache_reload_failures", router.reload_failures,
             "Topology reloads refused as invalid"),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        loads = CounterMetricFamily("ringcache_source_loads", "Source loads by group and result",
                                    labels=["group", "result"])
        for (group, result), n in sorted(stats.load_results.items()):
            loads.add_metric([group, result], n)
        yield loads
        inflight = GaugeMetricFamily("ringcache_singleflight_inflight", "Loads in progress")
        inflight.add_metric([], len(router.flight))
        yield inflight
        up = GaugeMetricFamily("ringcache_node_up", "1 if the router's connection to the node is up",
                               labels=["node"])
        sent = CounterMetricFamily("ringcache_node_requests", "Requests sent to each node",
                                   labels=["node"])
        timeouts = CounterMetricFamily("ringcache_node_timeouts", "Requests a node did not answer in time",
                                       labels=["node"])
        downs = CounterMetricFamily("ringcache_node_marked_down", "Times a node was marked down",
                                    labels=["node"])
        for name, client in sorted(router.clients.items()):
            up.add_metric([name], 1.0 if client.state == "up" else 0.0)
            sent.add_metric([name], client.requests)
            timeouts.add_metric([name], client.timeouts)
            downs.add_metric([name], client.marked_down)
        yield up
        yield sent
        yield timeouts
        yield downs
        age = GaugeMetricFamily("ringcache_config_age_seconds", "Seconds since the topology was loaded")
        age.add_metric([], router.config_status()["age_seconds"])
        yield age


# A node's snapshot figures (NodeStats.snapshot, storage_node/snapshot/) on /metrics:
# (metric, SnapshotStats field, help).
_SNAPSHOT_GAUGES = (
    ("ringcache_node_snapshot_last_timestamp_seconds", "last_at",
     "When the node's last snapshot was whole (wall clock)"),
    ("ringcache_node_snapshot_last_duration_seconds", "last_seconds",
     "How long the node's last snapshot took to write"),
    ("ringcache_node_snapshot_last_entries", "last_entries", "Entries in the node's last snapshot"),
    ("ringcache_node_snapshot_last_bytes", "last_bytes", "Bytes of the node's last snapshot"),
    ("ringcache_node_snapshot_restored_entries", "restored_entries",
     "Entries the node's start brought back from its snapshot"),
)


def node_metrics(nodes: dict) -> bytes:
    """Prometheus text for the nodes' snapshots, from Router.node_stats()'s answer (a
    node that did not answer, or has no data dir, has no samples)."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(nodes))
    return generate_latest(registry)


class _NodeCollector:
    def __init__(self, nodes: dict):
        self.nodes = nodes

    def collect(self):
        snapshots = {name: stats.snapshot for name, stats in sorted(self.nodes.items())
                     if not isinstance(stats, str) and stats.HasField("snapshot")}
        for metric, field, doc in _SNAPSHOT_GAUGES:
            family = GaugeMetricFamily(metric, doc, labels=["node"])
            for name, snapshot in snapshots.items():
                family.add_metric([name], float(getattr(snapshot, field)))
            yield family
        failures = CounterMetricFamily("ringcache_node_snapshot_failures",
                                       "Snapshots (or journal writes) of the node that failed",
                                       labels=["node"])
        for name, snapshot in snapshots.items():
            failures.add_metric([name], snapshot.failures)
        yield failures
