"""The `sql: <url>` + `query:` source: the first column of the first row, or "not found".

DB-API drivers block, so queries run in ``twisted.enterprise.adbapi``'s own thread pool,
one connection per thread, reconnecting after a connection breaks. The query's one ``?``
placeholder is rewritten to the driver's style, and the driver is told the source's
timeout, so a query the router gave up on does not keep a pool thread busy for long.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout

from router.cluster.errors import SourceError
from router.sources.base import detached
from router.sources.urls import masked

POOL_SIZE = 4  # connections (and threads) per source
# Seconds the driver and server wait past the source timeout before giving up on a query:
# long enough that the client sees the router's own timeout, short enough to free the thread.
DRIVER_GRACE = 1.0

# SQLAlchemy's dialect[+driver] -> (DB-API module, package to install, its placeholder)
DRIVERS = {
    "sqlite": ("sqlite3", None, "?"),
    "sqlite+pysqlite": ("sqlite3", None, "?"),
    "postgresql": ("psycopg", "ringcache[postgres]", "%s"),
    "postgresql+psycopg": ("psycopg", "ringcache[postgres]", "%s"),
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary", "%s"),
    "mysql": ("pymysql", "ringcache[mysql]", "%s"),
    "mysql+pymysql": ("pymysql", "ringcache[mysql]", "%s"),
    "mariadb": ("pymysql", "ringcache[mysql]", "%s"),
    "mariadb+pymysql": ("pymysql", "ringcache[mysql]", "%s"),
}


@dataclass(frozen=True, slots=True)
class Database:
    """How to open connections: ``module.connect(*args, **kwargs)``."""

    module: str
    package: str | None
    placeholder: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str, base_dir: str, timeout: float) -> Database:
        """A SQLAlchemy-style URL; ``sqlite:///rel.db`` is relative to ``base_dir``.
        Raises ValueError saying what is wrong."""
        scheme = url.partition("://")[0].lower()
        if scheme not in DRIVERS:
            raise ValueError(f"unsupported database {scheme!r} (supported: {', '.join(DRIVERS)})")
        driver = DRIVERS[scheme]
        if driver[0] == "sqlite3":
            return cls(*driver, (_sqlite_uri(url, base_dir),),
                       {"uri": True, "timeout": timeout, "check_same_thread": False})
        if driver[0] == "pymysql":
            return cls(*driver, (), _mysql_kwargs(url, timeout))
        # libpq reads the URL itself, parameters (?sslmode=...) included.
        conninfo = "postgresql" + url[len(scheme):]
        return cls(*driver, (conninfo,), {"connect_timeout": max(2, math.ceil(timeout))})

    def query(self, query: str) -> str:
        """``query`` with its ``?`` in this driver's style (``%`` doubled where ``%s`` is used)."""
        if self.placeholder == "?":
            return query
        return query.replace("%", "%%").replace("?", self.placeholder)


def _sqlite_uri(url: str, base_dir: str) -> str:
    path = url.partition(":///")[2]
    if not path or path == ":memory:" or "?" in path:
        raise ValueError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    # Read-only: a mistyped path is an error, not a new empty database.
    return "file:" + quote(os.path.join(base_dir, path)) + "?mode=ro"


def _mysql_kwargs(url: str, timeout: float) -> dict:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"charset", "unix_socket"}
    if unknown:
        raise ValueError(f"unsupported URL parameters {', '.join(sorted(unknown))} "
                         "(supported: charset, unix_socket)")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    kwargs = {"host": parts.hostname or "localhost", "port": port,
              "database": unquote(parts.path.lstrip("/")) or None,
              "charset": query.get("charset", "utf8mb4"),
              "connect_timeout": timeout, "read_timeout": timeout + DRIVER_GRACE,
              "write_timeout": timeout + DRIVER_GRACE}
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    if "unix_socket" in query:
        kwargs["unix_socket"] = query["unix_socket"]
    return kwargs


def _postgres_session(timeout: float):
    def opened(connection) -> None:
        # The server cancels a statement the router no longer waits for.
        cursor = connection.cursor()
        cursor.execute(f"SET statement_timeout = {round((timeout + DRIVER_GRACE) * 1000)}")
        cursor.close()
        connection.commit()

    return opened


def _first_column(transaction, query: str, key: str):
    """Runs in a pool thread."""
    transaction.execute(query, (key,))
    row = transaction.fetchone()
    return None if row is None else row[0]


def as_bytes(value) -> bytes | None:
    """A column value as the bytes to cache: text as UTF-8, numbers and dates as their
    text; SQL NULL is "not found", like no row."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


class SQLSource:
    def __init__(self, url: str, query: str, reactor, base_dir: str, timeout: float):
        self.name = masked(url)
        self.reactor = reactor
        self.timeout = timeout
        try:
            database = Database.parse(url, base_dir, timeout)
            importlib.import_module(database.module)
        except ValueError as exc:
            raise ValueError(f"source {self.name}: {exc}") from None
        except ImportError:
            raise ValueError(f"source {self.name}: needs the {database.module} module; "
                             f"install it with: pip install '{database.package}'") from None
        self.query = database.query(query)
        self.pool = adbapi.ConnectionPool(
            database.module, *database.args, **database.kwargs,
            cp_min=1, cp_max=POOL_SIZE, cp_reconnect=True, cp_reactor=reactor,
            cp_openfun=_postgres_session(timeout) if database.module.startswith("psycopg") else None)

    def load(self, key: str) -> Deferred:
        return self.start(key)[0]

    def start(self, key: str) -> tuple[Deferred, Deferred]:
        """The answer, and when the pool's thread is done with the query: after a timeout
        that is when the driver gives up (the timeout plus DRIVER_GRACE, see above)."""
        finished = self.pool.runInteraction(_first_column, self.query, key)
        answer = detached(finished)
        answer.addTimeout(self.timeout, self.reactor)
        answer.addCallbacks(as_bytes, self._failed)
        return answer, finished

    def _failed(self, failure):
        if failure.check(DeferredTimeout):
            raise SourceError(self.name, f"no answer within {self.timeout:g}s")
        exc = failure.value
        raise SourceError(self.name, " ".join(f"{type(exc).__name__}: {exc}".split()))

    def check(self) -> Deferred:
        d = self.pool.runQuery("SELECT 1")
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed)
        return d

    def close(self) -> None:
        # Joins the pool's threads: a query still running delays this by at most the
        # timeout the driver was given.
        self.pool.close()
