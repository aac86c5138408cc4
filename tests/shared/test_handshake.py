"""The shared-secret handshake, sans-I/O: both sides driven by hand, byte by byte too."""

from __future__ import annotations

import pytest

from shared import ringcache_pb2 as pb
from shared.framing import encode_batch
from shared.handshake import (
    HELLO_SIZE,
    MAGIC,
    NODE,
    PROOF_SIZE,
    ROUTER,
    HandshakeError,
    SecretHandshake,
    read_secret,
)
from shared.throttle import LogThrottle
from tests.fakes import FakeClock

SECRET = b"correct horse battery staple"
ROUTER_NONCE, NODE_NONCE = b"r" * 32, b"n" * 32


def pair(router_secret=SECRET, node_secret=SECRET):
    return (SecretHandshake(router_secret, ROUTER, ROUTER_NONCE),
            SecretHandshake(node_secret, NODE, NODE_NONCE))


def feed(side: SecretHandshake, data: bytes, how: str) -> bytes:
    if how == "whole":
        return side.receive_data(data)
    return b"".join(side.receive_data(data[i:i + 1]) for i in range(len(data)))


@pytest.mark.parametrize("how", ["whole", "byte by byte"])
def test_both_sides_prove_themselves_in_four_messages(how):
    router, node = pair()
    assert node.start() == b""  # the node speaks second: a stranger hears nothing
    hello = router.start()
    assert hello == MAGIC + ROUTER_NONCE and len(hello) == HELLO_SIZE
    node_hello = feed(node, hello, how)
    assert node_hello == MAGIC + NODE_NONCE
    router_proof = feed(router, node_hello, how)
    assert len(router_proof) == PROOF_SIZE and not router.done
    node_proof = feed(node, router_proof, how)
    assert len(node_proof) == PROOF_SIZE and node.done
    assert feed(router, node_proof, how) == b"" and router.done
    assert (router.leftover, node.leftover) == (b"", b"")


def test_what_follows_the_handshake_is_left_for_the_protocol():
    router, node = pair()
    router_proof = router.receive_data(node.receive_data(router.start()))
    node_proof = node.receive_data(router_proof + b"first frame")
    assert node.leftover == b"first frame"
    router.receive_data(node_proof + b"ACCEPTED")
    assert router.leftover == b"ACCEPTED"


def test_a_router_with_the_wrong_secret_gets_no_proof_from_the_node():
    router, node = pair(router_secret=b"a wrong secret of some length")
    router_proof = router.receive_data(node.receive_data(router.start()))
    with pytest.raises(HandshakeError, match="^wrong shared secret$"):
        node.receive_data(router_proof)
    assert not node.done


def test_a_node_with_the_wrong_secret_is_refused_by_the_router():
    # An impostor node completes a handshake with a router holding its (wrong) secret, and
    # offers that proof, for the very same nonces, to the real router.
    accomplice, impostor = pair(router_secret=b"a wrong secret of some length",
                                node_secret=b"a wrong secret of some length")
    impostor_proof = impostor.receive_data(
        accomplice.receive_data(impostor.receive_data(accomplice.start())))
    router = SecretHandshake(SECRET, ROUTER, ROUTER_NONCE)
    router.receive_data(MAGIC + NODE_NONCE)
    with pytest.raises(HandshakeError, match="^wrong shared secret$"):
        router.receive_data(impostor_proof)


def test_a_routers_proof_reflected_back_is_not_a_nodes_proof():
    router, node = pair()
    router_proof = router.receive_data(node.receive_data(router.start()))
    with pytest.raises(HandshakeError, match="^wrong shared secret$"):
        router.receive_data(router_proof)


def test_a_recorded_router_handshake_fails_against_a_fresh_node_nonce():
    router, node = pair()
    hello = router.start()
    recorded_proof = router.receive_data(node.receive_data(hello))
    fresh = SecretHandshake(SECRET, NODE, b"m" * 32)
    fresh.receive_data(hello)
    with pytest.raises(HandshakeError, match="^wrong shared secret$"):
        fresh.receive_data(recorded_proof)


@pytest.mark.parametrize("stranger", [
    encode_batch(requests=[pb.Request(id=1, op=pb.GET, group="scores", key=b"Tom")]),
    b"get scores:Tom\r\n",
    b"\x00",
])
def test_a_stranger_is_refused_at_once(stranger):
    node = SecretHandshake(SECRET, NODE, NODE_NONCE)
    with pytest.raises(HandshakeError, match="did not start the ringcache handshake"):
        node.receive_data(stranger)


def test_a_stranger_is_refused_at_its_first_wrong_byte_not_after_a_whole_hello():
    node = SecretHandshake(SECRET, NODE, NODE_NONCE)
    assert node.receive_data(MAGIC[:5]) == b""  # right so far: wait for more
    with pytest.raises(HandshakeError, match="did not start the ringcache handshake"):
        node.receive_data(b"X")


def test_a_nonce_of_the_wrong_size_is_our_bug():
    with pytest.raises(ValueError):
        SecretHandshake(SECRET, NODE, b"short")


def test_secret_from_a_file_is_stripped_and_the_file_wins_over_the_environment(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"  0123456789abcdef\n")
    assert read_secret(str(path), {"RINGCACHE_SECRET": "from-the-environment-xx"}) == b"0123456789abcdef"
    assert read_secret(None, {"RINGCACHE_SECRET": "from-the-environment-xx\n"}) == b"from-the-environment-xx"
    assert read_secret(None, {}) is None
    assert read_secret(None, {"RINGCACHE_SECRET": ""}) is None


def test_a_short_or_missing_secret_is_one_clear_error(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match=rf"^the secret file {path} holds 5 bytes; a shared secret "
                                         r"needs at least 16 \(make one with: "):
        read_secret(str(path), {})
    with pytest.raises(ValueError, match=r"^RINGCACHE_SECRET holds 3 bytes"):
        read_secret(None, {"RINGCACHE_SECRET": "abc"})
    with pytest.raises(ValueError, match=rf"^cannot read the secret file {tmp_path}/nope: No such file"):
        read_secret(str(tmp_path / "nope"), {})


def test_throttle_logs_the_first_event_then_one_line_per_interval_with_the_count():
    clock, lines = FakeClock(0.0), []
    throttle = LogThrottle(lines.append, clock, interval=10)
    assert throttle("refused a") is True
    for i in range(500):
        clock.now += 0.01
        assert throttle(f"refused {i}") is False
    clock.now = 10.0
    assert throttle("refused b") is True
    clock.now = 25.0
    assert throttle("refused c") is True
    assert lines == ["refused a", "refused b (500 more like it in the last 10s not logged)",
                     "refused c"]
