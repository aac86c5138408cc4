"""The compose cluster for real: the image built, four containers up, one node killed, one cut off.

Needs a Docker engine (deploy/build-image.sh installs and starts one when run as root) and
takes minutes, so it is not part of `make test`: `make test-deploy` runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from shared.units import parse_duration
from tests.helpers import ROOT, free_port

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
NODES = ("node-a", "node-b", "node-c")
ROUTER_TIMEOUT = parse_duration(
    yaml.safe_load((ROOT / "deploy" / "topology.yaml").read_text())["router"]["timeout"])
# What a request may take past the router's timeout: the router's own work, the
# published port's proxy, and a busy 2-core machine running four containers.
MARGIN = 0.5
GROUP = "sessions"  # no source: a key on a lost node fails fast instead of reading through
KEYS = 300

pytestmark = pytest.mark.timeout(900)  # a cold image build is most of it


def run(args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def compose_command() -> list[str]:
    """`docker compose` where the plugin exists, else Debian's docker-compose (installed if need be)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        if os.geteuid() != 0:
            pytest.fail("needs `docker compose` or docker-compose (Debian: apt-get install docker-compose)")
        run(["apt-get", "update", "-q"], timeout=300)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-compose"],
            timeout=300, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return ["docker-compose"]


class Deployment:
    """One compose project of deploy/compose.yaml under a unique name, on free host ports."""

    def __init__(self, secret_file: str):
        self.compose = compose_command() + ["-p", f"ringcache-test-{secrets.token_hex(4)}",
                                            "-f", str(COMPOSE_FILE)]
        self.memcache_port = free_port()
        self.http_port = free_port()
        self.env = {**os.environ, "RINGCACHE_MEMCACHE_PORT": str(self.memcache_port),
                    "RINGCACHE_HTTP_PORT": str(self.http_port),
                    "RINGCACHE_SECRET_FILE": secret_file}

    def __call__(self, *args: str, timeout: float = 120) -> str:
        return run(self.compose + list(args), timeout=timeout, env=self.env).stdout

    def container(self, service: str) -> str:
        return self("ps", "-q", service).strip()

    def http_json(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as reply:
            return json.load(reply)

    def memcache(self) -> Client:
        # Timeouts far above the router's, so a router that hangs shows as a slow request;
        # stores wait for STORED, so what follows sees them.
        return Client(("127.0.0.1", self.memcache_port), connect_timeout=5, timeout=5,
                      default_noreply=False)

    def wait_until_ready(self, deadline: float = 90) -> None:
        """Until the router answers and has every node up."""
        end = time.monotonic() + deadline
        while True:
            try:
                ring = self.http_json("/v1/ring")
                if all(node["healthy"] for node in ring["nodes"]):
                    return
            except OSError as exc:
                ring = exc
            if time.monotonic() > end:
                pytest.fail(f"cluster not ready after {deadline}s: {ring}\n{self('logs', '--no-color')}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    run(["bash", str(ROOT / "deploy" / "build-image.sh")], timeout=600,
        env={**os.environ, "PYTHON": sys.executable})
    # The nodes' shared secret, fresh per run; the containers' user (10001) must read it.
    secret_file = tmp_path_factory.mktemp("secret") / "secret"
    secret_file.write_text(secrets.token_urlsafe(32) + "\n")
    secret_file.chmod(0o644)
    secret_file.parent.chmod(0o755)
    dep = Deployment(str(secret_file))
    try:
        dep("up", "-d", timeout=300)
        dep.wait_until_ready()
        yield dep
    finally:
        # What the containers said, shown by pytest when a test failed.
        print(subprocess.run(dep.compose + ["logs", "--no-color"], env=dep.env,
                             capture_output=True, text=True).stdout[-20000:])
        dep("down", "-v", "--remove-orphans", "--timeout", "5")


def node_items(dep: Deployment) -> dict[str, int]:
    nodes = dep.http_json("/v1/stats")["nodes"]
    return {name: sum(g["items"] for g in nodes[name]["groups"] if g["name"] == GROUP)
            for name in NODES}


def owners(dep: Deployment, keys) -> dict[str, str]:
    """{memcached key: the node that owns it}."""
    return {key: dep.http_json(f"/v1/where/{GROUP}/{key.split(':', 1)[1]}")["node"] for key in keys}


def store(dep: Deployment, tag: str) -> dict[str, str]:
    """Set KEYS distinct values in GROUP; {memcached key: value}."""
    values = {f"{GROUP}:k-{tag}-{i}": f"value {tag} {i} {secrets.token_hex(8)}".encode()
              for i in range(KEYS)}
    assert dep.memcache().set_many(values) == []
    return values


def timed(call, *args):
    """(what call(*args) returned or the SERVER_ERROR it raised, seconds it took)."""
    start = time.monotonic()
    try:
        result = call(*args)
    except MemcacheServerError as exc:
        result = exc
    return result, time.monotonic() - start


def batches(keys: list[str], size: int = 50):
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def test_keys_spread_over_three_node_containers(deployment):
    before = node_items(deployment)
    values = store(deployment, "spread")
    after = node_items(deployment)
    gained = {name: after[name] - before[name] for name in NODES}
    assert sum(gained.values()) == KEYS
    assert all(n > KEYS / 10 for n in gained.values()), gained
    by_owner = owners(deployment, values)
    assert {name: list(by_owner.values()).count(name) for name in NODES} == gained
    client = deployment.memcache()
    for batch in batches(list(values)):  # each multi-get spans all three containers
        assert client.get_many(batch) == {k: values[k] for k in batch}


# Run inside the router's container: a peer on the cluster network that does not know the
# secret sends a valid frame to a node, as the attacker did.
STRANGER = """
import socket
from shared import ringcache_pb2 as pb
from shared.framing import encode_batch
with socket.create_connection(("node-a", 7001), timeout=10) as s:
    s.sendall(encode_batch(requests=[pb.Request(id=1, op=pb.SET, group="sessions",
                                                key=b"k", value=b"poison")]))
    received = b""
    try:
        while data := s.recv(65536):
            received += data
    except ConnectionResetError:
        pass
print(repr(received))
"""


def test_a_node_container_obeys_only_the_router_that_knows_the_secret(deployment):
    router = deployment.container("router")
    assert run(["docker", "exec", router, "python", "-c", STRANGER]).stdout == "b''\n"
    assert all(node["healthy"] for node in deployment.http_json("/v1/ring")["nodes"])


def test_a_node_container_restarted_keeps_its_cache(deployment):
    values = store(deployment, "restart")
    by_owner = owners(deployment, values)
    node_a = [k for k, owner in by_owner.items() if owner == "node-a"]
    assert node_a
    # docker restart: SIGTERM, the final snapshot into the node's volume, a new process.
    run(["docker", "restart", "--time", "60", deployment.container("node-a")], timeout=120)
    deployment.wait_until_ready()
    snapshot = deployment.http_json("/v1/stats")["nodes"]["node-a"]["snapshot"]
    assert snapshot["restored"] == "loaded" and int(snapshot["restored_entries"]) >= len(node_a)
    client = deployment.memcache()
    for batch in batches(node_a):
        assert client.get_many(batch) == {k: values[k] for k in batch}


def check_answers(dep: Deployment, values: dict[str, bytes], by_owner: dict[str, str],
                  alive: set[str], bound: float) -> None:
    """Keys on live nodes read back right, keys on lost nodes fail or miss, no key ever
    reads as anything else, and no request takes `bound` seconds or more."""
    client = dep.memcache()
    slowest = 0.0
    for key, value in values.items():
        got, took = timed(client.get, key)
        slowest = max(slowest, took)
        if by_owner[key] in alive:
            assert got == value, (key, by_owner[key], got)
        else:
            assert got is None or isinstance(got, MemcacheServerError), (key, by_owner[key], got)
    live_keys = [k for k in values if by_owner[k] in alive]
    for batch in batches(live_keys):
        got, took = timed(client.get_many, batch)
        slowest = max(slowest, took)
        assert got == {k: values[k] for k in batch}
    for batch in batches(list(values)):  # keys on lost nodes in every batch
        got, took = timed(client.get_many, batch)
        slowest = max(slowest, took)
        if not isinstance(got, MemcacheServerError):  # else the whole get failed: fine
            assert got == {k: values[k] for k in got}
            assert set(batch) & set(live_keys) <= set(got)
    print(f"slowest request with {sorted(alive)} alive: {slowest * 1000:.0f} ms")
    assert slowest < bound, slowest


def test_router_answers_through_a_killed_and_a_disconnected_node(deployment):
    values = store(deployment, "failures")
    by_owner = owners(deployment, values)
    assert set(by_owner.values()) == set(NODES)

    # node-b dies: the kernel closes its connection, so its keys fail at once, well
    # within the router's timeout (or miss, if Docker has restarted it empty).
    run(["docker", "kill", deployment.container("node-b")])
    check_answers(deployment, values, by_owner, alive={"node-a", "node-c"}, bound=ROUTER_TIMEOUT)

    # node-c is cut off the network while running: no reset, no answer; the router gives
    # up on each request at its timeout, and marks the node down after a few.
    node_c = deployment.container("node-c")
    networks = json.loads(run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                               node_c]).stdout)
    for network in networks:
        run(["docker", "network", "disconnect", network, node_c])
    check_answers(deployment, values, by_owner, alive={"node-a"}, bound=ROUTER_TIMEOUT + MARGIN)

    ring = {node["name"]: node for node in deployment.http_json("/v1/ring")["nodes"]}
    assert ring["node-a"]["healthy"]
    assert not ring["node-c"]["healthy"]
    with urllib.request.urlopen(f"http://127.0.0.1:{deployment.http_port}/healthz", timeout=5) as reply:
        assert reply.status == 200

