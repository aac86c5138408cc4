"""Real origin servers shared by the source tests, each started once per session when first
used; and the default cluster, once per module that asks for it."""

from __future__ import annotations

import pytest

from tests.integration.cluster import Cluster
from tests.integration.servers import (
    EtcdServer,
    HTTPOrigin,
    MariaDBServer,
    PostgresServer,
    RedisServer,
)


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer().serving() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server():
    with PostgresServer().serving() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server():
    with MariaDBServer().serving() as server:
        yield server


@pytest.fixture(scope="session")
def http_origin():
    with HTTPOrigin().serving() as server:
        yield server


@pytest.fixture(scope="module")
def etcd_server():
    """Module-scoped: the etcd tests kill and restart it."""
    with EtcdServer().serving() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three nodes and a router of the default topology (tests/integration/cluster.py); a
    module that needs another defines its own ``cluster``."""
    c = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()
