"""Peers of a real node process for the security tests: honest routers (plain, shared secret,
TLS) and hostile ones, over blocking sockets, and a node started with any options."""

from __future__ import annotations

import socket
import ssl

from shared import ringcache_pb2 as pb
from shared.certs import write_all
from shared.framing import FrameDecoder, decode_payload, encode_batch
from shared.gate import ACCEPTED
from shared.handshake import ROUTER, SecretHandshake
from tests.helpers import (  # noqa: F401 (re-exported)
    RINGCACHE,
    Process,
    free_port,
    port_open,
    start_process,
    wait_for,
)

SECRET = b"a shared secret for the tests, long enough"
LOOPBACK = ["localhost", "127.0.0.1", "::1"]


def start_node(*args: str) -> tuple[int, Process]:
    """A node on a free loopback port with ``args``; (port, process)."""
    port = free_port()
    proc = start_process([*RINGCACHE, "node", "--listen", f"127.0.0.1:{port}", *args],
                         lambda: port_open(port))
    return port, proc


def make_certs(directory) -> dict[str, str]:
    """`ringcache certs` into ``directory``; {"ca.pem": path, ...}."""
    directory.mkdir(parents=True, exist_ok=True)
    names = write_all(str(directory), LOOPBACK, LOOPBACK, days=1)
    return {name: str(directory / name) for name in names}


def tls_args(certs: dict[str, str]) -> list[str]:
    return ["--tls-ca", certs["ca.pem"], "--tls-cert", certs["node.pem"], "--tls-key", certs["node.key"]]


def frame(*requests: pb.Request) -> bytes:
    return encode_batch(requests=requests)


GET = pb.Request(id=1, op=pb.GET, group="scores", key=b"Tom")
SET = pb.Request(id=2, op=pb.SET, group="scores", key=b"Tom", value=b"poisoned")
WIPE = pb.Request(id=3, op=pb.CONFIGURE, groups=[pb.GroupConfig(name="x", policy="lru", max_bytes=1)])
CONFIGURE = pb.Request(id=4, op=pb.CONFIGURE,
                       groups=[pb.GroupConfig(name="scores", policy="lru", max_bytes=1 << 20)])


class Peer:
    """A blocking connection that sends frames and reads whole answer frames."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.decoder = FrameDecoder()

    def call(self, *requests: pb.Request) -> list[pb.Response]:
        self.sock.sendall(frame(*requests))
        return self.read_frame()

    def read_frame(self) -> list[pb.Response]:
        while (payload := self.decoder.next_frame()) is None:
            data = self.sock.recv(1 << 16)
            assert data, "the node closed the connection"
            self.decoder.receive_data(data)
        return list(decode_payload(payload).responses)

    def close(self) -> None:
        self.sock.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_all(sock: socket.socket) -> bytes:
    """Everything the other side sends until it closes (a reset counts as closed)."""
    received = b""
    try:
        while data := sock.recv(1 << 16):
            received += data
    except (ConnectionResetError, ssl.SSLError):
        pass
    return received


def secret_handshake(sock: socket.socket, secret: bytes = SECRET) -> bytes:
    """Run the router's side of the handshake; what the node sent after its proof."""
    handshake = SecretHandshake(secret, ROUTER, b"t" * 32)
    sock.sendall(handshake.start())
    while not handshake.done:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the node closed the connection during the handshake")
        answer = handshake.receive_data(data)
        if answer:
            sock.sendall(answer)
    return handshake.leftover


def tls_connect(port: int, ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLSocket:
    """A TLS connection to the node at ``port``, its certificate checked against ``ca``."""
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context.wrap_socket(connect(port), server_hostname="127.0.0.1")


def accepted(sock: socket.socket, already: bytes = b"") -> Peer:
    """Read the node's ACCEPTED word; the peer that can now send frames."""
    received = already
    while len(received) < len(ACCEPTED):
        data = sock.recv(len(ACCEPTED) - len(received))
        if not data:
            raise ConnectionError(f"the node closed the connection after {received!r}")
        received += data
    assert received == ACCEPTED, received
    return Peer(sock)


