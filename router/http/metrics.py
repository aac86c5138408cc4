"""What /metrics and /v1/stats show: every series in one table, read at scrape time.

The router counts in plain Python (router/cluster/stats.py); this module turns the counts
into Prometheus families and the JSON of /v1/stats. To add a series, add one ``Series``
to ROUTER_SERIES (read from the router) or NODE_SERIES (read from the nodes' STATS
answers); the status page and the Grafana dashboard (deploy/grafana/) read the same names.
Counters are named without ``_total``: prometheus_client adds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # COUNTER or GAUGE
    help: str
    labels: tuple[str, ...]
    # source -> [(label values, value)]: the source is the Router (ROUTER_SERIES) or
    # {node name: NodeStats} of the nodes that answered (NODE_SERIES)
    read: Callable[[object], Iterable[tuple[tuple, float]]]


def _one(read):
    """A series without labels: one value."""
    return lambda source: [((), read(source))]


def _per_node(read):
    return lambda router: [((name,), read(client)) for name, client in sorted(router.clients.items())]


def _counted(attribute: str):
    """A Counter of RouterStats whose keys are the label values."""
    def read(router):
        counts = getattr(router.stats, attribute)
        return [((k,) if isinstance(k, str) else k, n) for k, n in sorted(counts.items())]
    return read


def _near(read):
    """A figure of each group's near cache, for the groups that have one."""
    return lambda router: [((name,), read(g.near)) for name, g in sorted(router.groups.items())
                           if g.near is not None]


HOT_KEYS_SHOWN = 10  # per group in ringcache_hot_key_rate

ROUTER_SERIES = (
    Series("ringcache_requests", COUNTER,
           "Client requests by protocol, command and result (a get answered by a load is a miss)",
           ("protocol", "command", "result"), _counted("requests")),
    Series("ringcache_group_hits", COUNTER, "Gets its node answered, per group", ("group",),
           _counted("group_hits")),
    Series("ringcache_group_misses", COUNTER,
           "Gets its node did not have (read through, warmed up or not found), per group",
           ("group",), _counted("group_misses")),
    Series("ringcache_group_loads", COUNTER, "Loads started from a group's source", ("group",),
           _counted("group_loads")),
    Series("ringcache_source_loads", COUNTER, "Source loads finished, by group and result",
           ("group", "result"), _counted("load_results")),
    Series("ringcache_lease_loads", COUNTER,
           "Loads (and refreshes) this router ran holding a node's lease, per group", ("group",),
           _counted("lease_loads")),
    Series("ringcache_lease_fills_dropped", COUNTER,
           "Fills a node refused because a write of the key came during the load, per group",
           ("group",), _counted("lease_fills_dropped")),
    Series("ringcache_stale_answers", COUNTER,
           "Answers past their ttl from a group's grace, by kind (revalidate: within "
           "stale_while_revalidate; if_error: the load failed within stale_if_error)",
           ("group", "kind"), _counted("stale_answers")),
    Series("ringcache_hits", COUNTER, "Gets answered from a storage node", (),
           _one(lambda r: r.stats.hits)),
    Series("ringcache_misses", COUNTER, "Gets the owning node did not have", (),
           _one(lambda r: r.stats.misses)),
    Series("ringcache_loads", COUNTER, "Loads started from a source", (),
           _one(lambda r: r.stats.loads)),
    Series("ringcache_coalesced", COUNTER,
           "Misses that waited on another caller's load (singleflight)", (),
           _one(lambda r: r.flight.coalesced)),
    Series("ringcache_failovers", COUNTER,
           "Gets answered by a replica or the source because a node was unreachable", (),
           _one(lambda r: r.stats.failovers)),
    Series("ringcache_warmup_hits", COUNTER,
           "Misses after a ring change answered by the key's previous owner", (),
           _one(lambda r: r.stats.warmup_hits)),
    Series("ringcache_negative_hits", COUNTER,
           "Gets answered 'not found' from a cached negative entry", (),
           _one(lambda r: r.stats.negative_hits)),
    Series("ringcache_replica_errors", COUNTER, "Writes that reached some replicas but not all",
           (), _one(lambda r: r.stats.replica_errors)),
    Series("ringcache_read_repairs", COUNTER,
           "Copies of a replicated key a read found missing and wrote back", (),
           _one(lambda r: r.stats.read_repairs)),
    Series("ringcache_hints_noted", COUNTER,
           "Writes a copy missed, kept to replay when its node returns (hinted handoff)", (),
           _one(lambda r: r.hints.noted)),
    Series("ringcache_hints_replayed", COUNTER, "Hinted keys sent to a node that came back", (),
           _one(lambda r: r.hints.replayed)),
    Series("ringcache_hint_flushes", COUNTER,
           "Groups flushed on a node that came back, its hints past their bound", (),
           _one(lambda r: r.hints.flushes)),
    Series("ringcache_hints_pending", GAUGE, "Hints kept for a node until it returns", ("node",),
           lambda r: [((name,), r.hints.pending(name)) for name in sorted(r.clients)]),
    Series("ringcache_reloads", COUNTER, "Topology reloads applied", (),
           _one(lambda r: r.reloads)),
    Series("ringcache_reload_failures", COUNTER, "Topology reloads refused as invalid", (),
           _one(lambda r: r.reload_failures)),
    Series("ringcache_singleflight_inflight", GAUGE, "Loads in progress", (),
           _one(lambda r: len(r.flight))),
    Series("ringcache_node_up", GAUGE, "1 if the router's connection to the node is up",
           ("node",), _per_node(lambda c: 1.0 if c.state == "up" else 0.0)),
    Series("ringcache_node_errors", COUNTER, "Requests that found the node unreachable",
           ("node",), lambda r: [((name,), r.stats.node_errors_by[name])
                                 for name in sorted(r.clients)]),
    Series("ringcache_node_requests", COUNTER, "Requests sent to each node", ("node",),
           _per_node(lambda c: c.requests)),
    Series("ringcache_node_timeouts", COUNTER, "Requests a node did not answer in time",
           ("node",), _per_node(lambda c: c.timeouts)),
    Series("ringcache_node_marked_down", COUNTER, "Times a node was marked down", ("node",),
           _per_node(lambda c: c.marked_down)),
    Series("ringcache_config_age_seconds", GAUGE, "Seconds since the topology was loaded", (),
           _one(lambda r: r.config_status()["age_seconds"])),
    Series("ringcache_near_cache_hits", COUNTER,
           "Gets answered from the router's near cache of hot keys, per group", ("group",),
           _near(lambda near: near.hits)),
    Series("ringcache_near_cache_bytes", GAUGE,
           "Bytes the near cache charges (keys, entries, overhead), per group", ("group",),
           _near(lambda near: near.nbytes)),
    Series("ringcache_near_cache_max_bytes", GAUGE,
           "The near cache's budget (near_cache.max_bytes; per router process)", ("group",),
           _near(lambda near: near.max_bytes)),
    Series("ringcache_near_cache_keys", GAUGE, "Keys in the near cache, per group", ("group",),
           _near(len)),
    Series("ringcache_hot_key_rate", GAUGE,
           "Estimated gets per second of each group's hottest keys (sampled)", ("group", "key"),
           lambda r: [((name, key.decode("utf-8", "replace")), rate)
                      for name, g in sorted(r.groups.items())
                      for key, rate, _ in g.hot.top(HOT_KEYS_SHOWN)]),
)


def _per_group(read):
    """A NodeStats figure per (group, node)."""
    return lambda nodes: [((g.name, name), read(g)) for name, stats in sorted(nodes.items())
                          for g in stats.groups]


def _snapshot(read):
    """A figure of each node's snapshots (NodeStats.snapshot), for the nodes with a data dir."""
    return lambda nodes: [((name,), read(s.snapshot)) for name, s in sorted(nodes.items())
                          if s.HasField("snapshot")]


def _leases(read):
    """A figure of each node's leases (NodeStats.leases)."""
    return lambda nodes: [((name,), read(s.leases)) for name, s in sorted(nodes.items())]


NODE_SERIES = (
    Series("ringcache_group_items", GAUGE, "Entries a group holds on a node", ("group", "node"),
           _per_group(lambda g: g.items)),
    Series("ringcache_group_bytes", GAUGE, "Bytes a group's entries are charged on a node",
           ("group", "node"), _per_group(lambda g: g.bytes)),
    Series("ringcache_group_max_bytes", GAUGE, "A group's budget on a node", ("group", "node"),
           _per_group(lambda g: g.max_bytes)),
    Series("ringcache_group_evictions", COUNTER, "Entries evicted to make room, per group and node",
           ("group", "node"), _per_group(lambda g: g.evictions)),
    Series("ringcache_group_expirations", COUNTER, "Entries dropped as expired, per group and node",
           ("group", "node"), _per_group(lambda g: g.expirations)),
    Series("ringcache_node_bytes", GAUGE, "Bytes a node's entries are charged", ("node",),
           lambda nodes: [((name,), s.bytes) for name, s in sorted(nodes.items())]),
    Series("ringcache_node_max_memory_bytes", GAUGE, "A node's memory budget (--max-memory)",
           ("node",), lambda nodes: [((name,), s.max_memory) for name, s in sorted(nodes.items())]),
    Series("ringcache_node_uptime_seconds", GAUGE, "Seconds since the node started", ("node",),
           lambda nodes: [((name,), s.uptime) for name, s in sorted(nodes.items())]),
    # A node's snapshots (storage_node/snapshot/, docs/snapshot.md), for a node with a data dir.
    Series("ringcache_node_snapshot_last_timestamp_seconds", GAUGE,
           "When the node's last snapshot was whole (wall clock)", ("node",),
           _snapshot(lambda s: s.last_at)),
    Series("ringcache_node_snapshot_last_duration_seconds", GAUGE,
           "How long the node's last snapshot took to write", ("node",),
           _snapshot(lambda s: s.last_seconds)),
    Series("ringcache_node_snapshot_last_entries", GAUGE, "Entries in the node's last snapshot",
           ("node",), _snapshot(lambda s: s.last_entries)),
    Series("ringcache_node_snapshot_last_bytes", GAUGE, "Bytes of the node's last snapshot",
           ("node",), _snapshot(lambda s: s.last_bytes)),
    Series("ringcache_node_snapshot_failures", COUNTER,
           "Snapshots (or journal writes) of the node that failed", ("node",),
           _snapshot(lambda s: s.failures)),
    Series("ringcache_node_snapshot_restored_entries", GAUGE,
           "Entries the node's start brought back from its snapshot", ("node",),
           _snapshot(lambda s: s.restored_entries)),
    Series("ringcache_node_leases_granted", COUNTER,
           "Leases a node gave out: loads (and refreshes) started", ("node",),
           _leases(lambda s: s.granted)),
    Series("ringcache_node_lease_readers_parked", COUNTER,
           "Readers that waited at a node for another router's fill", ("node",),
           _leases(lambda s: s.parked)),
    Series("ringcache_node_leases_handed_on", COUNTER,
           "Lapsed leases a node gave to a waiting reader, which loaded", ("node",),
           _leases(lambda s: s.handed_on)),
    Series("ringcache_node_leases_lapsed", COUNTER, "Leases that ran out of life unfilled",
           ("node",), _leases(lambda s: s.lapsed)),
    Series("ringcache_node_lease_fills_dropped", COUNTER,
           "Fills a node refused: a write, a flush or a lapse came first", ("node",),
           _leases(lambda s: s.fills_dropped)),
    Series("ringcache_node_leases_voided", COUNTER,
           "Leases a write or a flush of their key ended", ("node",),
           _leases(lambda s: s.voided)),
    Series("ringcache_node_lease_readers_waiting", GAUGE, "Readers waiting at a node now",
           ("node",), _leases(lambda s: s.waiting)),
    Series("ringcache_node_lease_readers_refused", COUNTER,
           "Readers a node refused past its bound on waiting readers", ("node",),
           _leases(lambda s: s.refused)),
)

REQUEST_LATENCY = "ringcache_request_duration_seconds"


def families(series: Iterable[Series], source) -> list:
    out = []
    for s in series:
        family = (CounterMetricFamily if s.kind == COUNTER else GaugeMetricFamily)(
            s.name, s.help, labels=s.labels)
        for labels, value in s.read(source):
            family.add_metric(list(labels), value)
        out.append(family)
    return out


def request_latency(histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        REQUEST_LATENCY, "Client requests, from the read of the command to its answer, "
                         "by protocol and command", labels=("protocol", "command"))
    for labels in sorted(histogram.series):
        buckets, _, total = histogram.cumulative(labels)
        family.add_metric(list(labels), buckets, total)
    return family


class RouterCollector:
    """The router's counters as Prometheus families, registered in RouterStats.registry."""

    def __init__(self, router):
        self.router = router

    def describe(self):
        return []

    def collect(self):
        yield from families(ROUTER_SERIES, self.router)
        yield request_latency(self.router.stats.latency)


def attach(router) -> None:
    """Export ``router``'s live counters through its stats registry (once per process)."""
    router.stats.registry.register(RouterCollector(router))


def exposition(collected: Iterable) -> bytes:
    """Families (prometheus_client Metric objects) in the Prometheus text format."""
    collected = list(collected)

    class Fixed:
        def collect(self):
            return collected

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return generate_latest(registry)


def scrape(router):
    """A Deferred of /metrics: this process's families (summed with its workers' when it
    has workers) and the nodes' figures, asked for now."""
    def render(nodes):
        answered = {name: s for name, s in nodes.items() if not isinstance(s, str)}
        node_families = families(NODE_SERIES, answered)
        if router.workers is None:
            return exposition([*router.stats.registry.collect(), *node_families])
        return router.workers.stats().addCallback(lambda workers: exposition(
            [*merged_families(router.stats.registry, workers), *node_families]))

    return router.node_stats().addCallback(render)


# -- /v1/stats ------------------------------------------------------------------------


def router_document(router) -> dict:
    """The ``router`` section of /v1/stats: numbers that add up over router workers
    (router/process/workers.py add_up), and this process's view of each node."""
    stats = router.stats
    groups = {}
    for name, g in router.groups.items():
        results = {result: n for (group, result), n in stats.load_results.items() if group == name}
        groups[name] = {
            "hits": stats.group_hits[name], "misses": stats.group_misses[name],
            "loads": stats.group_loads[name], "load_results": results,
            "load_seconds": stats.load_seconds[name],
            "lease_loads": stats.lease_loads[name],
            "lease_fills_dropped": stats.lease_fills_dropped[name],
            "stale_answers": {kind: n for (group, kind), n in stats.stale_answers.items()
                              if group == name},
            **({"near_cache": {"hits": g.near.hits, "bytes": g.near.nbytes, "keys": len(g.near),
                               "max_bytes": g.near.max_bytes}}
               if g.near is not None else {}),
        }
    latency = {}
    for (protocol, command), (counts, total) in sorted(stats.latency.series.items()):
        latency[f"{protocol}/{command}"] = {"count": sum(counts), "seconds": total}
    return {
        "hits": stats.hits,
        "misses": stats.misses,
        "loads": stats.loads,
        "coalesced": router.flight.coalesced,
        "inflight": len(router.flight),
        "node_errors": stats.node_errors,
        "failovers": stats.failovers,
        "warmup_hits": stats.warmup_hits,
        "negative_hits": stats.negative_hits,
        "replica_errors": stats.replica_errors,
        "read_repairs": stats.read_repairs,
        "hints_noted": router.hints.noted,
        "hints_replayed": router.hints.replayed,
        "hint_flushes": router.hints.flushes,
        "hints_pending": {name: router.hints.pending(name) for name in router.clients},
        "health": {name: {"state": c.state, "marked_down": c.marked_down,
                          "timeouts": c.timeouts, "errors": stats.node_errors_by[name],
                          "latency": dict(stats.node_round_trips.get(name, _NO_TRIPS)),
                          **({"down_reason": c.down_reason} if c.state != "up" else {})}
                   for name, c in router.clients.items()},
        "requests": {"/".join(labels): n for labels, n in sorted(stats.requests.items())},
        "latency": latency,
        "groups": groups,
        # Source loads per group against their bounds (router/cluster/loads.py).
        "source_loads": {name: {"running": g.loads.running, "waiting": g.loads.waiting,
                                "refused": g.loads.refused}
                         for name, g in router.groups.items() if g.loads is not None},
    }


_NO_TRIPS = {"count": 0, "seconds": 0.0}


# How one sample of several processes becomes one: summed, but for these.
_LOWEST = ("ringcache_node_up",)  # up only if every process reaches the node
_HIGHEST = ("ringcache_config_age_seconds",)


def merged_families(registry, workers: list[dict]) -> list:
    """/metrics over every process: ``registry`` (the control's) and each worker's samples
    (router/process/workers.py worker_stats), counters and histograms summed, as
    prometheus_client Metric families."""
    from prometheus_client.metrics_core import Metric

    families: dict[str, tuple[str, str, dict]] = {}

    def add(name, kind, doc, samples):
        family = families.setdefault(name, (kind, doc, {}))[2]
        for sample_name, labels, value in samples:
            key = (sample_name, tuple(sorted(labels.items())))
            if key not in family:
                family[key] = value
            elif sample_name.endswith("_created") or name in _LOWEST:
                family[key] = min(family[key], value)
            elif name in _HIGHEST:
                family[key] = max(family[key], value)
            else:
                family[key] += value

    for family in registry.collect():
        add(family.name, family.type, family.documentation,
            [(s.name, s.labels, s.value) for s in family.samples])
    for doc in workers:
        for name, kind, documentation, samples in doc["metrics"]:
            add(name, kind, documentation, samples)

    merged = []
    for name, (kind, doc, samples) in families.items():
        metric = Metric(name, doc, kind)
        for (sample_name, labels), value in samples.items():
            metric.add_sample(sample_name, dict(labels), value)
        merged.append(metric)
    return merged
