"""The listen backlog every listener of both roles uses, and the kernel's cap on it.

A burst of new connections (a reconnect storm after a restart, clients that open one per
request) arrives faster than a reactor's accept loop drains it; the kernel queues the
connections in the listen backlog and, past it, drops their SYNs, which clients resend
only after a second. Twisted's default backlog is 50; memcached's (``-b``) is 1,024.
The kernel silently lowers any backlog to ``net.core.somaxconn``.
"""

from __future__ import annotations

DEFAULT_BACKLOG = 1024  # memcached's -b default
MAX_BACKLOG = 65535  # what kernels long took at most; more is a typo, refused
SOMAXCONN = "/proc/sys/net/core/somaxconn"


def backlog_problem(value) -> str | None:
    """Why ``value`` is not a backlog (a whole number from 1 to MAX_BACKLOG), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BACKLOG:
        return f"expected a whole number from 1 to {MAX_BACKLOG}, got {value!r}"
    return None


def capped_warning(backlog: int, path: str = SOMAXCONN) -> str | None:
    """A line saying the kernel caps ``backlog`` below what was asked, or None when it
    does not (or the cap cannot be read: not Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            cap = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if cap >= backlog:
        return None
    return (f"WARNING: listen backlog {backlog} is capped by the kernel at {cap} "
            f"(net.core.somaxconn): a burst of more than {cap} new connections will wait "
            f"for SYN retries; raise the host's net.core.somaxconn to {backlog} to lift it")
