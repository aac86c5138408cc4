"""A listener's bounds: a cap on open connections with a clear refusal, and one sweep that
closes connections idle too long or stuck halfway through a command.

A timer per connection would cost a heap operation on every read; one sweep per listener
looks at each connection's two timestamps instead, so the hot path only stores a time.
"""

from __future__ import annotations

import fcntl
import os
import resource
from collections.abc import Callable

from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall

from shared.throttle import LogThrottle

# Descriptors kept back from the client cap for node connections, sources, the HTTP port
# and logs, so a router full of clients can still reach a restarted node.
RESERVED_FDS = 128


class Refusal(Protocol):
    """What a connection past a cap gets: ``line`` saying why, then the close; with no
    line (a port whose strangers get no byte), an abort."""

    def __init__(self, line: bytes):
        self.line = line

    def connectionMade(self):
        if not self.line:
            self.transport.abortConnection()
            return
        self.transport.write(self.line)
        self.transport.loseConnection()


def fd_headroom() -> int:
    """Raise this process's open-file soft limit to its hard limit and say how many client
    connections fit under it with RESERVED_FDS kept back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, soft - RESERVED_FDS)


def presize_fd_table(count: int) -> None:
    """Grow this process's descriptor table now to hold ``count`` descriptors (at most the
    open-file limit allows), rather than doubling it under a burst of connections.

    The kernel never shrinks the table, and grows it by doubling as descriptors are
    opened; in a process with threads (Twisted's pool, a source's) each doubling waits for
    an RCU grace period, 20-70 ms measured here, while the listen queue fills: a burst of
    2,000 connections then overflowed the backlog of 1,024 about one time in five and paid
    a second of SYN retry. Asking for a descriptor numbered ``count - 1`` grows it once.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        count = min(count, soft)
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, max(count - 1, fd))
    except OSError:  # a limit lowered under us: the table grows as it must
        high = None
    os.close(fd)
    if high is not None:
        os.close(high)


class ConnectionBounds:
    """Counts a listener's connections, refuses past ``limit``, and sweeps its timeouts.

    A connection registers itself with ``opened``/``closed`` and keeps two attributes the
    sweep reads: ``last_active`` (the last time it read or wrote) and ``partial_since``
    (when a half-received command began, else None); the sweep calls its ``timed_out(why)``
    with why "not completed within Ns" or "idle for Ns".
    ``busy()`` says it is waiting on answers, so it is not idle.
    """

    def __init__(self, reactor, limit: int, idle_timeout: float = 0.0,
                 command_timeout: float = 0.0, what: str = "connections",
                 log: Callable[[str], None] | None = None):
        self.reactor = reactor
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.what = what
        self.open: set = set()
        self.refused = 0
        self.timed_out = 0
        # A flood of refusals or timeouts costs one line per interval (shared/throttle.py).
        self.log = LogThrottle(log or (lambda message: None), reactor.seconds)
        self._sweep = None

    def __len__(self) -> int:
        return len(self.open)

    def admit(self) -> bool:
        if len(self.open) < self.limit:
            return True
        self.refused += 1
        self.log(f"refused a new connection: {len(self.open)} {self.what} open, the limit")
        return False

    def reconfigure(self, limit: int, idle_timeout: float, command_timeout: float) -> None:
        self.limit = limit
        if (idle_timeout, command_timeout) != (self.idle_timeout, self.command_timeout):
            self.idle_timeout, self.command_timeout = idle_timeout, command_timeout
            self.stop()
            self._start_sweep()

    def opened(self, conn) -> None:
        self.open.add(conn)
        self._start_sweep()

    def _start_sweep(self) -> None:
        if self._sweep is None and self.open and (self.idle_timeout or self.command_timeout):
            self._sweep = LoopingCall(self.sweep)
            self._sweep.clock = self.reactor
            self._sweep.start(self._sweep_interval(), now=False)

    def closed(self, conn) -> None:
        self.open.discard(conn)

    def stop(self) -> None:
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self._sweep = None

    def _sweep_interval(self) -> float:
        # A quarter of the shortest timeout, so one fires at most 25% late; at most 1 s.
        timeouts = [t for t in (self.idle_timeout, self.command_timeout) if t]
        return min(1.0, min(timeouts) / 4)

    def sweep(self) -> None:
        now = self.reactor.seconds()
        command, idle = self.command_timeout, self.idle_timeout
        for conn in list(self.open):
            since = conn.partial_since
            if command and since is not None and now - since >= command:
                self.timed_out += 1
                conn.timed_out(f"not completed within {command:g}s")
            elif idle and since is None and not conn.busy() and now - conn.last_active >= idle:
                self.timed_out += 1
                conn.timed_out(f"idle for {idle:g}s")
