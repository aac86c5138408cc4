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


# The router's counters and what each counts: RouterStats keeps them (but coalesced, the
# singleflight table's), /v1/stats shows them, /metrics exports them as ringcache_<name>,
# and router workers' are added up by these names (router/process/workers.py).
COUNTERS = {
    "hits": "Gets answered from a storage node",
    "misses": "Gets the owning node did not have",
    "loads": "Loads started from a source",
    "coalesced": "Misses that waited on another caller's load (singleflight)",
    "node_errors": "Requests whose node was unreachable",
    "failovers": "Gets answered by a replica or the source because a node was unreachable",
    "warmup_hits": "Misses after a ring change answered by the key's previous owner",
    "negative_hits": "Gets answered 'not found' from a cached negative entry",
    "replica_errors": "Writes that reached some replicas but not all",
}
_KEPT = [name for name in COUNTERS if name != "coalesced"]


def counters(router) -> dict[str, int]:
    """Every counter of COUNTERS, and ``inflight``: the loads running now."""
    stats = router.stats
    values = {name: getattr(stats, name) for name in _KEPT}
    values["coalesced"] = router.flight.coalesced
    values["inflight"] = len(router.flight)
    return values


class RouterStats:
    def __init__(self):
        # hits, misses, loads, ...: plain ints the read and write paths add to.
        for name in _KEPT:
            setattr(self, name, 0)
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
        values = counters(router)
        for name, doc in COUNTERS.items():
            yield CounterMetricFamily(f"ringcache_{name}", doc, value=values[name])
        for name, value, doc in (
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
