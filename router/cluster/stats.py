"""Router counters: plain integers on the hot path, read by /metrics and /v1/stats.

Incrementing an int costs a few tens of nanoseconds; a prometheus_client labelled counter
takes a lock per call. So requests, hits, misses and request latencies are kept in plain
Python (Counters keyed by their labels, and LatencyHistogram below), and
router/http/metrics.py reads them when /metrics is scraped; only the rare events (source
loads) and sampled node round trips use real prometheus_client histograms.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

from prometheus_client import CollectorRegistry, Histogram

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """Observations by label values, bucketed as Prometheus does (``le``: at most), with
    no lock: one bisect and two additions per observation."""

    def __init__(self, bounds=LATENCY_BUCKETS):
        self.bounds = tuple(bounds)
        # labels -> [count per bucket (the last one: above every bound), sum of seconds]
        self.series: dict[tuple, list] = {}

    def observe(self, labels: tuple, seconds: float, n: int = 1) -> None:
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        entry[0][bisect_left(self.bounds, seconds)] += n
        entry[1] += seconds * n

    def cumulative(self, labels: tuple) -> tuple[list[tuple[str, int]], int, float]:
        """(le, count) buckets as Prometheus writes them, the count and the sum."""
        counts, total = self.series[labels]
        out, running = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), counts):
            running += n
            out.append((bound, running))
        return out, running, total

    def to_json(self) -> list:
        return [[list(labels), counts, total] for labels, (counts, total) in self.series.items()]

    def add_json(self, document: list) -> None:
        """Add another process's ``to_json`` (router workers)."""
        for labels, counts, total in document:
            entry = self.series.setdefault(tuple(labels), [[0] * len(counts), 0.0])
            entry[0] = [a + b for a, b in zip(entry[0], counts)]
            entry[1] += total


class RouterStats:
    def __init__(self):
        # Per group: gets its node answered (hits), gets it did not (misses: read through,
        # warmed up or answered "not found"), and source loads started.
        self.group_hits: Counter = Counter()
        self.group_misses: Counter = Counter()
        self.group_loads: Counter = Counter()
        # Per node: requests that found it unreachable.
        self.node_errors_by: Counter = Counter()
        self.failovers = 0
        self.warmup_hits = 0
        self.negative_hits = 0
        self.replica_errors = 0
        # (protocol, command, result) -> count, e.g. ("memcache", "get", "hit"); a get
        # answered by a load is a miss: the cache did not have it.
        self.requests: Counter = Counter()
        # (protocol, command) -> client request latency, read to answer
        self.latency = LatencyHistogram()
        # (group, result) -> count; result is "ok", "not_found" or "error"
        self.load_results: Counter = Counter()
        self.load_seconds: Counter = Counter()  # group -> seconds its loads took
        # node -> {"count", "seconds"} of the sampled round trips (node_latency's sums)
        self.node_round_trips: dict[str, dict] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.source_latency = Histogram(
            "ringcache_source_latency_seconds", "Time to load one key from a group's source",
            ["group"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.node_latency = Histogram(
            "ringcache_node_latency_seconds",
            "Round trip of a sampled request frame to a storage node",
            ["node"], buckets=LATENCY_BUCKETS, registry=self.registry)

    # Totals, for /v1/stats and memcached's stats.
    @property
    def hits(self) -> int:
        return sum(self.group_hits.values())

    @property
    def misses(self) -> int:
        return sum(self.group_misses.values())

    @property
    def loads(self) -> int:
        return sum(self.group_loads.values())

    @property
    def node_errors(self) -> int:
        return sum(self.node_errors_by.values())

    def count(self, protocol: str, command: str, result: str, n: int = 1) -> None:
        self.requests[(protocol, command, result)] += n

    def observe(self, protocol: str, command: str, seconds: float, n: int = 1) -> None:
        """``n`` client requests of ``command`` answered ``seconds`` after they were read."""
        self.latency.observe((protocol, command), seconds, n)

    def observe_load(self, group: str, seconds: float, failure, found: bool = True) -> None:
        result = "error" if failure is not None else ("ok" if found else "not_found")
        self.load_results[(group, result)] += 1
        self.load_seconds[group] += seconds
        self.source_latency.labels(group).observe(seconds)

    def node_observer(self, node: str):
        """What a node's client calls with each sampled round trip, in seconds."""
        histogram = self.node_latency.labels(node)
        trips = self.node_round_trips.setdefault(node, {"count": 0, "seconds": 0.0})

        def observe(seconds: float) -> None:
            histogram.observe(seconds)
            trips["count"] += 1
            trips["seconds"] += seconds

        return observe
