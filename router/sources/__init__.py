"""Data sources for read-through: the factory from a topology block (``build_source``).

What a source is, and what every kind shares, is router/sources/base.py; each kind is its
own module (python, redis, sql, http), imported only when a topology names it.
"""

from __future__ import annotations

from router.sources.base import Source

DEFAULT_TIMEOUT = 3.0  # seconds; below the patience of common memcached clients


def build_source(spec, reactor, base_dir: str) -> Source:
    """The Source for a topology SourceSpec."""
    timeout = spec.options.get("timeout") or DEFAULT_TIMEOUT
    if spec.kind == "python":
        from router.sources.python import PythonSource

        return PythonSource(spec.target, reactor, base_dir, timeout, spec.concurrency)
    if spec.kind == "redis":
        from router.sources.redis import RedisSource

        return RedisSource(spec.target, reactor, timeout, spec.options.get("key", "{key}"))
    if spec.kind == "sql":
        from router.sources.sql import SQLSource

        return SQLSource(spec.target, spec.options["query"], reactor, base_dir, timeout)
    if spec.kind == "http":
        from router.sources.http import HTTPSource

        return HTTPSource(spec.target, reactor, timeout)
    raise ValueError(f"source kind {spec.kind!r} is not supported by this build")
