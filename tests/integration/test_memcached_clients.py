"""Third-party memcached clients and tools against a real router and real nodes, with a
real memcached 1.6 beside it: whatever memcached passes, the router must pass too.

Needs Debian's memcached and libmemcached-tools (`make system-deps`) and the clients of
pyproject's test extra (pylibmc, python-memcached, pymemcache).
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess

import memcache as python_memcached
import pylibmc
import pytest
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient

from router.memcache import binary as mb
from tests.helpers import free_port, port_open, start_process, stop_process
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

# Plain cache groups, as memcached is; "loaded" reads through, to show clients get it too.
GROUPS = """
groups:
  scores: {}
  sessions: {}
  loaded:
    source: {python: sources_for_tests:value}
"""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: run `make system-deps` as root (Debian: memcached, " \
                 "libmemcached-tools)"
    return path


@pytest.fixture(scope="module")
def memcached_port():
    port = free_port()
    proc = start_process([_need("memcached"), "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                          "-u", "nobody", "-m", "64"], lambda: port_open(port))
    yield port
    stop_process(proc)


@pytest.fixture(scope="module")
def router_port(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("clients"), groups=GROUPS).start()
    yield cluster.memcache_port
    cluster.stop()


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([_need(args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=timeout)


def memccapable(port: int, mode: str) -> dict[str, str]:
    """{test name: "pass", "FAIL" or "skip"} of one memccapable run (names go to stdout and
    marks to stderr, so the two are read from one pipe, in the order written)."""
    done = subprocess.run([_need("memccapable"), "-h", "127.0.0.1", "-p", str(port), mode,
                           "-t", "5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    return dict(re.findall(r"((?:ascii|binary) [a-z ]+?)[ \t]+\[(pass|FAIL|skip)\]",
                           done.stdout))


@pytest.mark.parametrize("mode", ["-a", "-b"])
def test_memccapable_passes_on_the_router_whatever_passes_on_memcached(
        memcached_port, router_port, mode):
    reference = memccapable(memcached_port, mode)
    passed = {name for name, mark in reference.items() if mark == "pass"}
    assert len(passed) >= 25, reference  # the suite really ran against memcached
    ours = memccapable(router_port, mode)
    assert {name for name in passed if ours.get(name) != "pass"} == set(), ours


def test_libmemcached_tools(router_port):
    servers = f"--servers=127.0.0.1:{router_port}"
    assert run("memcping", servers).returncode == 0
    stat = run("memcstat", servers)
    assert stat.returncode == 0, stat.stderr
    assert re.search(r"^\s+version: 1\.6\.21$", stat.stdout, re.MULTILINE), stat.stdout
    assert re.search(r"^\s+curr_items: \d+$", stat.stdout, re.MULTILINE), stat.stdout
    client = Client(("127.0.0.1", router_port), timeout=5)
    client.set("sessions:before-flush", b"x", noreply=False)
    assert run("memcflush", servers).returncode == 0
    assert client.get("sessions:before-flush") is None
    for test in ("set", "get"):
        slap = run("memcslap", servers, "--concurrency=2", "--execute-number=100",
                   f"--test={test}")
        assert slap.returncode == 0, slap.stdout + slap.stderr
    assert run("memcstat", servers, "--binary").returncode == 0
    assert run("memcflush", servers, "--binary").returncode == 0


def _outcome(call):
    try:
        return call()
    except Exception as exc:  # the client's own exception is part of what it saw
        return type(exc).__name__


def pylibmc_session(port: int, binary: bool) -> list:
    c = pylibmc.Client([f"127.0.0.1:{port}"], binary=binary, behaviors={"cas": True})
    out = [c.flush_all(), c.set("a", "1"), c.get("a"), c.incr("a", 5), c.decr("a", 9),
           c.get("a")]
    c.set("b", b"x")
    out += [c.append("b", b"y"), c.prepend("b", b"w"), c.get("b")]
    out += [_outcome(lambda: c.add("b", "z")), _outcome(lambda: c.replace("nokey", "v")),
            c.delete("b"), c.get("b"), _outcome(lambda: c.delete("b"))]
    c.set_multi({"m1": 1, "m2": "two", "m3": b"\x00\xff" * 1000})
    out.append(c.get_multi(["m1", "m2", "m3", "none"]))
    _, cas = c.gets("m2")
    out += [c.cas("m2", "three", cas), c.cas("m2", "four", cas), c.get("m2")]
    out += [c.set("big", b"v" * 500_000), len(c.get("big")), _outcome(lambda: c.touch("m2", 100))]
    # Last: after these, libmemcached's binary mode marks the server failed for a while
    # (UnknownReadFailure, then ServerDown), on memcached as on the router.
    out += [_outcome(lambda: c.incr("m2")), _outcome(lambda: c.incr("nokey"))]
    return out


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_pylibmc_sees_what_it_sees_on_memcached(memcached_port, router_port, binary):
    assert pylibmc_session(router_port, binary) == pylibmc_session(memcached_port, binary)


def python_memcached_session(port: int) -> list:
    m = python_memcached.Client([f"127.0.0.1:{port}"], cache_cas=True)
    m.flush_all()
    out = [m.set("pm", 5), m.incr("pm"), m.decr("pm", 30), m.get("pm"), m.incr("nokey")]
    out += [m.add("pm", 1), m.replace("pm", "r"), m.get("pm"), m.append("pm", "s"),
            m.prepend("pm", "q"), m.get("pm")]
    out += [m.gets("pm"), m.cas("pm", "c"), m.cas("pm", "d"), m.get("pm")]
    m.set("other", "o")
    out.append(m.gets("other"))
    m.set("other", "changed")  # a write between gets and cas
    out += [m.cas("other", "lost"), m.get("other"), m.touch("other", 60), m.delete("other"),
            m.get_multi(["pm", "other"]), m.set_multi({"x": 1, "y": 2}),
            sorted(m.get_multi(["x", "y"]).items())]
    stats = m.get_stats()[0][1]
    out.append(sorted(k for k in ("curr_items", "get_hits", "cmd_get", "version") if k in stats))
    return out


def test_python_memcached_sees_what_it_sees_on_memcached(memcached_port, router_port):
    assert python_memcached_session(router_port) == python_memcached_session(memcached_port)


def pymemcache_session(client) -> list:
    out = [client.flush_all(noreply=False), client.set("x", "1", noreply=False),
           client.incr("x", 2), client.decr("x", 10), client.get("x")]
    value, cas = client.gets("x")
    out += [value, client.cas("x", "9", cas, noreply=False),
            client.cas("x", "10", cas, noreply=False), client.get("x")]
    client.set("y", "abc")  # noreply by default: the next answer must still be its own
    out += [client.touch("y", 10, noreply=False), client.append("y", "d", noreply=False),
            client.prepend("y", "<", noreply=False), client.get("y"),
            client.add("y", "z", noreply=False), client.replace("nope", "z", noreply=False),
            client.delete("y", noreply=False), client.delete("y", noreply=False),
            client.get_many(["x", "y", "nope"]), client.incr("nope", 1), client.flush_all(),
            client.get("x")]
    return out


@pytest.mark.parametrize("kind", ["Client", "HashClient", "PooledClient"])
def test_pymemcache_sees_what_it_sees_on_memcached(memcached_port, router_port, kind):
    def make(port):
        address = ("127.0.0.1", port)
        if kind == "HashClient":
            return HashClient([address], timeout=5)
        return (Client if kind == "Client" else PooledClient)(address, timeout=5)

    assert pymemcache_session(make(router_port)) == pymemcache_session(make(memcached_port))


def test_clients_read_through_the_router(router_port):
    # A loaded value has flags 0: raw bytes to pylibmc, text to python-memcached.
    assert pylibmc.Client([f"127.0.0.1:{router_port}"]).get("loaded:k1") == b"value-of-k1"
    assert pylibmc.Client([f"127.0.0.1:{router_port}"], binary=True).get(
        "loaded:k2") == b"value-of-k2"
    assert python_memcached.Client([f"127.0.0.1:{router_port}"]).get(
        "loaded:k3") in (b"value-of-k3", "value-of-k3")


def session(port: int, data: bytes) -> bytes:
    """Everything the server answers to ``data`` then ``mn`` (whose MN ends the answers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data + b"mn\r\n")
        out = b""
        while not out.endswith(b"MN\r\n"):
            chunk = sock.recv(65536)
            assert chunk, out
            out += chunk
    return out


# Commands whose answers hold no CAS unique (those differ from server to server), each
# answered byte for byte as memcached answers it.
TEXT_SESSION = (
    b"flush_all\r\nset n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n x\r\n"
    b"incr none 1\r\nincr n 1 noreply\r\nincr n 18446744073709551615\r\nget n\r\n"
    b"set s 5 0 1\r\na\r\nappend s 9 0 1\r\nb\r\nprepend s 0 0 1\r\nc\r\nget s\r\n"
    b"append none 0 0 1\r\nx\r\ncas none 0 0 1 5\r\nx\r\ncas s 0 0 1 5\r\nx\r\n"
    b"touch s 100\r\ntouch none 1\r\ngat 100 s none s\r\ngat 10\r\ngat\r\n"
    b"incr s 1\r\nverbosity 1\r\nverbosity 1 noreply\r\nverbosity\r\n"
    b"cache_memlimit\r\nflush_all x\r\nstats noreply\r\nstats detail\r\n"
    b"set gone 0 -1 1\r\nx\r\nget gone\r\nflush_all noreply\r\nget s n\r\n"
    b"delete s noreply x\r\nincr\r\ntouch s\r\n"
)

LONG_KEY = b"k" * 251
# Error words and numbers: over-long keys, bad and odd numbers (signs, past 32 bits), the
# data block of a refused store read as a command, memcached's cache_memlimit answers
# and the stats subcommands whose answers hold no server-specific numbers.
WORDS_SESSION = (
    b"flush_all\r\nset " + LONG_KEY
    + b" 0 0 1\r\nz\r\ndelete " + LONG_KEY + b"\r\nincr " + LONG_KEY + b" 1\r\ntouch "
    + LONG_KEY + b" 1\r\ncas " + LONG_KEY + b" 0 0 1 1\r\nz\r\n"
    b"set a x 0 1\r\nz\r\nset a 0 x 1\r\nz\r\nset a -1 0 1\r\nz\r\ncas a 0 0 1 x\r\nz\r\n"
    b"set a 0 x 1 noreply\r\nz\r\nset a +5 +0 +1\r\n1\r\nget a\r\nincr a +1\r\n"
    b"set b 4294967297 0 1\r\nz\r\nget b\r\nincr b 1 x\r\nverbosity +1\r\n"
    b"cache_memlimit 50\r\ncache_memlimit 7\r\ncache_memlimit 2000000000\r\n"
    b"cache_memlimit x\r\ncache_memlimit 64 noreply\r\nstats reset\r\nstats sizes\r\n"
    b"stats cachedump\r\nstats cachedump 1\r\nstats cachedump x 1\r\n"
    b"stats cachedump 99 1\r\nstats detail on\r\nstats detail dump\r\nstats detail off\r\n"
    b"stats nonsense\r\nlru_crawler\r\nms " + LONG_KEY + b" 1\r\nz\r\nmg " + LONG_KEY
    + b" v\r\nms a -1\r\nz\r\n"
)

META_SESSION = (
    b"flush_all\r\nms mk 2 T0 F7\r\nhi\r\nmg mk v f t s k O99\r\nmg mk\r\nmg none v\r\n"
    b"mg none v q\r\nms mk 2 ME\r\nyo\r\nms none 2 MA\r\nyo\r\nms none 2 C5\r\nyo\r\n"
    b"ms mk 2 q\r\nyo\r\nmd none\r\nmd none q\r\nma cnt N0 J5 v\r\nma cnt MD D2 v\r\n"
    b"ma cnt q\r\nma mk\r\nmg mk X\r\nmg mk v v\r\nms mk 2 MZ\r\nhi\r\nmg mk k v\r\n"
    b"ms aGk= 2 b k\r\nyo\r\nmg aGk= b k v\r\nmd mk q\r\nmg mk v\r\nmg\r\nma nope\r\n"
)


# memcached's anti-stampede flags: mg N (vivify), R (win a recache), T; the W, X and Z they
# answer; md I (mark stale) with T; ms I (an older CAS unique stores the item stale). A t
# is asked for only where the command itself just set the ttl, so that no second ticks
# between two commands. C1 is older than any item's CAS unique: items were stored before.
STAMPEDE_SESSION = (
    b"flush_all\r\nms a1 1 T5\r\nx\r\nms a2 1 T5\r\nx\r\nms a 2 T100\r\nhi\r\n"
    b"mg a v R200\r\nmg a v R200 s\r\nmg a R50 k\r\nms b 1 T100\r\nx\r\nmd b I T30\r\n"
    b"mg b v T30 t\r\nmg b v\r\nget b\r\nms b 2 I C1\r\nqq\r\nmg b v\r\nms b 2\r\nok\r\n"
    b"mg b v\r\nmg viv N30 v t\r\nmg viv N30 v t\r\nmg viv2 t N30\r\nmd none I\r\n"
    b"ms c 1\r\nx\r\nmg c R200 v\r\nms e 1 T100\r\ne\r\nmd e I q\r\nmg e v\r\n"
    b"mg q1 N5 q\r\nmg q1 v q k\r\nmg nope v q\r\nmd b I C1\r\nms nope 2 I C1\r\nzz\r\n"
    b"mg a T60 R50 t\r\n"
)


# A get, gets or gat of a key too long: alone on its connection, since memcached drops
# the answers still unsent of the commands before it (conn_release_items), which the
# router does not (docs/memcached.md).
LONG_GETS = [b"get " + LONG_KEY + b"\r\n", b"gets a " + LONG_KEY + b"\r\n",
             b"gat 1 a " + LONG_KEY + b"\r\n"]


@pytest.mark.parametrize("data", [TEXT_SESSION, WORDS_SESSION, META_SESSION, STAMPEDE_SESSION,
                                  *LONG_GETS],
                         ids=["text", "words", "meta", "stampede", "get-long", "gets-long",
                              "gat-long"])
def test_answers_are_memcacheds_byte_for_byte(memcached_port, router_port, data):
    assert session(router_port, data) == session(memcached_port, data)




def _request(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
             opaque: int = 0) -> bytes:
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body),
                       opaque, 0) + body


def binary_session(port: int, data: bytes) -> list:
    """The answers to binary requests ``data`` then a noop (whose answer ends them), as
    (opcode, status, opaque, extras, key, value, CAS given): CAS uniques differ between
    servers, so only whether there is one is compared."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data + _request(mb.NOOP, opaque=0xFFFF))
        out, packets = b"", []
        while not packets or packets[-1][:3] != (mb.NOOP, 0, 0xFFFF):
            while len(out) < 24 or len(out) < 24 + struct.unpack_from(">I", out, 8)[0]:
                chunk = sock.recv(65536)
                assert chunk, (packets, out)
                out += chunk
            _, opcode, keylen, extlen, _, status, bodylen, opaque, cas = struct.unpack_from(
                ">BBHBBHIIQ", out)
            body, out = out[24:24 + bodylen], out[24 + bodylen:]
            packets.append((opcode, status, opaque, body[:extlen],
                            body[extlen:extlen + keylen], body[extlen + keylen:], cas != 0))
    return packets


_STORE = struct.pack(">II", 5, 0)


def _arith(delta: int, initial: int, exptime: int = 0) -> bytes:
    return struct.pack(">QQI", delta, initial, exptime)


# Quiet commands between loud ones, each with its own opaque so that any answer missing,
# extra or out of place shows; a STAT with a key in the middle (detail on, detail dump,
# reset) must leave the connection's binary protocol working, as on memcached.
BINARY_SESSION = b"".join([
    _request(mb.FLUSH, opaque=1),
    _request(mb.SETQ, b"a", _STORE, b"one", opaque=2),
    _request(mb.SETQ, b"b", _STORE, b"two", opaque=3),
    _request(mb.GETQ, b"a", opaque=4),
    _request(mb.GETKQ, b"missing", opaque=5),
    _request(mb.GETK, b"b", opaque=6),
    _request(mb.STAT, b"detail on", opaque=7),
    _request(mb.DELETEQ, b"b", opaque=8),
    _request(mb.GETQ, b"b", opaque=9),
    _request(mb.DELETEQ, b"b", opaque=10),  # a miss: answered, quiet or not
    _request(mb.INCRQ, b"n", extras=_arith(1, 10), opaque=11),
    _request(mb.INCR, b"n", extras=_arith(5, 0), opaque=12),
    _request(mb.DECRQ, b"n", extras=_arith(100, 0), opaque=13),
    _request(mb.GET, b"n", opaque=14),
    _request(mb.INCRQ, b"a", extras=_arith(1, 0), opaque=15),  # not a number: answered
    _request(mb.STAT, b"detail dump", opaque=16),
    _request(mb.APPENDQ, b"a", value=b"+", opaque=17),
    _request(mb.PREPENDQ, b"a", value=b"-", opaque=18),
    _request(mb.GETKQ, b"a", opaque=19),
    _request(mb.ADDQ, b"a", _STORE, b"x", opaque=20),  # exists: answered
    _request(mb.REPLACEQ, b"zz", _STORE, b"x", opaque=21),  # missing: answered
    _request(mb.ADDQ, b"c", _STORE, b"new", opaque=22),
    _request(mb.STAT, b"reset", opaque=23),
    _request(mb.STAT, b"detail off", opaque=24),
    _request(mb.STAT, b"nonsense", opaque=25),
    _request(mb.TOUCH, b"c", struct.pack(">I", 100), opaque=26),
    _request(mb.GATQ, b"c", struct.pack(">I", 100), opaque=27),
    _request(mb.GATKQ, b"none", struct.pack(">I", 100), opaque=28),
    _request(mb.GAT, b"none", struct.pack(">I", 100), opaque=29),
    _request(mb.GET, b"c", opaque=30),
    _request(mb.FLUSHQ, opaque=31),
    _request(mb.GETQ, b"a", opaque=32),
    _request(mb.GET, b"a", opaque=33),
])


def test_binary_connection_of_quiet_and_loud_commands_is_memcacheds(memcached_port,
                                                                      router_port):
    theirs = binary_session(memcached_port, BINARY_SESSION)
    assert len(theirs) > 20  # memcached answered it through to the end
    assert binary_session(router_port, BINARY_SESSION) == theirs


def closed_unanswered(port: int, data: bytes) -> bytes:
    """What the server sends to ``data`` before it closes the connection (it must)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("request_line", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"POST /submit HTTP/1.0\r\n\r\nset a 0 0 1",
    b"PUT /x HTTP/1.1\r\n", b"DELETE /x HTTP/1.1\r\nversion\r\n"])
def test_a_request_line_of_http_closes_the_connection_as_on_memcached(
        memcached_port, router_port, request_line):
    data = request_line + b"\r\nversion\r\n"
    assert closed_unanswered(router_port, data) == closed_unanswered(memcached_port, data) == b""


def test_mg_t_answers_the_seconds_left_as_on_memcached(memcached_port, router_port):
    # The seconds left of a key set with a ttl of 3600 (not -1): read from either
    # server, a second may tick between the set and the mg.
    for port in (memcached_port, router_port):
        answer = session(port, b"set ttl3600 0 3600 1\r\nx\r\nmg ttl3600 t v\r\n"
                               b"set forever 0 0 1\r\nx\r\nmg forever t\r\n")
        ttl = re.search(rb"^VA 1 t(\d+)\r\nx\r\n", answer.split(b"STORED\r\n")[1], re.M)
        assert ttl and 3598 <= int(ttl.group(1)) <= 3600, answer
        assert answer.endswith(b"STORED\r\nHD t-1\r\nMN\r\n"), answer
