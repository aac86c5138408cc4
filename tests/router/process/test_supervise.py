"""Supervising one child process with a fake clock: restarts with backoff, output relayed, stop."""

from __future__ import annotations

import signal

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from router.process.supervise import Backoff, Child, ChildSpec

# --- supervising one child with a fake clock ---------------------------------------------------


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class SpawningClock(Clock):
    """A Clock that also 'spawns' processes, recording each run's protocol and argv."""

    def __init__(self):
        super().__init__()
        self.runs = []  # (protocol, process, argv, env)

    def spawnProcess(self, protocol, executable, args, env=None):
        assert executable == args[0]
        process = FakeProcess(1000 + len(self.runs))
        protocol.makeConnection(process)
        self.runs.append((protocol, process, args, env))
        return process

    def end(self, reason):
        self.runs[-1][0].processEnded(Failure(reason))


KILLED = ProcessTerminated(signal=signal.SIGKILL)


@pytest.fixture
def supervised():
    clock = SpawningClock()
    lines = []
    child = Child(ChildSpec("node-a", ("rc", "node")), clock, lines.append, {"HOME": "/x"})
    child.start()
    return clock, child, lines


def next_restart_delay(clock):
    (call,) = clock.getDelayedCalls()
    return call.getTime() - clock.seconds()


def test_a_dying_child_restarts_with_doubling_delays_capped_and_reset_after_10s(supervised):
    clock, child, lines = supervised
    assert (clock.runs[0][2], clock.runs[0][3], child.pid) == (("rc", "node"), {"HOME": "/x"}, 1000)
    delays = []
    for _ in range(9):
        clock.advance(1)  # up for 1 s: not healthy yet
        clock.end(KILLED)
        delays.append(next_restart_delay(clock))
        clock.advance(delays[-1])
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert len(clock.runs) == 10

    clock.advance(9.9)  # not long enough to count as healthy
    clock.end(ProcessTerminated(exitCode=1))
    assert next_restart_delay(clock) == 30
    clock.advance(30)
    clock.advance(10)  # stayed up 10 s: the next death starts the schedule over
    clock.end(ProcessDone(0))
    assert next_restart_delay(clock) == 0.5
    assert lines[:3] == [
        "ringcache up: started node-a (pid 1000)",
        "ringcache up: node-a (pid 1000) killed by signal 9 (SIGKILL) after running 1s; "
        "restarting in 0.5s",
        "ringcache up: started node-a (pid 1001)",
    ]
    assert lines[-3:] == [
        "ringcache up: node-a (pid 1009) exited with status 1 after running 10s; restarting in 30s",
        "ringcache up: started node-a (pid 1010)",
        "ringcache up: node-a (pid 1010) exited with status 0 after running 10s; "
        "restarting in 0.5s",
    ]


def test_a_child_that_ends_before_it_served_is_reported_not_restarted():
    clock = SpawningClock()
    lines, failed = [], []
    spec = ChildSpec("router", ("rc", "router"), ready="ringcache router: memcached on")
    child = Child(spec, clock, lines.append, {}, on_failed_start=lambda *args: failed.append(args))
    child.start()
    protocol = clock.runs[-1][0]
    protocol.childDataReceived(2, b"ringcache router: cannot start: Couldn't listen on "
                                  b"127.0.0.1:8080: [Errno 98] Address already in use.\n")
    clock.end(ProcessTerminated(exitCode=1))
    assert failed == [(child, "exited with status 1", 1)]
    assert child.last_line.endswith("[Errno 98] Address already in use.")
    assert clock.getDelayedCalls() == []  # no restart


def test_a_child_that_crashes_after_it_served_is_restarted():
    clock = SpawningClock()
    lines, failed = [], []
    spec = ChildSpec("node-a", ("rc", "node"), ready="ringcache node listening on")
    child = Child(spec, clock, lines.append, {}, on_failed_start=lambda *args: failed.append(args))
    child.start()
    assert not child.ready
    clock.runs[-1][0].childDataReceived(1, b"ringcache node listening on 127.0.0.1:7001\n")
    assert child.ready
    clock.advance(3)
    clock.end(KILLED)
    assert failed == []
    assert lines[-1] == ("ringcache up: node-a (pid 1000) killed by signal 9 (SIGKILL) after "
                         "running 3s; restarting in 0.5s")
    clock.advance(0.5)
    assert len(clock.runs) == 2 and not child.ready  # each run proves itself again


def test_backoff_alone():
    backoff = Backoff(initial=1, maximum=5, reset_after=3)
    assert [backoff.delay(0), backoff.delay(2.9), backoff.delay(0), backoff.delay(0), backoff.delay(3)] == [1, 2, 4, 5, 1]


def test_output_is_relayed_line_by_line_with_the_childs_name(supervised):
    clock, child, lines = supervised
    protocol = clock.runs[0][0]
    protocol.childDataReceived(1, b"listening on 127.0.0.1:7001\r\nhal")
    protocol.childDataReceived(2, b"a warning\n")
    protocol.childDataReceived(1, b"f a line\n\xffno newline at exit")
    clock.end(ProcessDone(0))
    assert lines[1:5] == [
        "[node-a] listening on 127.0.0.1:7001",
        "[node-a] a warning",
        "[node-a] half a line",
        "[node-a] \ufffdno newline at exit",
    ]


def test_stop_sends_sigterm_then_sigkill_after_5s_and_fires_when_gone(supervised):
    clock, child, lines = supervised
    stopped = child.stop()
    process = clock.runs[0][1]
    assert (process.signals, stopped.called) == (["TERM"], False)
    clock.advance(4.9)
    assert process.signals == ["TERM"]
    clock.advance(0.1)
    assert process.signals == ["TERM", "KILL"]
    clock.end(KILLED)
    assert stopped.called and clock.getDelayedCalls() == [] and len(clock.runs) == 1
    assert lines[-2:] == [
        "ringcache up: node-a (pid 1000) ignored SIGTERM for 5s; killing it",
        "ringcache up: stopped node-a (pid 1000, killed by signal 9 (SIGKILL))",
    ]


def test_a_child_that_stops_in_time_is_not_killed(supervised):
    clock, child, lines = supervised
    stopped = child.stop()
    clock.end(ProcessDone(0))
    assert stopped.called and clock.getDelayedCalls() == []
    assert clock.runs[0][1].signals == ["TERM"]
    assert lines[-1] == "ringcache up: stopped node-a (pid 1000, exited with status 0)"


def test_stop_during_a_restart_delay_cancels_the_restart(supervised):
    clock, child, lines = supervised
    clock.end(KILLED)
    stopped = child.stop()
    assert stopped.called and clock.getDelayedCalls() == []
    clock.advance(60)
    assert len(clock.runs) == 1 and not child.signal("HUP")


def test_signal_reaches_the_running_process(supervised):
    clock, child, lines = supervised
    assert child.signal("HUP")
    assert clock.runs[0][1].signals == ["HUP"]
