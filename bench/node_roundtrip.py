"""Round trips to a real `ringcache node`: one frame of 100 GETs (hits, 100-byte values) at a time.

Usage: python bench/node_roundtrip.py [ROUNDS]   (default 20000)
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.helpers when run as a script

from shared import ringcache_pb2 as pb  # noqa: E402
from shared.framing import FrameDecoder, decode_payload, encode_batch  # noqa: E402
from tests.helpers import RINGCACHE, free_port, port_open, start_process, stop_process  # noqa: E402

BATCH = 100
VALUE = b"v" * 100


def round_trip(sock: socket.socket, decoder: FrameDecoder, frame: bytes) -> pb.Frame:
    sock.sendall(frame)
    while (payload := decoder.next_frame()) is None:
        data = sock.recv(1 << 20)
        if not data:
            raise SystemExit("the node closed the connection")
        decoder.receive_data(data)
    return decode_payload(payload)


def main(rounds: int) -> None:
    port = free_port()
    proc = start_process([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}"], lambda: port_open(port))
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            decoder = FrameDecoder()
            keys = [b"key-%03d" % i for i in range(BATCH)]
            setup = [pb.Request(id=0, op=pb.CONFIGURE, groups=[pb.GroupConfig(name="bench", policy="lru", max_bytes=64 << 20)])]
            setup += [pb.Request(id=i + 1, op=pb.SET, group="bench", key=k, value=VALUE) for i, k in enumerate(keys)]
            round_trip(sock, decoder, encode_batch(requests=setup))
            gets = encode_batch(requests=[pb.Request(id=i, op=pb.GET, group="bench", key=k) for i, k in enumerate(keys)])

            answer = round_trip(sock, decoder, gets)
            assert [(r.id, r.status, r.value) for r in answer.responses] == [(i, pb.OK, VALUE) for i in range(BATCH)]
            for _ in range(min(1000, rounds)):  # warm-up
                round_trip(sock, decoder, gets)

            latencies = []
            started = time.perf_counter()
            for _ in range(rounds):
                t0 = time.perf_counter()
                round_trip(sock, decoder, gets)
                latencies.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - started
    finally:
        stop_process(proc)

    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"{rounds} round trips of {BATCH} GETs ({len(VALUE)}-byte hits) in {elapsed:.2f}s over loopback")
    print(f"round trips/s: {rounds / elapsed:,.0f}")
    print(f"GET ops/s:     {rounds * BATCH / elapsed:,.0f}")
    print(f"per batch:     p50 {p50 * 1e6:,.0f} us, p99 {p99 * 1e6:,.0f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
