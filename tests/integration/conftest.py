"""Real origin servers shared by the source tests; each starts once per session, when first used."""

from __future__ import annotations

import pytest

from tests.integration.servers import (
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
