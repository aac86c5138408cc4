"""Running real ringcache processes in tests: free ports, start until ready, stop for sure."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.testing import StringTransport

from shared import ringcache_pb2 as pb
from shared.framing import FrameDecoder, decode_payload, encode_batch

ROOT = Path(__file__).resolve().parent.parent
# The console script's code path without depending on where the script was installed.
RINGCACHE = [sys.executable, "-m", "shared.cli"]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this test run
    has not handed out before (the kernel may offer a just-closed port again, and two
    nodes of one topology must not get the same one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


class Process(subprocess.Popen):
    """A child whose stdout and stderr go to files, so they can be read at any time
    without a full pipe ever blocking it."""

    def __init__(self, args: list[str], **kwargs):
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        super().__init__(args, stdout=self._out, stderr=self._err, cwd=kwargs.pop("cwd", ROOT), **kwargs)

    def read_stdout(self) -> str:
        return _read(self._out)

    def read_stderr(self) -> str:
        return _read(self._err)

    def describe(self) -> str:
        return f"{self.args!r} (exit {self.poll()})\n--- stdout\n{self.read_stdout()}--- stderr\n{self.read_stderr()}"


def _read(file) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def start_process(args: list[str], ready_check: Callable[[], bool], timeout: float = 10.0, **kwargs) -> Process:
    """Start ``args`` and wait until ``ready_check()`` is true; kill it and fail, showing
    its output, if it exits or is not ready within ``timeout`` seconds."""
    proc = Process(args, **kwargs)
    deadline = time.monotonic() + timeout
    while not ready_check():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"process never became ready: {proc.describe()}")
        time.sleep(0.02)
    return proc


def stop_process(proc: Process, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; the exit status
    (negative when a signal ended it, e.g. -9 after the SIGKILL)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def outcomes(d) -> list:
    """A list that receives what Deferred ``d`` fires with (a result or a Failure)."""
    out: list = []
    d.addBoth(out.append)
    return out


class CountingTransport(StringTransport):
    """A StringTransport that counts writes: one turn's answers should cost one."""

    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)

    def writeSequence(self, data):
        self.writes += 1
        super().write(b"".join(data))


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` now, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def wait_for(probe, timeout: float = 15.0):
    """Poll ``probe()`` until it returns something true, and return that; fail the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
    return result


class NodeConnection:
    """A blocking client of a storage node: one frame of requests out, and their answers
    back (in one frame, or more past 64 KiB of answers)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = FrameDecoder()

    def call(self, *requests: pb.Request) -> list[pb.Response]:
        self.sock.sendall(encode_batch(requests=requests))
        answers: list[pb.Response] = []
        while len(answers) < len(requests):
            while (payload := self.decoder.next_frame()) is None:
                data = self.sock.recv(65536)
                assert data, "the node closed the connection"
                self.decoder.receive_data(data)
            answers += decode_payload(payload).responses
        return answers

    def close(self) -> None:
        self.sock.close()
