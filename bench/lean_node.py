"""A prototype storage node without Twisted: the real Node answering frames from a bare epoll loop.

Usage: python bench/lean_node.py --listen HOST:PORT [--max-memory BYTES]

Each router connection's bytes go through a FrameDecoder; each whole frame is handled
by storage_node.node.Node (``handle_payload``, which answers with one frame), as
``ringcache node`` does on Twisted; the
answers to one read leave in one ``send`` (EPOLLOUT only for a remainder). A connection
that breaks the framing is closed. No stats port, no logging setup. vs_twemproxy.py --lean measures it behind
bench/lean_router.py.
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.backlog import DEFAULT_BACKLOG  # noqa: E402
from shared.framing import FrameDecoder, FrameError  # noqa: E402
from shared.units import parse_size  # noqa: E402
from storage_node.node import Node  # noqa: E402

READ_SIZE = 65536


def serve(host: str, port: int, node: Node) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(DEFAULT_BACKLOG)
    listener.setblocking(False)
    loop = select.epoll()
    loop.register(listener.fileno(), select.EPOLLIN)
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    conns: dict[int, tuple[socket.socket, FrameDecoder]] = {}
    unsent: dict[int, bytes] = {}
    buf = bytearray(READ_SIZE)

    def close(fd: int) -> None:
        sock, _ = conns.pop(fd)
        unsent.pop(fd, None)
        loop.unregister(fd)
        sock.close()
        node.connections -= 1

    try:
        while True:
            for fd, events in loop.poll():
                conn = conns.get(fd)
                if conn is None:
                    if fd == listener.fileno():
                        sock, _ = listener.accept()
                        # One answer frame per request frame: Nagle would hold it.
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sock.setblocking(False)
                        conns[sock.fileno()] = (sock, FrameDecoder())
                        loop.register(sock.fileno(), EPOLLIN)
                        node.connections += 1
                    continue
                sock, decoder = conn
                try:
                    if events & EPOLLOUT:
                        sent = sock.send(unsent[fd])
                        if sent < len(unsent[fd]):
                            unsent[fd] = unsent[fd][sent:]
                        else:
                            del unsent[fd]
                            loop.modify(fd, EPOLLIN)
                    if not events & ~EPOLLOUT:
                        continue
                    n = sock.recv_into(buf)
                    if not n:
                        close(fd)
                        continue
                    decoder.receive_data(buf[:n])
                    out = b"".join(node.handle_payload(payload) for payload in decoder.frames())
                    if fd in unsent:
                        unsent[fd] += out
                    elif out:
                        sent = sock.send(out)
                        if sent < len(out):
                            unsent[fd] = out[sent:]
                            loop.modify(fd, EPOLLIN | EPOLLOUT)
                except BlockingIOError:
                    pass  # level-triggered: the event comes back
                except (OSError, FrameError):
                    close(fd)
    finally:
        for sock, _ in conns.values():
            sock.close()
        listener.close()
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--max-memory", default="1GiB", help="as ringcache node's (default 1GiB)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds out of poll; finally closes
    serve(host, int(port), Node(parse_size(args.max_memory)))


if __name__ == "__main__":
    main()
