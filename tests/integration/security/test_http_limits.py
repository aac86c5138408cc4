"""HTTP bounds against a real router and nodes, over raw sockets: the 2 GiB PUT, the chunked
PUT past the cap, the half-sent request, the slow-loris head, the long URL and the
connection flood of issues 11 and 13, each answered with its status and closed."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from tests.helpers import rss_bytes
from tests.integration.cluster import GROUPS, Cluster
from tests.integration.servers import CLOCK_SLACK, wait_for

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT = 1.0  # seconds, limits.command_timeout below
MAX_CONNECTIONS = 8
LIMITS = f"limits: {{command_timeout: 1s, max_connections: {MAX_CONNECTIONS}}}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("limits"), nodes=1, groups=GROUPS + LIMITS).start()
    yield c
    c.stop()


def connect(cluster) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", cluster.http_port), timeout=10)
    return sock


def read_response(sock) -> tuple[int, dict, bytes]:
    """Status, headers and body of one response (the router sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(status.split()[1]), headers, body


def closed_within(sock, seconds: float) -> bool:
    """Whether the peer closes ``sock`` within ``seconds`` (what arrives meanwhile is dropped)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_a_put_announcing_2_gib_is_413_at_once_and_the_router_does_not_grow(cluster):
    before = rss_bytes(cluster.router.pid) // 1024
    sock = connect(cluster)
    started = time.monotonic()
    sock.sendall(b"PUT /v1/sessions/big HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 2147483648\r\n\r\n")
    status, headers, body = read_response(sock)
    assert time.monotonic() - started < 1.0
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "value of 2147483648 bytes is over the item limit of "
                                         "1048576"}
    # The client sends its body anyway: it is dropped, not kept.
    sent = 0
    try:
        while sent < 256 << 20:
            sock.sendall(b"x" * (1 << 20))
            sent += 1 << 20
    except OSError:
        pass  # the router closes the connection after a short drain
    sock.close()
    assert sent >= 1 << 20
    assert rss_bytes(cluster.router.pid) // 1024 - before < 32 << 10
    assert cluster.http("GET", "/v1/sessions/big")[0] == 404


def test_a_chunked_put_past_the_item_limit_is_413_and_closed(cluster):
    sock = connect(cluster)
    sock.sendall(b"PUT /v1/sessions/chunked HTTP/1.1\r\nHost: x\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 << 10, b"c" * (64 << 10))
    for _ in range(17):  # 1088 KiB, past the 1 MiB limit
        sock.sendall(chunk)
    status, _, body = read_response(sock)
    assert status == 413
    # Counted as it arrives: refused with the first read that takes it past the limit.
    error = re.fullmatch(r"value of at least (\d+) bytes is over the item limit of 1048576",
                         json.loads(body)["error"])
    assert 1 << 20 < int(error[1]) <= 17 * (64 << 10)
    assert closed_within(sock, 5)
    assert cluster.http("GET", "/v1/sessions/chunked")[0] == 404


def test_a_request_that_sends_less_than_its_content_length_is_408_after_the_timeout(cluster):
    started = time.monotonic()  # before the connection, which the router may time from
    sock = connect(cluster)
    sock.sendall(b"PUT /v1/sessions/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                 + b"h" * 10)
    status, headers, body = read_response(sock)
    waited = time.monotonic() - started
    assert COMMAND_TIMEOUT - CLOCK_SLACK <= waited < COMMAND_TIMEOUT + 1.5
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "the request was not complete within 1s"}
    assert closed_within(sock, 3)
    assert cluster.http("GET", "/v1/sessions/half")[0] == 404


def test_a_slow_loris_head_is_closed_after_the_timeout(cluster):
    started = time.monotonic()  # before the connection, which the router may time from
    sock = connect(cluster)
    sock.sendall(b"GET /v1/scores/k HTTP/1.1\r\n")
    for _ in range(3):
        sock.sendall(b"X")  # a header trickled a byte at a time
        time.sleep(0.2)
    assert read_response(sock)[0] == 408
    assert COMMAND_TIMEOUT - CLOCK_SLACK <= time.monotonic() - started < COMMAND_TIMEOUT + 1.5
    assert closed_within(sock, 3)


def test_a_url_over_16_kib_is_414(cluster):
    sock = connect(cluster)
    sock.sendall(b"GET /v1/scores/" + b"k" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_response(sock)
    assert (status, json.loads(body)) == (414, {"error": "the request line is over the limit "
                                                         "of 16384 bytes"})
    assert closed_within(sock, 3)
    assert cluster.http("GET", "/v1/scores/" + "k" * 10_000)[0] == 200  # under it, served


def test_connections_past_the_cap_get_503_and_a_few_log_lines(cluster):
    held = [connect(cluster) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each is accepted and served; it stays open (keep-alive)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
        for _ in range(50):
            sock = connect(cluster)
            status, _, body = read_response(sock)
            assert (status, json.loads(body)) == (503, {"error": "too many connections "
                                                                 f"(limit {MAX_CONNECTIONS})"})
            sock.close()
    finally:
        for sock in held:
            sock.close()
    log = cluster.router.read_stderr()
    assert 1 <= log.count("refused a connection over the limit of 8") <= 2
    # Once the held connections are gone the router serves new ones again.
    assert wait_for(lambda: cluster.http("GET", "/healthz")[0] == 200, timeout=5)
