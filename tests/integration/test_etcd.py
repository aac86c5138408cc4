"""A fleet of routers on one topology in etcd, for real: Debian's etcd, router and node
processes, `ringcache topology push|get`, etcd killed and restarted under load."""

from __future__ import annotations

import os
import pty
import signal
import statistics
import subprocess
import threading
import time

import pytest

from tests.helpers import RINGCACHE, Process, free_port, wait_for
from tests.integration.fleet import Fleet, digest_of, gateway_put

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(etcd_server, tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("fleet"), etcd_server, routers=3, nodes=3).start()
    yield f
    f.stop()


def current_digest(fleet) -> str:
    digests = set(fleet.digests())
    assert len(digests) == 1, digests
    return digests.pop()


def test_three_routers_on_one_key_serve_the_same_digest(fleet):
    revision = fleet.etcd.revision(fleet.key)
    rings = [r.http_json("/v1/ring") for r in fleet.routers]
    assert {ring["digest"] for ring in rings} == {digest_of(fleet.document())}
    assert [ring["config"]["revision"] for ring in rings] == [revision] * 3
    assert {ring["config"]["origin"] for ring in rings} == {fleet.url}
    # Each on its own ports (--memcache, --http), paths resolving in --base-dir: the
    # python source imports from the test's directory.
    for router in fleet.routers:
        assert router.memcache().get("scores:k1") == b"value-of-k1"
    config = fleet.routers[0].http_json("/v1/stats")["config"]
    assert config["origin"] == "etcd" and config["etcd"]["state"] == "watching"


def test_topology_get_prints_the_document_and_its_revision(fleet):
    done = subprocess.run([*RINGCACHE, "topology", "get", fleet.url], capture_output=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.decode() == fleet.etcd.ctl(
        "get", fleet.key, "--print-value-only").rstrip("\n") + "\n"
    import json

    done = subprocess.run([*RINGCACHE, "topology", "get", fleet.url, "--json"],
                          capture_output=True, text=True, timeout=60)
    doc = json.loads(done.stdout)
    assert doc["revision"] == fleet.etcd.revision(fleet.key)
    assert doc["digest"] == current_digest(fleet) and doc["error"] is None


def test_a_push_shows_the_plan_and_reaches_every_router(fleet):
    before = current_digest(fleet)
    bigger = fleet.document(vnodes=100)
    path = fleet.write("bigger.yaml", bigger)
    done = fleet.push(path, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"ring digest {before} (revision " in done.stdout and "keys moved: " in done.stdout
    assert "node-0 -> node-1" in done.stdout or "node-0 -> node-2" in done.stdout
    assert fleet.wait_for_digest(digest_of(bigger), timeout=5) is not None
    again = fleet.push(path, "--yes")  # the same document: nothing to write
    assert again.returncode == 0 and "nothing to push" in again.stdout


def test_pushes_reach_all_three_within_a_second(fleet):
    """20 writes of alternating documents; for each, the time until all three routers
    serve its digest, from just before the write."""
    documents = [fleet.document(vnodes=v) for v in (120, 140)]
    latencies = []
    for i in range(20):
        document = documents[i % 2]
        started = time.monotonic()
        gateway_put(fleet.etcd, fleet.key, document)
        arrived = fleet.wait_for_digest(digest_of(document), timeout=10)
        assert arrived is not None, f"push {i} never reached every router"
        latencies.append(time.monotonic() - started)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(f"\npush -> 3 routers, 20 pushes: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})")
    assert p99 <= 2.0
    assert p50 <= 1.0


def test_an_invalid_document_is_refused_by_the_cli_and_by_every_router(fleet):
    digest = current_digest(fleet)
    revision = fleet.etcd.revision(fleet.key)
    bad = fleet.document(default_group="nosuchgroup")
    path = fleet.write("bad.yaml", bad)
    done = fleet.push(path, "--yes")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "router.default_group" in done.stderr and "nosuchgroup" in done.stderr
    assert fleet.etcd.revision(fleet.key) == revision  # nothing written

    fleet.etcd.put(fleet.key, bad)  # by other means
    bad_revision = fleet.etcd.revision(fleet.key)

    def refused_everywhere():
        configs = [r.http_json("/v1/stats")["config"] for r in fleet.routers]
        return configs if all(c["last_error"] and f"(revision {bad_revision})" in c["last_error"]
                              for c in configs) else None

    configs = wait_for(refused_everywhere, timeout=10)
    assert all("nosuchgroup" in c["last_error"] for c in configs)
    assert [c["revision"] for c in configs] == [revision] * 3  # the old document serves
    assert [c["etcd"]["latest_revision"] for c in configs] == [bad_revision] * 3
    assert fleet.digests() == [digest] * 3
    rings = [r.http_json("/v1/ring")["config"] for r in fleet.routers]
    assert all(c["revision"] == revision and "nosuchgroup" in c["last_error"] for c in rings)
    assert all(r.memcache().get("scores:still") == b"value-of-still" for r in fleet.routers)

    good = fleet.document(vnodes=150)
    fleet.etcd.put(fleet.key, good)
    assert fleet.wait_for_digest(digest_of(good), timeout=5) is not None
    assert all(r.http_json("/v1/stats")["config"]["last_error"] is None for r in fleet.routers)


def test_a_push_that_races_another_is_refused_and_writes_nothing(fleet):
    mine = fleet.write("mine.yaml", fleet.document(vnodes=90))
    theirs = fleet.document(vnodes=80)
    main, child = pty.openpty()
    proc = Process([*RINGCACHE, "topology", "push", str(mine), fleet.url], stdin=child)
    os.close(child)
    try:
        wait_for(lambda: "? [y/N]" in proc.read_stdout() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.describe()
        fleet.etcd.put(fleet.key, theirs)  # another push lands while we are asked
        os.write(main, b"y\n")
        proc.wait(30)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    stderr = proc.read_stderr()
    assert proc.returncode == 1, proc.describe()
    assert stderr.count("\n") == 1 and "changed after it was read" in stderr
    assert fleet.wait_for_digest(digest_of(theirs), timeout=5) is not None


class Load:
    """Steady gets on every router from threads; every answer must be the source's value."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.stop = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(r,), daemon=True)
                        for r in fleet.routers]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _run(self, router):
        client = router.memcache()
        i = 0
        while not self.stop.is_set():
            key = f"load{i % 200}"
            i += 1
            try:
                value = client.get(f"scores:{key}")
                if value != f"value-of-{key}".encode():
                    self.failures.append(f"{key}: {value!r}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                self.failures.append(f"{key}: {exc!r}")
                client = router.memcache()
            self.requests += 1
            time.sleep(0.002)


def etcd_states(fleet) -> list[str]:
    return [r.http_json("/v1/stats")["config"]["etcd"]["state"] for r in fleet.routers]


def test_etcd_killed_costs_no_request_and_the_next_push_arrives_within_5s(fleet):
    pids = [r.proc.pid for r in fleet.routers]
    digest = current_digest(fleet)
    with Load(fleet) as load:
        time.sleep(0.5)
        fleet.etcd.stop()  # SIGKILL
        wait_for(lambda: etcd_states(fleet) == ["unreachable"] * 3, timeout=15)
        time.sleep(2.0)  # serving from the last ring meanwhile
        assert fleet.digests() == [digest] * 3
        during = load.requests
        fleet.etcd.start()
        back = fleet.document(vnodes=170)
        fleet.etcd.put(fleet.key, back)
        arrived = fleet.wait_for_digest(digest_of(back), timeout=5)
        time.sleep(0.5)
    print(f"\netcd killed: {load.requests} gets ({during} before etcd came back), "
          f"{len(load.failures)} failed; the push after it reached every router in "
          f"{arrived if arrived is None else round(arrived, 2)} s")
    assert load.failures == []
    assert during > 100
    assert arrived is not None
    assert [r.proc.pid for r in fleet.routers] == pids and all(
        r.proc.poll() is None for r in fleet.routers)
    stats = [r.http_json("/v1/stats")["config"]["etcd"] for r in fleet.routers]
    assert all(s["state"] == "watching" and s["outages"] >= 1 for s in stats)


def test_a_compacted_revision_while_away_means_a_fresh_read(fleet):
    """etcd moves on while the routers cannot see it (it runs on another port), compacts,
    and comes back: the watch cannot resume from the routers' revision, so they read afresh."""
    fleet.etcd.stop()
    wait_for(lambda: etcd_states(fleet) == ["unreachable"] * 3, timeout=15)
    other = free_port()
    elsewhere = fleet.etcd.start_on(other)
    try:
        for vnodes in (60, 70):
            last = fleet.document(vnodes=vnodes)
            fleet.etcd.put(fleet.key, last, port=other)
        revision = fleet.etcd.revision(fleet.key, port=other)
        fleet.etcd.ctl("compaction", str(revision), port=other)
    finally:
        elsewhere.send_signal(signal.SIGKILL)
        elsewhere.wait()
    fleet.etcd.start()
    assert fleet.wait_for_digest(digest_of(last), timeout=10) is not None
    assert all("reading it afresh" in r.proc.read_stderr() for r in fleet.routers)


@pytest.fixture
def workers_fleet(etcd_server, tmp_path):
    f = Fleet(tmp_path, etcd_server, routers=1, nodes=2, key="/ringcache/workers",
              router_extra="  workers: 2\n").start()
    yield f
    f.stop()


def test_with_workers_the_control_watches_and_every_worker_follows(workers_fleet):
    router = workers_fleet.routers[0]

    def workers_on(digest):
        workers = router.http_json("/v1/ring").get("workers") or []
        return len(workers) == 2 and all(w["up"] and w["digest"] == digest for w in workers)

    wait_for(lambda: workers_on(digest_of(workers_fleet.document())), timeout=20)
    pushed = workers_fleet.document(vnodes=50)
    workers_fleet.etcd.put(workers_fleet.key, pushed)
    wait_for(lambda: workers_on(digest_of(pushed)), timeout=10)
    # The workers serve the memcached port from the new ring, the --memcache override.
    assert router.memcache().get("scores:w") == b"value-of-w"


def test_a_bad_url_or_credentials_exit_2_with_one_line(tmp_path):
    for args in (["-c", "etcd://127.0.0.1:notaport/k"], ["-c", "etcd://127.0.0.1:2379"],
                 ["-c", "etcd://127.0.0.1:2379/k", "--etcd-cert", "c.pem"],
                 ["-c", "etcd://127.0.0.1:2379/k", "--memcache", "nowhere"]):
        done = subprocess.run([*RINGCACHE, "router", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def certified_etcd():
    from tests.integration.servers import EtcdServer

    with EtcdServer(tls=True, client_certs=True).serving() as server:
        yield server


def test_etcd_over_tls_with_a_client_certificate(certified_etcd, tmp_path):
    """etcd+https:// where etcd requires a client certificate: the CA and certificate from
    the environment for the router, as flags for the CLI; without one, refused."""
    d = certified_etcd.dir
    env = {**os.environ, "RINGCACHE_ETCD_CA": str(d / "ca.pem"),
           "RINGCACHE_ETCD_CERT": str(d / "client.pem"), "RINGCACHE_ETCD_KEY": str(d / "client.key")}
    fleet = Fleet(tmp_path, certified_etcd, routers=1, nodes=1, env=env).start()
    try:
        assert fleet.routers[0].digest() == digest_of(fleet.document())
        flags = ["--etcd-ca", str(d / "ca.pem"), "--etcd-cert", str(d / "client.pem"),
                 "--etcd-key", str(d / "client.key")]
        plain = {k: v for k, v in os.environ.items() if not k.startswith("RINGCACHE_ETCD_")}
        pushed = fleet.write("pushed.yaml", fleet.document(vnodes=100))
        done = fleet.push(pushed, "--yes", *flags, env=plain)
        assert done.returncode == 0, done.stderr
        assert fleet.wait_for_digest(digest_of(fleet.document(vnodes=100)), timeout=5)
        refused = fleet.push(pushed, "--yes", "--etcd-ca", str(d / "ca.pem"), env=plain)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "cannot reach etcd at https://127.0.0.1:" in refused.stderr
    finally:
        fleet.stop()


@pytest.fixture
def secured_etcd():
    from tests.integration.servers import EtcdServer

    with EtcdServer(tls=True, token_ttl=2).serving() as server:
        server.enable_auth("ringcache", "s3cret", "/ringcache/")
        yield server


def test_a_user_and_password_with_tokens_that_expire(secured_etcd, tmp_path):
    """A user whose password is in a file, over TLS. etcd forgets a token after 2 s idle
    (--auth-token-ttl) and on a restart: the router asks for a new one, unnoticed."""
    (tmp_path / "password").write_text("s3cret\n")
    env = {**os.environ, "RINGCACHE_ETCD_CA": str(secured_etcd.dir / "ca.pem"),
           "RINGCACHE_ETCD_USER": "ringcache",
           "RINGCACHE_ETCD_PASSWORD_FILE": str(tmp_path / "password")}
    fleet = Fleet(tmp_path, secured_etcd, routers=1, nodes=1, env=env).start()
    try:
        router = fleet.routers[0]
        assert router.digest() == digest_of(fleet.document())
        wrong = fleet.push(fleet.write("p.yaml", fleet.document(vnodes=90)), "--yes",
                           env={**env, "RINGCACHE_ETCD_PASSWORD_FILE": "",
                                "RINGCACHE_ETCD_PASSWORD": "wrong"})
        assert wrong.returncode == 1 and "authentication failed" in wrong.stderr, wrong.stderr

        time.sleep(6)  # the router's token expires between its liveness reads
        later = fleet.document(vnodes=110)
        done = fleet.push(fleet.write("later.yaml", later), "--yes")
        assert done.returncode == 0, done.stderr
        assert fleet.wait_for_digest(digest_of(later), timeout=5) is not None
        config = router.http_json("/v1/stats")["config"]
        assert config["etcd"]["state"] == "watching" and config["etcd"]["outages"] == 0

        secured_etcd.stop()
        secured_etcd.start()  # a restarted etcd knows no token
        after = fleet.document(vnodes=120)
        secured_etcd.put(fleet.key, after)
        assert fleet.wait_for_digest(digest_of(after), timeout=5) is not None
    finally:
        fleet.stop()
