"""The live-topology scenario: reloads and node failures under a steady load.

Shared by tests/integration/test_live_topology.py (which asserts) and bench/chaos.py (which prints).
Phases, each under the load of tests/integration/load.py:
  steady           - three nodes, nothing happens
  add-node         - a fourth node starts and the topology is reloaded with it
  invalid-reload   - a broken topology is posted; the old ring must keep serving
  kill-9           - one node is SIGKILLed
  restart          - it is started again, empty, and must be taken back
  sigstop          - another node is SIGSTOPped (it hangs with its connections open)
  sigcont          - it is SIGCONTinued and must come back
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field

from tests.integration.cluster import Cluster
from tests.integration.load import Load

# `sessions` is a replicated plain cache (two copies); `scores` reads through a source.
GROUPS = """
groups:
  scores:
    source: {python: sources_for_tests:value}
  sessions:
    replicas: 2
"""


@dataclass
class ChaosReport:
    phases: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)


def wait_until(check, timeout: float, interval: float = 0.1) -> float:
    """Seconds until ``check()`` was true; raises TimeoutError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


def node_state(cluster: Cluster, name: str) -> str:
    ring = cluster.http_json("GET", "/v1/ring")
    return next(n["state"] for n in ring["nodes"] if n["name"] == name)


def run(directory, phase_seconds: float = 3.0, connections: int = 4,
        timeout: str = "300ms") -> ChaosReport:
    report = ChaosReport()
    cluster = Cluster(directory, nodes=3, timeout=timeout, groups=GROUPS).start()
    load = None
    try:
        load = Load(cluster.memcache_port, connections=connections).start()
        load.mark("steady")
        time.sleep(phase_seconds)

        # A fourth node joins.
        load.mark("add-node")
        cluster.add_node_name("node-3")
        cluster.start_node("node-3")
        before = cluster.http_json("GET", "/v1/ring")["digest"]
        cluster.write_topology([*cluster.node_names, "node-3"])
        reply = cluster.http_json("POST", "/v1/reload")
        report.facts["add_node_reply"] = reply
        report.facts["digest_changed"] = reply.get("digest") != before
        wait_until(lambda: node_state(cluster, "node-3") == "up", 10)
        time.sleep(phase_seconds)

        # A broken topology is refused; the ring keeps serving.
        load.mark("invalid-reload")
        digest = cluster.http_json("GET", "/v1/ring")["digest"]
        good = cluster.topology.read_text()
        cluster.topology.write_text(good.replace("default_group: scores",
                                                 "default_group: nosuchgroup"))
        status, body = cluster.http("POST", "/v1/reload")
        report.facts["invalid_reply"] = (status, json.loads(body))
        report.facts["digest_kept"] = cluster.http_json("GET", "/v1/ring")["digest"] == digest
        report.facts["stats_config"] = cluster.http_json("GET", "/v1/stats")["config"]
        time.sleep(phase_seconds)
        cluster.topology.write_text(good)
        cluster.http("POST", "/v1/reload")  # the good file again (a no-op reload)

        # kill -9: the connection drops at once.
        load.mark("kill-9")
        killed = "node-0"
        cluster.nodes[killed].kill()
        cluster.nodes[killed].wait()
        time.sleep(phase_seconds)

        # The killed node is started again (empty) and must be taken back.
        load.mark("restart")
        cluster.start_node(killed)
        report.facts["restarted_up_after"] = wait_until(
            lambda: node_state(cluster, killed) == "up", 15)
        time.sleep(phase_seconds)

        # SIGSTOP: the node hangs with its connection open.
        load.mark("sigstop")
        stopped = "node-1"
        os.kill(cluster.nodes[stopped].pid, signal.SIGSTOP)
        report.facts["stopped_marked_down_after"] = wait_until(
            lambda: node_state(cluster, stopped) != "up", 10)
        time.sleep(phase_seconds)

        # SIGCONT: it answers the next probe and is up again.
        load.mark("sigcont")
        os.kill(cluster.nodes[stopped].pid, signal.SIGCONT)
        report.facts["back_up_after"] = wait_until(
            lambda: node_state(cluster, stopped) == "up", 15)
        time.sleep(phase_seconds)
    finally:
        if load is not None:
            report.phases = load.stop()
        for proc in cluster.nodes.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        cluster.stop()
    return report
