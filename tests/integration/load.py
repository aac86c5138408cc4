"""A steady multi-connection load through the router, judged request by request.

Each worker thread owns one pymemcache connection and loops over two kinds of request:
a get of a read-through key (the source's value is known: ``value-of-KEY``) and a
set-then-get of a key in a replicated plain-cache group (the value names the key).
Every request is filed under the phase that was current when it ended, with its
latency and one outcome: ok, error, or wrong (a value that is not this key's).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class PhaseStats:
    requests: int = 0
    errors: int = 0
    wrong: int = 0
    latencies: list = field(default_factory=list)
    # (seconds since the phase began, outcome) of each error, to see when errors stop
    error_times: list = field(default_factory=list)

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

    def row(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "wrong": self.wrong,
                "p99_ms": self.percentile(0.99) * 1000,
                "max_ms": max(self.latencies, default=0.0) * 1000}


class Load:
    def __init__(self, port: int, connections: int = 4, keys: int = 500,
                 read_group: str = "scores", write_group: str = "sessions",
                 client_timeout: float = 5.0):
        self.port = port
        self.connections = connections
        self.keys = keys
        self.read_group, self.write_group = read_group, write_group
        self.client_timeout = client_timeout
        self.phases: dict[str, PhaseStats] = defaultdict(PhaseStats)
        self.phase = "start"
        self.phase_started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def mark(self, phase: str) -> None:
        with self._lock:
            self.phase = phase
            self.phase_started = time.monotonic()

    def start(self) -> Load:
        for i in range(self.connections):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> dict[str, PhaseStats]:
        self._stop.set()
        for t in self._threads:
            t.join(self.client_timeout + 5)
        return dict(self.phases)

    def _run(self, worker: int) -> None:
        from pymemcache.client.base import Client

        rng = random.Random(worker)
        client = Client(("127.0.0.1", self.port), timeout=self.client_timeout,
                        connect_timeout=self.client_timeout)
        counter = 0
        while not self._stop.is_set():
            n = rng.randrange(self.keys)
            counter += 1
            if counter % 2:
                key = f"{self.read_group}:r{n}"
                expected = f"value-of-r{n}".encode()
                self._one(client, key, lambda: client.get(key),
                          lambda v: v == expected)
            else:
                key = f"{self.write_group}:w{worker}-{n}"
                value = f"{key}#{counter}".encode()

                def set_then_get(key=key, value=value):
                    client.set(key, value, noreply=False)
                    return client.get(key)

                # Anything but this key's own value (or a miss) is wrong.
                self._one(client, key, set_then_get,
                          lambda v, key=key: v is None or v.startswith(f"{key}#".encode()))
        client.close()

    def _one(self, client, key: str, call, is_right) -> None:
        started = time.monotonic()
        try:
            value = call()
            outcome = "ok" if is_right(value) else "wrong"
        except Exception:
            outcome = "error"
            client.close()  # pymemcache reconnects on the next call
        ended = time.monotonic()
        latency = ended - started
        # A request counts in the phase it ended in: a request that was on its way
        # when a node was killed failed because of the kill.
        with self._lock:
            phase, phase_started = self.phase, self.phase_started
            stats = self.phases[phase]
            stats.requests += 1
            stats.latencies.append(latency)
            if outcome == "error":
                stats.errors += 1
                stats.error_times.append(ended - phase_started)
            elif outcome == "wrong":
                stats.wrong += 1


def table(phases: dict[str, PhaseStats]) -> str:
    lines = [f"{'phase':<22} {'requests':>9} {'errors':>7} {'wrong':>6} {'p99 ms':>8} {'max ms':>8}"]
    for name, stats in phases.items():
        r = stats.row()
        lines.append(f"{name:<22} {r['requests']:>9} {r['errors']:>7} {r['wrong']:>6} "
                     f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}")
    return "\n".join(lines)
