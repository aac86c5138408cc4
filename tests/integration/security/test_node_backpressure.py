"""The node port's bounds against real processes: a peer that never reads its answers costs
one answer frame (RSS read from /proc), not all it asked for, and does not stall the
others; connections past --max-connections are refused clearly, logged once per interval."""

from __future__ import annotations

import socket
import time

import pytest

from shared import ringcache_pb2 as pb
from tests.helpers import rss_bytes, stop_process
from tests.integration.security.peers import (
    SECRET,
    Peer,
    accepted,
    connect,
    frame,
    read_all,
    secret_handshake,
    start_node,
    wait_for,
)

pytestmark = pytest.mark.integration

MiB = 1 << 20
KEYS = [b"k%d" % i for i in range(8)]


def node_frames(peer: Peer) -> int:
    [stats] = peer.call(pb.Request(id=99, op=pb.STATS))
    return stats.stats.frames


def test_a_peer_that_never_reads_its_get_many_answers_costs_one_frame_not_gigabytes():
    port, proc = start_node("--max-memory", "256MiB")
    try:
        good = Peer(connect(port))
        good.call(pb.Request(id=1, op=pb.CONFIGURE, groups=[
            pb.GroupConfig(name="big", policy="lru", max_bytes=64 * MiB)]))
        for i, key in enumerate(KEYS):
            assert good.call(pb.Request(id=2 + i, op=pb.SET, group="big", key=key,
                                        value=bytes([i]) * MiB)) == [pb.Response(id=2 + i, cas=i + 1)]
        before, frames_before = rss_bytes(proc.pid), node_frames(good)

        # 150 GET_MANY frames of 8 MiB answers each: 1.2 GB, asked for in 9 KB, never read.
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", port))
        hog.sendall(b"".join(frame(pb.Request(id=n, op=pb.GET_MANY, group="big", keys=KEYS))
                             for n in range(150)))

        # Another peer is served meanwhile, and again once the node has had all the time
        # it wants with the hog's frames.
        for attempt in range(3):
            [answer] = good.call(pb.Request(id=50, op=pb.GET, group="big", key=b"k3"))
            assert answer.value == b"\x03" * MiB
        handled = node_frames(good) - frames_before - 4  # less the good peer's own frames
        grown = rss_bytes(proc.pid) - before
        assert handled <= 3, handled  # the hog's first answer filled its pipe: reading stopped
        assert grown < 64 * MiB, f"the node grew by {grown / MiB:.0f} MiB"
        hog.close()
        good.close()
    finally:
        stop_process(proc)


def test_connections_past_the_cap_are_refused_with_a_reason_and_one_log_line():
    port, proc = start_node("--max-connections", "3")
    try:
        first = Peer(connect(port))
        # Until the node has seen the readiness probes' connections close, they count.
        wait_for(lambda: first.call(pb.Request(id=1, op=pb.STATS))[0].stats.connections == 1)
        held = [first, Peer(connect(port)), Peer(connect(port))]
        for peer in held:
            assert peer.call(pb.Request(id=1, op=pb.PING)) == [pb.Response(id=1)]
        for _ in range(20):
            with connect(port) as extra:
                refused = Peer(extra).read_frame()
                assert read_all(extra) == b""  # and closed
        assert refused == [pb.Response(id=0, status=pb.ERROR, error="too many connections (limit 3)")]
        held.pop().close()

        def served():
            with connect(port) as sock:
                try:
                    return Peer(sock).call(pb.Request(id=2, op=pb.PING)) == [pb.Response(id=2)]
                except AssertionError:  # still refused: the close is not seen yet
                    return False

        assert wait_for(served)
        for peer in held:
            peer.close()
    finally:
        stop_process(proc)
    lines = [line for line in proc.read_stderr().splitlines() if "refused a connection" in line]
    assert lines[0].endswith(": 3 connections are open, the most allowed (--max-connections)")
    assert len(lines) < 5, lines  # 20 refused or more: one line per 10 s


def test_with_a_secret_unauthenticated_connections_count_and_are_cut_off_in_time(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    port, proc = start_node("--secret-file", str(secret), "--max-connections", "2",
                            "--handshake-timeout", "1s")
    try:
        silent = [connect(port) for _ in range(2)]
        with connect(port) as third:
            try:
                third.sendall(frame(pb.Request(id=1, op=pb.PING)))
            except ConnectionResetError:
                pass  # refused before we could even send: as good
            assert read_all(third) == b""  # past the cap, and a stranger: not a byte
        for sock in silent:
            assert read_all(sock) == b""  # cut off at the handshake timeout
            sock.close()

        def router():
            sock = connect(port)
            try:
                return accepted(sock, secret_handshake(sock))
            except ConnectionError:
                sock.close()
                return None

        peer = wait_for(router)  # the slots are free again
        assert peer.call(pb.Request(id=3, op=pb.PING)) == [pb.Response(id=3)]
        peer.close()
    finally:
        stop_process(proc)


def test_a_frame_left_half_sent_is_closed_after_the_frame_timeout():
    port, node = start_node("--frame-timeout", "1s")
    try:
        stalled = connect(port)
        whole = frame(pb.Request(id=1, op=pb.SET, group="g", key=b"k", value=b"v" * 100_000))
        stalled.sendall(whole[:50_000])  # most of a frame, then nothing
        working = connect(port)
        working.sendall(frame(pb.Request(id=2, op=pb.PING)))
        assert working.recv(100)  # others are served meanwhile
        stalled.settimeout(5)
        started = time.monotonic()
        assert read_all(stalled) == b""  # closed, with no answer
        assert 0.5 < time.monotonic() - started < 4
        assert wait_for(lambda: "a frame not completed within 1s" in node.read_stderr())
    finally:
        stop_process(node)
