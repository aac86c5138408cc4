"""Store the users the Redis example reads (SET user:NAME JSON), speaking RESP over a socket."""

from __future__ import annotations

import json
import socket
import sys
from urllib.parse import urlsplit

USERS = {"Tom": {"name": "Tom", "score": 630}, "Jack": {"name": "Jack", "score": 589}}


def command(sock: socket.socket, *args: bytes) -> bytes:
    sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args))
    reply = sock.recv(4096)
    if reply.startswith(b"-"):
        raise SystemExit(f"redis said: {reply.decode().strip()}")
    return reply


def seed(url: str) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379)) as sock:
        if parts.password:
            command(sock, b"AUTH", (parts.username or "default").encode(), parts.password.encode())
        command(sock, b"SELECT", (parts.path.lstrip("/") or "0").encode())
        for name, user in USERS.items():
            command(sock, b"SET", f"user:{name}".encode(), json.dumps(user).encode())


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
    seed(url)
    print(f"{url}: {len(USERS)} users")
