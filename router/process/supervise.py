"""Supervised child processes: spawned, their output relayed line by line, restarted with
backoff when they die, stopped with SIGTERM (then SIGKILL). `ringcache up` runs its nodes
and router this way, and a router its workers.

A child whose spec names a ``ready`` line is serving once it printed that line. One that
ends before it was serving never started (a bad config, a port taken, a source that does
not import): a restart will not fix that, so it is not restarted but reported to
``on_failed_start``. One that ends after it was serving crashed, and is restarted."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

from shared.net import cancel_call

LOG_PREFIX = "ringcache up: "

# Each child starts as this tiny program, which asks Linux to SIGTERM it when `up` dies
# (even by SIGKILL, which no handler of ours can see) and then execs the real role, so
# the pid we log is the role's. spawnProcess has no pre-exec hook, hence the detour.
# Where prctl does not exist the child just execs: a SIGKILLed `up` may orphan it there.
# It also ignores SIGINT, which survives the exec (and Twisted then installs no handler for
# it): Ctrl-C in a terminal reaches the whole process group, and a child that stopped on
# it as well as on the SIGTERM `up` then sends printed a ReactorNotRunning traceback.
DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # `up` stops its children (SIGTERM)
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):  # `up` died before prctl took effect
    sys.exit(1)
os.execv(sys.executable, [sys.executable, "-m", "shared.cli", *sys.argv[2:]])
"""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str  # node name or "router": the prefix of its relayed output
    argv: tuple[str, ...]
    ready: str | None = None  # how the line it prints once it is serving begins


class Backoff:
    """Restart delays: ``initial`` doubling up to ``maximum``, back to ``initial`` once a child stayed up ``reset_after``."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, reset_after: float = 10.0) -> None:
        self.initial, self.maximum, self.reset_after = initial, maximum, reset_after
        self._next = initial

    def delay(self, uptime: float) -> float:
        """The wait before restarting a child that ran for ``uptime`` seconds."""
        if uptime >= self.reset_after:
            self._next = self.initial
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay


class Child:
    """One supervised child: spawned, its output relayed, restarted with backoff when it dies, stopped on request."""

    def __init__(
        self,
        spec: ChildSpec,
        reactor,
        write: Callable[[str], None],
        env: Mapping[str, str],
        backoff: Backoff | None = None,
        stop_timeout: float = 5.0,
        prefix: str = LOG_PREFIX,
        on_failed_start: Callable[[Child, str, int | None], None] | None = None,
    ) -> None:
        self.spec = spec
        # Called with (child, how it ended, exit status) when a run ends before it served.
        self._on_failed_start = on_failed_start
        self.ready = False  # this run printed its ready line (or has none to print)
        self.last_line = ""  # the last line it printed: why it stopped, often
        self._prefix = prefix  # how its lines about children begin
        self.pid: int | None = None  # of the running process, None between runs
        self._reactor = reactor
        self._write = write
        self._env = dict(env)
        self._backoff = backoff or Backoff()
        self._stop_timeout = stop_timeout
        self._process = None
        self._started_at = 0.0
        self._restart = None  # the pending delayed start after a death
        self._kill = None  # the pending SIGKILL while stopping
        self._stopped: Deferred[None] | None = None  # set once stop() was called

    def start(self) -> None:
        self._restart = None
        self._started_at = self._reactor.seconds()
        self.ready = self.spec.ready is None
        argv = self.spec.argv
        self._process = self._reactor.spawnProcess(_Relay(self), argv[0], argv, env=self._env)
        self.pid = self._process.pid
        self._write(f"{self._prefix}started {self.spec.name} (pid {self.pid})")

    def signal(self, name: str) -> bool:
        """Send signal ``name`` ("HUP", "TERM", ...) to the running process; False when none runs."""
        if self._process is None:
            return False
        try:
            self._process.signalProcess(name)
        except ProcessExitedAlready:
            return False
        return True

    def stop(self) -> Deferred[None]:
        """SIGTERM, SIGKILL after ``stop_timeout``; fires once the process is gone. Call once."""
        self._stopped = Deferred()
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self.signal("TERM"):
            self._kill = self._reactor.callLater(self._stop_timeout, self._force)
        elif self._process is None:
            self._stopped.callback(None)
        return self._stopped

    def relay(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip()
        if text:
            self.last_line = text
        if not self.ready and text.startswith(self.spec.ready):
            self.ready = True
        self._write(f"[{self.spec.name}] {text}")

    def ended(self, reason) -> None:
        pid, self._process, self.pid = self.pid, None, None
        status = _describe_exit(reason.value)
        if self._stopped is not None:
            cancel_call(self._kill)
            self._write(f"{self._prefix}stopped {self.spec.name} (pid {pid}, {status})")
            self._stopped.callback(None)
            return
        if not self.ready and self._on_failed_start is not None:
            code = getattr(reason.value, "exitCode", None)
            self._on_failed_start(self, status, code)
            return
        uptime = self._reactor.seconds() - self._started_at
        delay = self._backoff.delay(uptime)
        self._write(f"{self._prefix}{self.spec.name} (pid {pid}) {status} after running "
                    f"{uptime:.0f}s; restarting in {delay:g}s")
        self._restart = self._reactor.callLater(delay, self.start)

    def _force(self) -> None:
        self._write(f"{self._prefix}{self.spec.name} (pid {self.pid}) ignored SIGTERM for {self._stop_timeout:g}s; killing it")
        self.signal("KILL")


class _Relay(ProcessProtocol):
    """One run of a child: splits its stdout and stderr into lines and reports its end."""

    def __init__(self, child: Child) -> None:
        self._child = child
        self._partial: dict[int, bytes] = {}  # per fd: the bytes after the last newline

    def childDataReceived(self, fd: int, data: bytes) -> None:
        *lines, self._partial[fd] = (self._partial.get(fd, b"") + data).split(b"\n")
        for line in lines:
            self._child.relay(line)

    def processEnded(self, reason) -> None:
        for rest in self._partial.values():
            if rest:
                self._child.relay(rest)
        self._child.ended(reason)


def _describe_exit(value) -> str:
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        try:
            name = f" ({signal.Signals(value.signal).name})"
        except ValueError:
            name = ""
        return f"killed by signal {value.signal}{name}"
    return f"exited with status {value.exitCode}"
