"""Real origin servers shared by the source tests; each starts once per session, when first used."""

from __future__ import annotations

import pytest

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
