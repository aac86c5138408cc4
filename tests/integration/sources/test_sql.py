"""The sql source against SQLite files, a real PostgreSQL and a real MariaDB, through a real
router and storage node; and its URL, placeholder and value rules on their own."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal

import pytest

from router.config.topology import load_topology
from router.sources.sql import POOL_SIZE, Database, as_bytes
from router.sources.urls import masked
from tests.helpers import RINGCACHE, ROOT, free_port
from tests.integration.cluster import Cluster
from tests.integration.servers import CLOCK_SLACK, timed_error, wait_for

pytestmark = pytest.mark.integration

TIMEOUT = 0.5  # the source timeout of every group below, in seconds
# The '%' literal checks that '?' -> '%s' rewriting leaves the rest of the query intact.
QUERY = "SELECT value FROM items WHERE name = ? AND name NOT LIKE '%hidden%'"
BLOB_QUERY = "SELECT data FROM blobs WHERE name = ?"
ROWS = [("alpha", "Alpha"), ("a%s? b/ü", "odd key"), ("nothing", None), ("hidden-1", "secret")]
BLOB = bytes(range(256))
DATABASES = ("lite", "lite_abs", "pg", "maria")
SERVERS = ("pg", "maria")


def group(name: str, url: str, query: str) -> str:
    return f'  {name}:\n    source: {{sql: "{url}", query: "{query}", timeout: 500ms}}\n'


@pytest.fixture(scope="module")
def databases(tmp_path_factory, postgres_server, mariadb_server):
    """{group prefix: (URL, function running SQL with ? placeholders)}, each seeded with ROWS and BLOB."""
    cluster_dir = tmp_path_factory.mktemp("sql")
    absolute = tmp_path_factory.mktemp("elsewhere") / "other.db"

    def sqlite_runner(path):
        def run(sql, params=()):
            with sqlite3.connect(path) as connection:
                connection.execute(sql, params)
        return run

    def server_runner(server, **database):
        return lambda sql, params=(): server.execute((sql.replace("?", "%s"), params), **database)

    mariadb_server.execute(("DROP DATABASE IF EXISTS ringcache", ()), ("CREATE DATABASE ringcache CHARACTER SET utf8mb4", ()))
    found = {
        "lite": ("sqlite:///items.db", sqlite_runner(cluster_dir / "items.db"), "BLOB"),
        "lite_abs": (f"sqlite:///{absolute}", sqlite_runner(absolute), "BLOB"),
        "pg": (postgres_server.url, server_runner(postgres_server), "BYTEA"),
        "maria": (mariadb_server.url("ringcache"), server_runner(mariadb_server, database="ringcache"),
                  "BLOB"),
    }
    for url, run, blob_type in found.values():
        run("DROP TABLE IF EXISTS items")
        run("DROP TABLE IF EXISTS blobs")
        run("CREATE TABLE items (name VARCHAR(100) PRIMARY KEY, value TEXT)")
        run(f"CREATE TABLE blobs (name VARCHAR(100) PRIMARY KEY, data {blob_type})")
        for row in ROWS:
            run("INSERT INTO items VALUES (?, ?)", row)
        run("INSERT INTO blobs VALUES (?, ?)", ("blob", BLOB))
    return cluster_dir, {prefix: (url, run) for prefix, (url, run, _) in found.items()}


@pytest.fixture(scope="module")
def cluster(databases, postgres_server, mariadb_server):
    directory, found = databases
    groups = "groups:\n  scores: {}\n"
    for prefix, (url, _) in found.items():
        groups += group(prefix, url, QUERY) + group(prefix + "_bin", url, BLOB_QUERY)
    groups += group("pg_slow", postgres_server.url, "SELECT CAST(? AS TEXT) FROM pg_sleep(2)")
    groups += group("maria_slow", mariadb_server.url("ringcache"), "SELECT CONCAT(?, SLEEP(2))")
    groups += group("nowhere", f"postgresql://app:pw@127.0.0.1:{free_port()}/app", QUERY)
    groups += group("lite_missing", "sqlite:///missing.db", QUERY)
    c = Cluster(directory, nodes=1, groups=groups).start()
    yield c
    c.stop()



@pytest.mark.parametrize("db", DATABASES)
def test_first_column_of_the_row_for_the_key(cluster, db):
    client = cluster.memcache()
    assert client.get(f"{db}:alpha") == b"Alpha"
    assert cluster.http("GET", f"/v1/{db}/a%25s%3F%20b%2F%C3%BC") == (200, b"odd key")


@pytest.mark.parametrize("db", DATABASES)
def test_binary_column(cluster, db):
    assert cluster.memcache().get(f"{db}_bin:blob") == BLOB


@pytest.mark.parametrize("db", DATABASES)
def test_no_row_and_null_are_misses_and_not_cached(cluster, databases, db):
    run = databases[1][db][1]
    client = cluster.memcache()
    assert client.get(f"{db}:nobody") is None
    assert client.get(f"{db}:nothing") is None  # the row's value is NULL
    assert client.get(f"{db}:hidden-1") is None  # excluded by the query's LIKE '%hidden%'
    assert cluster.http("GET", f"/v1/{db}/nobody")[0] == 404
    run("INSERT INTO items VALUES (?, ?)", ("nobody", "somebody now"))
    assert client.get(f"{db}:nobody") == b"somebody now"


@pytest.mark.parametrize("db", SERVERS)
def test_a_slow_query_is_an_error_within_the_timeout(cluster, db):
    message, seconds = timed_error(lambda: cluster.memcache().get(f"{db}_slow:k"))
    assert "failed: no answer within 0.5s" in message
    assert TIMEOUT - CLOCK_SLACK <= seconds < TIMEOUT + 0.5


@pytest.mark.parametrize("db", SERVERS)
def test_server_down_fails_fast_cached_values_still_served_then_recovers(
        cluster, databases, postgres_server, mariadb_server, db):
    server = {"pg": postgres_server, "maria": mariadb_server}[db]
    run = databases[1][db][1]
    client = cluster.memcache()
    assert client.get(f"{db}:alpha") == b"Alpha"
    server.stop()
    try:
        assert client.get(f"{db}:alpha") == b"Alpha"
        # Each pool thread finds its connection closed once; after that, connecting is refused.
        for attempt in range(POOL_SIZE + 1):
            message, seconds = timed_error(lambda: client.get(f"{db}:down-1"))
            assert f"source {masked(databases[1][db][0])} failed: " in message
            assert seconds < TIMEOUT
        assert "refused" in message
        assert cluster.http("GET", f"/v1/{db}/down-6")[0] == 502
    finally:
        server.start()
    run("INSERT INTO items VALUES (?, ?)", ("down-1", "up again"))
    assert wait_for(lambda: client.get(f"{db}:down-1")) == b"up again"


def test_unreachable_at_start_is_a_warning_then_fast_errors_with_the_password_masked(cluster):
    name = "postgresql://app:***@127.0.0.1:"
    assert wait_for(lambda: f"group nowhere: source {name}" in cluster.router.read_stderr())
    message, seconds = timed_error(lambda: cluster.memcache().get("nowhere:k"))
    assert f"source {name}" in message and "Connection refused" in message
    assert ":pw@" not in message
    assert seconds < TIMEOUT


def test_a_missing_sqlite_file_is_not_created(cluster):
    assert wait_for(lambda: "group lite_missing: source sqlite:///missing.db" in cluster.router.read_stderr())
    message, _ = timed_error(lambda: cluster.memcache().get("lite_missing:k"))
    assert "OperationalError: unable to open database file" in message
    assert not (cluster.dir / "missing.db").exists()


def test_router_refuses_a_database_it_cannot_serve(tmp_path):
    topology = tmp_path / "topology.yaml"
    topology.write_text(f"""\
router: {{memcache: "127.0.0.1:{free_port()}", http: "127.0.0.1:{free_port()}", default_group: g}}
nodes: [{{name: a, address: "127.0.0.1:{free_port()}"}}]
groups:
  g: {{source: {{sql: "oracle://scott:tiger@db/orcl", query: "SELECT v FROM t WHERE k = ?"}}}}
""")
    done = subprocess.run([*RINGCACHE, "router", "-c", str(topology)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"ringcache router: {topology}: groups.g.source: source oracle://scott:***@db/orcl: "
        "unsupported database 'oracle' (supported: sqlite, ")
    assert "Traceback" not in done.stderr


def test_the_example_topology_and_seed(tmp_path):
    source = load_topology(ROOT / "examples/sql/topology.yaml").groups["scores"].source
    assert (source.kind, source.target) == ("sql", "sqlite:///scores.db")
    subprocess.run([sys.executable, str(ROOT / "examples/sql/seed.py"), str(tmp_path / "scores.db")],
                   check=True, capture_output=True, timeout=30)
    with sqlite3.connect(tmp_path / "scores.db") as db:
        assert db.execute(source.options["query"], ("Tom",)).fetchone() == ("630",)


@pytest.mark.parametrize("url, module, args, kwargs", [
    ("sqlite:///data/app.db", "sqlite3", ("file:/topo/data/app.db?mode=ro",),
     {"uri": True, "timeout": 0.5, "check_same_thread": False}),
    ("sqlite:////var/lib/my%20app.db", "sqlite3", ("file:/var/lib/my%2520app.db?mode=ro",),
     {"uri": True, "timeout": 0.5, "check_same_thread": False}),
    ("postgresql://u:p@h:5433/db?sslmode=require", "psycopg",
     ("postgresql://u:p@h:5433/db?sslmode=require",), {"connect_timeout": 2}),
    ("postgresql+psycopg2://u@h/db", "psycopg2", ("postgresql://u@h/db",), {"connect_timeout": 2}),
    ("mysql+pymysql://u:p%40ss@h/db?charset=latin1", "pymysql", (),
     {"host": "h", "port": 3306, "database": "db", "charset": "latin1", "user": "u",
      "password": "p@ss", "connect_timeout": 0.5, "read_timeout": 1.5, "write_timeout": 1.5}),
    ("mariadb://u@localhost:3307/db?unix_socket=/run/m.sock", "pymysql", (),
     {"host": "localhost", "port": 3307, "database": "db", "charset": "utf8mb4", "user": "u",
      "unix_socket": "/run/m.sock", "connect_timeout": 0.5, "read_timeout": 1.5,
      "write_timeout": 1.5}),
])
def test_url_forms(url, module, args, kwargs):
    database = Database.parse(url, "/topo", TIMEOUT)
    assert (database.module, database.args, database.kwargs) == (module, args, kwargs)


@pytest.mark.parametrize("url, problem", [
    ("sqlite://", "expected sqlite:///relative/path.db or sqlite:////absolute/path.db"),
    ("sqlite:///:memory:", "expected sqlite:///relative/path.db"),
    ("sqlite:///app.db?timeout=3", "expected sqlite:///relative/path.db"),
    ("mysql://h/db?ssl=1", r"unsupported URL parameters ssl \(supported: charset, unix_socket\)"),
    ("mysql://h:0x/db", "the port must be a number from 1 to 65535"),
    ("mssql+pyodbc://h/db", "unsupported database 'mssql\\+pyodbc'"),
])
def test_bad_urls(url, problem):
    with pytest.raises(ValueError, match=problem):
        Database.parse(url, "/topo", TIMEOUT)


@pytest.mark.parametrize("url, query, expected", [
    ("sqlite:///a.db", "SELECT v FROM t WHERE k = ? AND v LIKE '%x'", "SELECT v FROM t WHERE k = ? AND v LIKE '%x'"),
    ("postgresql://h/d", "SELECT v FROM t WHERE k = ? AND v LIKE '%x'", "SELECT v FROM t WHERE k = %s AND v LIKE '%%x'"),
    ("mysql://h/d", "SELECT v FROM t WHERE k=?", "SELECT v FROM t WHERE k=%s"),
])
def test_placeholder_in_the_driver_style(url, query, expected):
    assert Database.parse(url, "/topo", TIMEOUT).query(query) == expected


@pytest.mark.parametrize("value, expected", [
    (None, None), (b"\x00raw", b"\x00raw"), (memoryview(b"mv"), b"mv"), (bytearray(b"ba"), b"ba"),
    ("tëxt", "tëxt".encode()), (42, b"42"), (Decimal("1.50"), b"1.50"), (2.5, b"2.5"),
])
def test_column_values_as_bytes(value, expected):
    assert as_bytes(value) == expected


@pytest.mark.parametrize("url, expected", [
    ("postgresql://app:pw@h:5432/db", "postgresql://app:***@h:5432/db"),
    ("redis://:pw@h/0", "redis://:***@h/0"),
    ("mysql://app@h/db", "mysql://app@h/db"),
    ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
])
def test_passwords_are_masked(url, expected):
    assert masked(url) == expected
