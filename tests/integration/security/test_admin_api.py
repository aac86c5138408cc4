"""The admin API's token and reload rate against a real router and nodes: each attack of
issue 11 replayed, and the CLI sending the token from each of its places."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time

import pytest

from tests.helpers import RINGCACHE, ROOT
from tests.integration.cluster import GROUPS, Cluster

pytestmark = pytest.mark.integration

TOKEN = "integration-admin-token"


def secured_cluster(directory, reloads_per_minute: int, nodes: int = 3) -> Cluster:
    """A cluster whose topology names a token file and a reload rate (the blocks follow
    the groups in the document, which Cluster writes last)."""
    (directory / "admin.token").write_text(TOKEN + "\n")
    blocks = (f"security: {{token_file: admin.token}}\n"
              f"limits: {{reloads_per_minute: {reloads_per_minute}}}\n")
    return Cluster(directory, nodes=nodes, groups=GROUPS + blocks).start()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = secured_cluster(tmp_path_factory.mktemp("admin"), reloads_per_minute=1000)
    yield c
    c.stop()


def request(cluster, method: str, path: str, body: bytes = b"", token: str | None = None):
    """(status, headers, body) of one request on its own connection."""
    connection = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def config(cluster) -> dict:
    return json.loads(request(cluster, "GET", "/v1/stats")[2])["config"]


def test_two_hundred_reloads_without_the_token_are_all_401_and_none_is_applied(cluster):
    before = config(cluster)
    answers = [request(cluster, "POST", "/v1/reload") for _ in range(200)]
    assert {status for status, _, _ in answers} == {401}
    _, headers, body = answers[0]
    assert headers["WWW-Authenticate"] == 'Bearer realm="ringcache"'
    assert json.loads(body) == {"error": "this needs the admin token: send Authorization: "
                                         "Bearer TOKEN"}
    after = config(cluster)
    assert (after["reloads"], after["failures"]) == (before["reloads"], before["failures"])
    status, _, _ = request(cluster, "POST", "/v1/reload", token=TOKEN)
    assert status == 200
    assert config(cluster)["reloads"] == before["reloads"] + 1


def test_writes_need_the_token_and_reads_do_not(cluster):
    assert request(cluster, "PUT", "/v1/sessions/k", b"forged")[0] == 401
    assert request(cluster, "GET", "/v1/sessions/k")[0] == 404  # nothing was stored
    assert request(cluster, "PUT", "/v1/sessions/k", b"real", TOKEN)[0] == 204
    assert request(cluster, "DELETE", "/v1/sessions/k", token="guess")[0] == 401
    assert request(cluster, "GET", "/v1/sessions/k")[:3:2] == (200, b"real")
    assert request(cluster, "DELETE", "/v1/sessions/k", token=TOKEN)[0] == 204
    assert request(cluster, "GET", "/healthz")[0] == 200


# The documents of issue 11: they froze the router for 70 s and 16 s, or answered 500.
ALIAS_BOMB = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)])
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_RING = "vnodes: 1000000"


def hostile(cluster, kind: str) -> str:
    if kind == "alias bomb":
        return ALIAS_BOMB
    if kind == "deep nesting":
        return DEEP
    return cluster.topology_text(cluster.node_names, f"  {HUGE_RING}\n")


@pytest.mark.parametrize("kind, message", [
    ("alias bomb", "more than 100 aliases (*name); a topology needs none"),
    ("deep nesting", "nested deeper than 32 levels"),
    ("huge ring", "router.vnodes: 1000000 vnodes x the nodes' weights make 3000000 ring "
                  "points, over the limit of 1000000"),
])
def test_hostile_documents_are_400_within_a_second_and_the_router_serves_on(cluster, kind,
                                                                            message):
    document = hostile(cluster, kind)
    started = time.monotonic()
    status, _, body = request(cluster, "POST", "/v1/plan?name=evil.yaml", document.encode(),
                              TOKEN)
    assert time.monotonic() - started < 1.0
    assert status == 400
    assert message in json.loads(body)["error"]

    # The same document as the topology file, then POST /v1/reload.
    good = cluster.topology.read_text()
    digest = config(cluster)["digest"]
    try:
        cluster.topology.write_text(document)
        started = time.monotonic()
        status, _, body = request(cluster, "POST", "/v1/reload", token=TOKEN)
        assert time.monotonic() - started < 1.0
        assert status == 400
        reply = json.loads(body)
        assert reply["applied"] is False and message in reply["error"]
    finally:
        cluster.topology.write_text(good)
    assert config(cluster)["digest"] == digest
    assert request(cluster, "GET", "/v1/scores/still-serving")[2] == b"value-of-still-serving"
    assert cluster.memcache().get("scores:still") == b"value-of-still"


def test_a_burst_of_reloads_with_the_token_is_cut_at_the_rate_with_429(tmp_path):
    cluster = secured_cluster(tmp_path, reloads_per_minute=5, nodes=1)
    try:
        answers = [request(cluster, "POST", "/v1/reload", token=TOKEN) for _ in range(20)]
        codes = [status for status, _, _ in answers]
        # The bucket starts full (5) and refills at one per 12 s: a quick burst gets 5.
        assert codes == [200] * 5 + [429] * 15
        _, headers, body = answers[5]
        assert 1 <= int(headers["Retry-After"]) <= 12
        assert json.loads(body)["error"].startswith(
            "more than 5 reloads and plans a minute (limits.reloads_per_minute); retry in ")
        assert config(cluster)["reloads"] == 5
        assert request(cluster, "POST", "/v1/plan", cluster.topology.read_bytes(),
                       TOKEN)[0] == 429
    finally:
        cluster.stop()


def cli(cluster, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if k != "RINGCACHE_ADMIN_TOKEN"}
    return subprocess.run([*RINGCACHE, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=30, env={**environ, **(env or {})})


def test_the_cli_sends_the_token_from_each_of_its_places(cluster, tmp_path):
    router = ["--router", cluster.http_base]
    bare = cli(cluster, "reload", *router)
    assert bare.returncode == 1
    assert bare.stderr.strip() == (
        "ringcache reload: this needs the admin token: send Authorization: Bearer TOKEN "
        "(HTTP 401; pass --token-file, set RINGCACHE_ADMIN_TOKEN, or name "
        "security.token_file in -c FILE)")
    assert cli(cluster, "reload", "-c", str(cluster.topology)).returncode == 0
    assert cli(cluster, "reload", *router,
               "--token-file", str(cluster.dir / "admin.token")).returncode == 0
    assert cli(cluster, "reload", *router, env={"RINGCACHE_ADMIN_TOKEN": TOKEN}).returncode == 0
    assert cli(cluster, "set", "sessions", "cli", "v", "-c", str(cluster.topology)).returncode == 0
    assert cli(cluster, "delete", "sessions", "cli", *router).returncode == 1
    plan = cli(cluster, "plan", str(cluster.topology), "-c", str(cluster.topology), "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["moved"] == 0.0
    plan = cli(cluster, "plan", str(cluster.topology), "-c", str(cluster.topology))
    assert plan.stdout.startswith("0.0% of the keys would move (ring ")
    wrong = tmp_path / "wrong.token"
    wrong.write_text("nope\n")
    refused = cli(cluster, "reload", *router, "--token-file", str(wrong))
    assert refused.returncode == 1 and "wrong admin token (HTTP 401" in refused.stderr
    missing = cli(cluster, "reload", *router, "--token-file", str(tmp_path / "none"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"ringcache reload: cannot read the token file "
                                      f"{tmp_path}/none: No such file or directory")
