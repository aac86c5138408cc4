"""The floor under a Python router without Twisted: a byte-copying proxy on a bare epoll loop.

Usage: python bench/epoll_floor.py LISTEN_PORT MEMCACHED_PORT [--parse]

Same job as bench/twisted_floor.py: each client connection on 127.0.0.1:LISTEN_PORT gets
its own memcached connection, and every read is sent straight to the other side. Only
the loop differs: level-triggered ``select.epoll`` and non-blocking sockets, one ``recv``
per readable event (edge-triggered would need a second ``recv`` to see EAGAIN), a
``send`` at once, and EPOLLOUT only for a remainder the socket did not take. Like
Twisted's write buffer, a remainder is kept whole: there is no back-pressure.

``--parse`` adds the least a router does per request before it can forward it: split
the client's bytes into lines, hash every key of a ``get``/``gets`` line with mmh3 (as
router/cluster/ring.py does) and forward complete lines only, keeping a partial line for the
next read. Data blocks of storage commands are not skipped by length but split like
lines, which could only cost extra hashing, never change what is forwarded.
vs_twemproxy.py --epoll-floor measures both modes.
"""

from __future__ import annotations

import select
import signal
import socket
import sys

import mmh3

READ_SIZE = 65536


def connect(port: int) -> socket.socket:
    # A blocking connect on loopback completes at once; the socket then joins the loop.
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def hash_get_keys(lines: list[bytes]) -> None:
    for line in lines:
        if line.startswith((b"get ", b"gets ")):
            for key in line.split()[1:]:
                mmh3.hash(key, 0, signed=False)


def serve(listen_port: int, backend_port: int, parse: bool) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(1024)  # memcached's -b, as every ringcache listener (shared/backlog.py)
    listener.setblocking(False)
    loop = select.epoll()
    loop.register(listener.fileno(), select.EPOLLIN)
    links = {}     # fd -> (its socket, the other side's socket and fd, is it a client?)
    unsent = {}    # fd -> bytes its socket has not taken yet
    partial = {}   # client fd -> an incomplete last line (--parse only)
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT

    def send(sock: socket.socket, fd: int, data) -> None:
        """Send ``data`` now; what the socket does not take waits for EPOLLOUT."""
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            if fd not in unsent:
                loop.modify(fd, EPOLLIN | EPOLLOUT)
            unsent[fd] = bytes(data[sent:])
        elif fd in unsent:
            del unsent[fd]
            loop.modify(fd, EPOLLIN)

    def close_pair(fd: int) -> None:
        sock, other, other_fd, _ = links.pop(fd)
        del links[other_fd]
        for s, f in ((sock, fd), (other, other_fd)):
            unsent.pop(f, None)
            partial.pop(f, None)
            loop.unregister(f)
            s.close()

    def accept() -> None:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        backend = connect(backend_port)
        links[client.fileno()] = (client, backend, backend.fileno(), True)
        links[backend.fileno()] = (backend, client, client.fileno(), False)
        loop.register(client, EPOLLIN)
        loop.register(backend, EPOLLIN)

    try:
        while True:
            for fd, events in loop.poll():
                link = links.get(fd)
                if link is None:
                    if fd == listener.fileno():
                        accept()
                    continue  # else its pair was closed earlier in this batch
                sock, other, other_fd, is_client = link
                try:
                    if events & EPOLLOUT:
                        send(sock, fd, unsent[fd])
                    if not events & ~EPOLLOUT:
                        continue
                    n = sock.recv_into(buf)
                    if not n:
                        close_pair(fd)
                        continue
                    data = view[:n]
                    if parse and is_client:
                        data = partial.pop(fd, b"") + data
                        lines, _, rest = data.rpartition(b"\r\n")
                        if rest:
                            partial[fd] = rest
                            data = data[:len(data) - len(rest)]
                        hash_get_keys(lines.split(b"\r\n"))
                    if other_fd in unsent:
                        unsent[other_fd] += data
                    elif data:
                        send(other, other_fd, data)
                except BlockingIOError:
                    pass  # level-triggered: the event comes back
                except OSError:
                    close_pair(fd)
    finally:
        for sock, _, _, _ in list(links.values()):
            sock.close()
        listener.close()
        loop.close()


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--parse"]
    listen_port, backend_port = int(args[0]), int(args[1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds out of poll; finally closes
    serve(listen_port, backend_port, "--parse" in sys.argv[1:])


if __name__ == "__main__":
    main()
