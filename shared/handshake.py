"""Sans-I/O shared-secret handshake between a router and a node: each proves it knows the
secret (HMAC-SHA256 over both sides' fresh nonces) before the node reads a request.

    router -> node   HELLO(router nonce)
    node -> router   HELLO(node nonce)             (once a whole HELLO came in)
    router -> node   PROOF(router)
    node -> router   PROOF(node)                   (only once the router's PROOF checked out)

The node speaks second and proves itself only to a peer that did, so a stranger gets no
byte at all (it is cut off at its first byte that is not a HELLO) and a peer without the
secret gets a random nonce and nothing more. Each proof names its role, so a node's proof
is never taken for a router's, and covers both nonces, so no recorded handshake is valid
twice. This authenticates the connection only: the frames that follow are neither
encrypted nor MACed, and someone who can rewrite traffic in flight can take over an
authenticated connection (use TLS for that).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

MAGIC = b"RCAUTH1\n"  # read as a frame length by a node without a secret: far over MAX_FRAME
NONCE_SIZE = 32
HELLO_SIZE = len(MAGIC) + NONCE_SIZE
PROOF_SIZE = hashlib.sha256().digest_size
MIN_SECRET = 16  # bytes: shorter secrets fall to an offline guess from one recorded handshake
SECRET_ENV = "RINGCACHE_SECRET"

ROUTER, NODE = "router", "node"
_LABEL = {ROUTER: b"ringcache router proof", NODE: b"ringcache node proof"}


class HandshakeError(Exception):
    """The peer did not prove it knows the secret; the message says how it failed."""


class SecretHandshake:
    """One side of the handshake. ``start()`` is what to send at connect; feed what arrives
    to ``receive_data``, which answers what to send next. When ``done``, ``leftover`` holds
    whatever the peer sent after the handshake."""

    def __init__(self, secret: bytes, role: str, nonce: bytes):
        if role not in _LABEL:
            raise ValueError(f"role must be {ROUTER!r} or {NODE!r}, got {role!r}")
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
        self.role = role
        self.done = False
        self.leftover = b""
        self._secret = secret
        self._nonce = nonce
        self._peer_nonce: bytes | None = None
        self._buf = b""

    def start(self) -> bytes:
        """What to send at connect: the router's HELLO; nothing for the node."""
        return self._hello() if self.role == ROUTER else b""

    def _hello(self) -> bytes:
        return MAGIC + self._nonce

    def receive_data(self, data: bytes) -> bytes:
        """What to send in answer to ``data`` (often nothing); raises HandshakeError."""
        if self.done:
            raise RuntimeError("the handshake is over; pass further data to the protocol")
        self._buf += data
        out = b""
        if self._peer_nonce is None:
            # Refuse a stranger (a frame, an HTTP request) at its first wrong byte rather
            # than waiting for a whole HELLO that will never come.
            if MAGIC[:len(self._buf)] != self._buf[:len(MAGIC)]:
                raise HandshakeError("it did not start the ringcache handshake "
                                     "(no shared secret configured on its side?)")
            if len(self._buf) < HELLO_SIZE:
                return b""
            self._peer_nonce = self._buf[len(MAGIC):HELLO_SIZE]
            self._buf = self._buf[HELLO_SIZE:]
            out = self._proof(ROUTER) if self.role == ROUTER else self._hello()
        if len(self._buf) < PROOF_SIZE:
            return out
        peer = NODE if self.role == ROUTER else ROUTER
        if not hmac.compare_digest(self._buf[:PROOF_SIZE], self._proof(peer)):
            raise HandshakeError("wrong shared secret")
        self.leftover = self._buf[PROOF_SIZE:]
        self._buf = b""
        self.done = True
        if self.role == NODE:
            out += self._proof(NODE)
        return out

    def _proof(self, role: str) -> bytes:
        # The prover's label, then the verifier's nonce (its challenge), then the prover's.
        mine = role == self.role
        challenge, own = (self._peer_nonce, self._nonce) if mine else (self._nonce, self._peer_nonce)
        return hmac.new(self._secret, _LABEL[role] + challenge + own, hashlib.sha256).digest()


def read_secret(path: str | None, environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The shared secret from the file at ``path``, else from RINGCACHE_SECRET, else None.

    Surrounding whitespace is dropped (a file ends in a newline). Raises ValueError with one
    line saying what is wrong: unreadable, empty, or too short.
    """
    if path is not None:
        try:
            with open(path, "rb") as f:
                secret = f.read(1 << 16).strip()
        except OSError as exc:
            raise ValueError(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
        where = f"the secret file {path}"
    elif environ.get(SECRET_ENV):
        secret = environ[SECRET_ENV].strip().encode()
        where = SECRET_ENV
    else:
        return None
    if len(secret) < MIN_SECRET:
        raise ValueError(f"{where} holds {len(secret)} bytes; a shared secret needs at least "
                         f"{MIN_SECRET} (make one with: head -c 32 /dev/urandom | base64)")
    return secret
