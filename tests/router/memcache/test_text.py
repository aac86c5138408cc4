"""Tests for the sans-I/O memcached text-protocol parser and its answer encoders."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.memcache.text import (
    DELETED,
    END,
    ERROR,
    EXISTS,
    EXPIRED,
    MAX_GET_LINE,
    NOT_FOUND,
    NOT_STORED,
    STORED,
    TOUCHED,
    Admin,
    Arith,
    ClientError,
    Close,
    Delete,
    FlushAll,
    Get,
    GetAndTouch,
    MemcacheParser,
    Metadump,
    Quit,
    ServerError,
    Stats,
    Store,
    Touch,
    Unknown,
    Version,
    Watch,
    client_error,
    exptime_to_ttl,
    server_error,
    stat_lines,
    value_line,
    version_line,
)

TRAILER = b"version\r\n"
BAD_FORMAT_TEXT = "bad command line format"
BAD_FORMAT = ClientError(BAD_FORMAT_TEXT)
DELETE_USAGE = "bad command line format.  Usage: delete <key> [noreply]"
TOO_LARGE = "object too large for cache"
KEY_250 = b"k" * 250
KEY_251 = b"k" * 251


def parse_whole(data: bytes, **options) -> list:
    parser = MemcacheParser(**options)
    parser.receive_data(data)
    events = list(parser.events())
    assert parser.buffered == 0
    return events


def parse_chunks(chunks, **options) -> list:
    parser = MemcacheParser(**options)
    events = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events.extend(parser.events())
    assert parser.buffered == 0
    return events


def assert_parses(data: bytes, expected: list, **options) -> None:
    """The h11 trio: whole buffer, one byte at a time, and followed by another command."""
    assert parse_whole(data, **options) == expected
    assert parse_chunks([data[i:i + 1] for i in range(len(data))], **options) == expected
    assert parse_whole(data + TRAILER, **options) == expected + [Version()]


def store(command, key, value, flags=0, exptime=0, noreply=False, cas_unique=None):
    return Store(command, key, flags, exptime, value, noreply, cas_unique)


CASES = {
    # retrieval
    "get": (b"get foo\r\n", [Get((b"foo",), False)]),
    "gets": (b"gets foo\r\n", [Get((b"foo",), True)]),
    "get many": (b"get a b c\r\n", [Get((b"a", b"b", b"c"), False)]),
    "get bare newline": (b"get foo\n", [Get((b"foo",), False)]),
    "get runs of spaces": (b"get  a   b \r\n", [Get((b"a", b"b"), False)]),
    "get longest key": (b"get " + KEY_250 + b"\r\n", [Get((KEY_250,), False)]),
    "get utf-8 key": (b"get caf\xc3\xa9\r\n", [Get((b"caf\xc3\xa9",), False)]),
    "get no key": (b"get\r\n", [Unknown(b"get")]),
    "get only spaces": (b"get   \r\n", [Unknown(b"get")]),
    "get key too long": (b"get a " + KEY_251 + b"\r\n", [BAD_FORMAT]),
    "get key with tab": (b"get a\tb\r\n", [ClientError("invalid key")]),
    "get key with control": (b"get a\x01b\r\n", [ClientError("invalid key")]),
    "get key with DEL": (b"get a\x7f\r\n", [ClientError("invalid key")]),
    "get key with CR": (b"get a\r\r\n", [ClientError("invalid key")]),
    # storage
    "set": (b"set k 5 100 3\r\nabc\r\n", [store("set", b"k", b"abc", flags=5, exptime=100)]),
    "add": (b"add k 0 0 1\r\nx\r\n", [store("add", b"k", b"x")]),
    "replace": (b"replace k 0 0 1\r\nx\r\n", [store("replace", b"k", b"x")]),
    "append": (b"append k 0 0 1\r\nx\r\n", [store("append", b"k", b"x")]),
    "prepend": (b"prepend k 0 0 1\r\nx\r\n", [store("prepend", b"k", b"x")]),
    "set noreply": (b"set k 0 0 1 noreply\r\nx\r\n", [store("set", b"k", b"x", noreply=True)]),
    "set extra token ignored": (b"set k 0 0 1 later\r\nx\r\n", [store("set", b"k", b"x")]),
    "set empty value": (b"set k 0 0 0\r\n\r\n", [store("set", b"k", b"")]),
    "set value holding CRLF": (b"set k 0 0 4\r\na\r\nb\r\n", [store("set", b"k", b"a\r\nb")]),
    "set bare newline header": (b"set k 0 0 1\nx\r\n", [store("set", b"k", b"x")]),
    "set longest key": (b"set " + KEY_250 + b" 0 0 1\r\nx\r\n", [store("set", KEY_250, b"x")]),
    "set extreme numbers": (b"set k 4294967295 -2147483648 1\r\nx\r\n",
                            [store("set", b"k", b"x", flags=2**32 - 1, exptime=-2**31)]),
    "set signed exptime": (b"set k 0 +5 1\r\nx\r\n", [store("set", b"k", b"x", exptime=5)]),
    "set leading zeros": (b"set k 007 010 01\r\nx\r\n",
                          [store("set", b"k", b"x", flags=7, exptime=10)]),
    "cas": (b"cas k 1 2 3 99\r\nabc\r\n", [store("cas", b"k", b"abc", 1, 2, cas_unique=99)]),
    "cas noreply": (b"cas k 0 0 1 18446744073709551615 noreply\r\nx\r\n",
                    [store("cas", b"k", b"x", noreply=True, cas_unique=2**64 - 1)]),
    # storage refused as memcached refuses it: its data block is not read, so memcached
    # (and the router) read it as the next command line
    "set key too long": (b"set " + KEY_251 + b" 0 0 3\r\nabc\r\n", [BAD_FORMAT, Unknown(b"abc")]),
    "set key too long noreply": (b"set " + KEY_251 + b" 0 0 3 noreply\r\nabc\r\n",
                                 [ClientError(BAD_FORMAT_TEXT, noreply=True), Unknown(b"abc")]),
    "set flags negative": (b"set k -1 0 3\r\nabc\r\n", [BAD_FORMAT, Unknown(b"abc")]),
    "set flags underscore": (b"set k 1_0 0 3\r\nabc\r\n", [BAD_FORMAT, Unknown(b"abc")]),
    "set exptime word": (b"set k 0 soon 3\r\nabc\r\n", [BAD_FORMAT, Unknown(b"abc")]),
    "set flags past 64 bits": (b"set k 18446744073709551616 0 1\r\nx\r\n",
                               [BAD_FORMAT, Unknown(b"x")]),
    "cas unique bad": (b"cas k 0 0 3 -1\r\nabc\r\n", [BAD_FORMAT, Unknown(b"abc")]),
    "cas unique too big": (b"cas k 0 0 3 18446744073709551616\r\nabc\r\n",
                           [BAD_FORMAT, Unknown(b"abc")]),
    "set bad format noreply": (b"set k x 0 3 noreply\r\nabc\r\n",
                               [ClientError(BAD_FORMAT_TEXT, noreply=True), Unknown(b"abc")]),
    # numbers as C reads them: a sign, 32-bit variables keeping the low 32 bits
    "set flags past 32 bits": (b"set k 4294967297 0 3\r\nabc\r\n",
                               [store("set", b"k", b"abc", flags=1)]),
    "set exptime past 31 bits": (b"set k 0 2147483648 3\r\nabc\r\n",
                                 [store("set", b"k", b"abc", exptime=-2**31)]),
    "set plus signs": (b"set k +5 +0 +1\r\nx\r\n", [store("set", b"k", b"x", flags=5)]),
    "cas plus sign": (b"cas k 0 0 1 +5\r\nx\r\n", [store("cas", b"k", b"x", cas_unique=5)]),
    # the router's own refusal (a control byte in a key): the data block is swallowed
    "set key with control": (b"set a\x01 0 0 3\r\nabc\r\n", [ClientError("invalid key")]),
    # storage refused without a usable byte count: nothing to swallow, memcached reads on
    "set bytes negative": (b"set k 0 0 -1\r\n", [BAD_FORMAT]),
    "set bytes word": (b"set k 0 0 abc\r\nabc\r\n", [BAD_FORMAT, Unknown(b"abc")]),
    "set bytes over int32": (b"set k 0 0 2147483646\r\n", [BAD_FORMAT]),
    "set noreply as bytes": (b"set k 0 0 noreply\r\n",
                             [ClientError("bad command line format", noreply=True)]),
    "set too few args": (b"set k 0 0\r\n", [Unknown(b"set")]),
    "set too many args": (b"set k 0 0 1 noreply x\r\nx\r\n", [Unknown(b"set"), Unknown(b"x")]),
    "cas without unique": (b"cas k 0 0 1\r\nx\r\n", [Unknown(b"cas"), Unknown(b"x")]),
    # bad data chunk: the rest of the line after the block is dropped
    "bad data chunk": (b"set k 0 0 3\r\nabcd\r\n", [ClientError("bad data chunk")]),
    "bad data chunk noreply": (b"set k 0 0 3 noreply\r\nabcdef\r\n",
                               [ClientError("bad data chunk", noreply=True)]),
    "bad data chunk bare LF": (b"set k 0 0 3\r\nabc\nquit\r\n",
                               [ClientError("bad data chunk"), Quit()]),
    "short data": (b"set k 0 0 8\r\nabc\r\nget k\r\n", [ClientError("bad data chunk")]),
    # delete
    "delete": (b"delete k\r\n", [Delete(b"k", False)]),
    "delete noreply": (b"delete k noreply\r\n", [Delete(b"k", True)]),
    "delete legacy zero": (b"delete k 0\r\n", [Delete(b"k", False)]),
    "delete legacy zero noreply": (b"delete k 0 noreply\r\n", [Delete(b"k", True)]),
    "delete hold time": (b"delete k 5\r\n", [ClientError(DELETE_USAGE)]),
    "delete hold time noreply": (b"delete k 5 noreply\r\n", [ClientError(DELETE_USAGE, True)]),
    "delete junk": (b"delete k 0 junk\r\n", [ClientError(DELETE_USAGE)]),
    "delete no key": (b"delete\r\n", [Unknown(b"delete")]),
    "delete too many": (b"delete k 0 noreply x\r\n", [Unknown(b"delete")]),
    "delete key too long": (b"delete " + KEY_251 + b"\r\n", [BAD_FORMAT]),
    "delete key too long noreply": (b"delete " + KEY_251 + b" noreply\r\n",
                                    [ClientError(BAD_FORMAT_TEXT, noreply=True)]),
    # touch
    "touch": (b"touch k 10\r\n", [Touch(b"k", 10, False)]),
    "touch noreply": (b"touch k -1 noreply\r\n", [Touch(b"k", -1, True)]),
    "touch bad exptime": (b"touch k soon\r\n", [ClientError("invalid exptime argument")]),
    "touch bad exptime noreply": (b"touch k soon noreply\r\n",
                                  [ClientError("invalid exptime argument", True)]),
    "touch invalid key": (b"touch a\x02 10\r\n", [ClientError("invalid key")]),
    "touch no exptime": (b"touch k\r\n", [Unknown(b"touch")]),
    # the rest
    "version": (b"version\r\n", [Version()]),
    "version ignores args": (b"version please\r\n", [Version()]),
    "stats": (b"stats\r\n", [Stats(())]),
    "stats args": (b"stats items  detail\r\n", [Stats((b"items", b"detail"))]),
    "quit": (b"quit\r\n", [Quit()]),
    "unknown": (b"frob k 1\r\n", [Unknown(b"frob")]),
    # incr/decr
    "incr": (b"incr k 5\r\n", [Arith(b"k", True, 5, False)]),
    "decr noreply": (b"decr k 18446744073709551615 noreply\r\n",
                     [Arith(b"k", False, 2**64 - 1, True)]),
    "incr delta too big": (b"incr k 18446744073709551616\r\n",
                           [ClientError("invalid numeric delta argument")]),
    "incr negative delta noreply": (b"incr k -1 noreply\r\n",
                                    [ClientError("invalid numeric delta argument", True)]),
    "incr no delta": (b"incr k\r\n", [Unknown(b"incr")]),
    "decr junk after": (b"decr k 1 noreply x\r\n", [Unknown(b"decr")]),
    "incr key too long": (b"incr " + KEY_251 + b" 1\r\n", [BAD_FORMAT]),
    "incr plus sign": (b"incr k +1\r\n", [Arith(b"k", True, 1, False)]),
    "incr fourth word ignored": (b"incr k 1 x\r\n", [Arith(b"k", True, 1, False)]),
    "touch key too long": (b"touch " + KEY_251 + b" 1\r\n", [BAD_FORMAT]),
    "gat key too long": (b"gat 1 " + KEY_251 + b"\r\n", [BAD_FORMAT]),
    # gat/gats
    "gat": (b"gat 10 a b\r\n", [GetAndTouch(10, (b"a", b"b"), False)]),
    "gats": (b"gats -1 a\r\n", [GetAndTouch(-1, (b"a",), True)]),
    "gat no keys": (b"gat 10\r\n", [GetAndTouch(10, (), False)]),
    "gat nothing": (b"gat\r\n", [Unknown(b"gat")]),
    "gat bad exptime": (b"gat x k\r\n", [ClientError("invalid exptime argument")]),
    "gat invalid key": (b"gat 1 a\x02\r\n", [ClientError("invalid key")]),
    # flush_all
    "flush_all": (b"flush_all\r\n", [FlushAll(0, False)]),
    "flush_all noreply": (b"flush_all noreply\r\n", [FlushAll(0, True)]),
    "flush_all delay noreply": (b"flush_all 30 noreply\r\n", [FlushAll(30, True)]),
    "flush_all delay and junk": (b"flush_all 30 x\r\n", [FlushAll(30, False)]),
    "flush_all bad delay noreply": (b"flush_all x noreply\r\n",
                                    [ClientError("invalid exptime argument", True)]),
    "flush_all too many": (b"flush_all 0 noreply x\r\n", [Unknown(b"flush_all")]),
    # verbosity, cache_memlimit, shutdown
    "verbosity": (b"verbosity 1\r\n", [Admin("verbosity", False, 1)]),
    "verbosity noreply": (b"verbosity 0 noreply\r\n", [Admin("verbosity", True)]),
    "verbosity no level": (b"verbosity\r\n", [Unknown(b"verbosity")]),
    "verbosity only noreply": (b"verbosity noreply\r\n", [ClientError(BAD_FORMAT_TEXT, True)]),
    "verbosity word": (b"verbosity x\r\n", [ClientError(BAD_FORMAT_TEXT)]),
    "verbosity too many": (b"verbosity 1 2 3\r\n", [Unknown(b"verbosity")]),
    "cache_memlimit": (b"cache_memlimit 100\r\n", [Admin("cache_memlimit", False, 100)]),
    "cache_memlimit word noreply": (b"cache_memlimit x noreply\r\n",
                                    [Unknown(b"cache_memlimit", True)]),
    "cache_memlimit nothing": (b"cache_memlimit\r\n", [Unknown(b"cache_memlimit")]),
    "shutdown": (b"shutdown\r\n", [Admin("shutdown", False)]),
    "shutdown graceful noreply": (b"shutdown graceful noreply\r\n", [Admin("shutdown", True)]),
    "uppercase is unknown": (b"GET k\r\n", [Unknown(b"GET")]),
    # a request line of HTTP closes the connection, as in memcached
    "http get": (b"GET / HTTP/1.1\r\n", [Close()]),
    "http post": (b"POST /form HTTP/1.0\r\n", [Close()]),
    "http put": (b"PUT /x HTTP/1.1\r\n", [Close()]),
    "http delete": (b"DELETE /x HTTP/1.1\r\n", [Close()]),
    "http any version": (b"HEAD / HTTP/2\r\n", [Close()]),
    "http not last word": (b"GET / HTTP/1.1 x\r\n", [Unknown(b"GET")]),
    "http after a command letter": (b"gx / HTTP/1.1\r\n", [Unknown(b"gx")]),
    "http after a meta command": (b"mx / HTTP/1.1\r\n", [Unknown(b"mx")]),
    "lru_crawler unknown": (b"lru_crawler foo\r\n", [Unknown(b"lru_crawler")]),
    "watch alone": (b"watch\r\n", [Watch(frozenset({"fetchers"}))]),
    "watch flags": (b"watch fetchers mutations\r\n",
                    [Watch(frozenset({"fetchers", "mutations"}))]),
    "watch unknown flag": (b"watch fetchers bogus\r\n", [Unknown(b"watch")]),
    "verbosity plus sign": (b"verbosity +1\r\n", [Admin("verbosity", False, 1)]),
    "slabs automove": (b"slabs automove 1\r\n", [Admin("slabs_automove", False, 1)]),
    "slabs automove noreply": (b"slabs automove 0 noreply\r\n",
                               [Admin("slabs_automove", True, 0)]),
    "slabs automove word": (b"slabs automove invalid\r\n", [BAD_FORMAT]),
    "slabs automove past 2": (b"slabs automove 3\r\n", [Unknown(b"slabs")]),
    "slabs automove ratio": (b"slabs automove ratio 0.8\r\n", [Admin("slabs_automove", False)]),
    "slabs automove no ratio": (b"slabs automove ratio\r\n", [Unknown(b"slabs")]),
    "slabs reassign": (b"slabs reassign 1 2\r\n", [Admin("slabs_reassign", False)]),
    "slabs other": (b"slabs frob\r\n", [Unknown(b"slabs")]),
    "empty line": (b"\r\n", [Unknown(b"")]),
    "empty bare line": (b"\n", [Unknown(b"")]),
    "blank line": (b"   \r\n", [Unknown(b"")]),
    "pipeline": (b"set a 0 0 1 noreply\r\n1\r\nget a b\r\ndelete a\r\n",
                 [store("set", b"a", b"1", noreply=True), Get((b"a", b"b"), False),
                  Delete(b"a", False)]),
    # line length
    "longest line": (b"x" * 2048 + b"\r\n", [Unknown(b"x" * 2048)]),
    "longest bare line": (b"x" * 2048 + b"\n", [Unknown(b"x" * 2048)]),
    "line too long": (b"x" * 2049 + b"\r\n", [ClientError("line too long")]),
    "bare line too long": (b"x" * 2049 + b"\n", [ClientError("line too long")]),
    "set line too long": (b"set " + b"k" * 3000 + b" 0 0 1\r\n", [ClientError("line too long")]),
    "far too long": (b"y" * 100_000 + b"\r\n", [ClientError("line too long")]),
}


@pytest.mark.parametrize("data, expected", CASES.values(), ids=CASES.keys())
def test_parses(data, expected):
    assert_parses(data, expected)


def test_get_thousands_of_keys():
    keys = tuple(b"key-%05d" % i for i in range(3000))
    assert_parses(b"get " + b" ".join(keys) + b"\r\n", [Get(keys, False)])


def test_get_line_limit():
    keys = b" ".join([b"k" * 10] * 10)  # 109 bytes
    line = b"gets " + keys
    get = [Get(tuple(keys.split()), True)]
    assert_parses(line + b"\r\n", get, max_line=20, max_get_line=len(line))
    assert_parses(line + b"\n", get, max_line=20, max_get_line=len(line))
    too_long = [ClientError("line too long")]
    assert_parses(line + b"\r\n", too_long, max_line=20, max_get_line=len(line) - 1)
    assert_parses(b"stats " + keys + b"\r\n", too_long, max_line=20, max_get_line=len(line))
    assert MAX_GET_LINE > 4096 * 251


def test_value_at_size_limit():
    assert_parses(b"set k 0 0 10\r\n" + b"v" * 10 + b"\r\n",
                  [store("set", b"k", b"v" * 10)], item_size_max=10)


@pytest.mark.parametrize("noreply", [False, True])
def test_value_too_large_is_swallowed(noreply):
    header = b"set k 0 0 11" + (b" noreply" if noreply else b"") + b"\r\n"
    assert_parses(header + b"v" * 9 + b"\r\n\r\n", [ServerError(TOO_LARGE, noreply, b"k")],
                  item_size_max=10)


def test_value_of_one_mebibyte():
    value = bytes(range(256)) * 4096
    data = b"set big 1 0 %d\r\n" % len(value) + value + b"\r\n" + TRAILER
    expected = [store("set", b"big", value, flags=1), Version()]
    assert parse_whole(data) == expected
    assert parse_chunks([data[i:i + 65536] for i in range(0, len(data), 65536)]) == expected


def test_value_too_large_is_counted_down_not_buffered():
    size = 3 * 1024 * 1024
    parser = MemcacheParser()
    parser.receive_data(b"set big 0 0 %d\r\n" % size)
    assert list(parser.events()) == [ServerError(TOO_LARGE, key=b"big")]
    chunk = b"v" * 65536
    for _ in range(size // len(chunk)):
        parser.receive_data(chunk)
        assert parser.buffered == 0
        assert list(parser.events()) == []
    parser.receive_data(b"\r\nget big\r\n")
    assert list(parser.events()) == [Get((b"big",), False)]
    assert parser.buffered == 0


def test_unterminated_line_is_dropped_as_it_arrives():
    parser = MemcacheParser()
    events = []
    for _ in range(100):
        parser.receive_data(b"z" * 10_000)
        events.extend(parser.events())
        assert parser.buffered <= 10_000
    parser.receive_data(b"zz\r\nquit\r\n")
    events.extend(parser.events())
    assert events == [ClientError("line too long"), Quit()]


def test_value_waits_for_its_line_end():
    parser = MemcacheParser()
    parser.receive_data(b"set k 0 0 3\r\nabc")
    assert parser.next_event() is None
    parser.receive_data(b"\r")
    assert parser.next_event() is None
    parser.receive_data(b"\n")
    assert parser.next_event() == store("set", b"k", b"abc")
    assert parser.next_event() is None


def lend_lines(chunks, take=b"get ") -> tuple[list, list]:
    """Feed ``chunks`` as a connection does, lending the parser's buffer to a reader that
    takes every whole line starting with ``take``, as the data plane takes plain gets:
    (lines taken, events the parser gave)."""
    parser = MemcacheParser()
    taken, events = [], []

    def read(buf, pos, table, max_line, max_keys, answer_max):
        nl = buf.find(b"\n", pos)
        if not buf.startswith(take, pos) or nl < 0:
            return pos, None
        return nl + 1, bytes(buf[pos:nl + 1])

    for chunk in chunks:
        parser.receive_data(chunk)
        while True:
            line = parser.lend(read, None, 1, 1)
            if line is not None:
                taken.append(line)
                continue
            event = parser.next_event()
            if event is None:
                break
            events.append(event)
    assert parser.buffered == 0
    return taken, events


@pytest.mark.parametrize("split", ["whole", "bytes", "trailer"])
def test_a_caller_may_read_lines_between_commands_but_never_inside_one(split):
    # "get " inside a value is data, not a line to lend; after it the next line is.
    data = b"get a\r\nset k 0 0 7\r\nget b\r\n\r\nget c\r\n"
    chunks = {"whole": [data], "bytes": [data[i:i + 1] for i in range(len(data))],
              "trailer": [data + TRAILER]}[split]
    taken, events = lend_lines(chunks)
    assert taken == [b"get a\r\n", b"get c\r\n"]
    assert events == [store("set", b"k", b"get b\r\n")] + ([Version()] if split == "trailer" else [])


def test_no_line_is_lent_while_a_refused_value_or_line_is_discarded():
    parser = MemcacheParser(item_size_max=4)
    asked = []

    def read(buf, pos, *limits):
        asked.append(bytes(buf[pos:]))
        return pos, None

    parser.receive_data(b"set k 0 0 10\r\nget x")
    assert parser.next_event() == ServerError(TOO_LARGE, False, b"k")
    assert parser.lend(read, None, 1, 1) is None and asked == []  # the refused value is still arriving
    parser.receive_data(b"yzzzz\r\n")
    assert parser.next_event() is None  # discarded: between commands again
    parser.receive_data(b"get a\r\n")
    parser.lend(read, None, 1, 1)
    assert asked == [b"get a\r\n"]


def test_events_are_frozen():
    with pytest.raises(AttributeError):
        Get((b"k",), False).keys = ()


# Hypothesis: any split of a pipeline gives the events of the whole buffer.

_key_bytes = st.binary(min_size=1, max_size=30).map(
    lambda raw: bytes(0x21 + b % 0x5E if b < 0x80 else b for b in raw))  # no controls, no DEL
keys = st.one_of(_key_bytes, st.integers(240, 250).map(lambda n: b"K" * n))
eols = st.sampled_from([b"\r\n", b"\n"])
noreplies = st.booleans()


@st.composite
def retrievals(draw):
    cmd = draw(st.sampled_from([b"get", b"gets"]))
    ks = draw(st.lists(keys, min_size=1, max_size=6))
    return cmd + b" " + b" ".join(ks) + draw(eols), [Get(tuple(ks), cmd == b"gets")]


@st.composite
def storages(draw):
    cmd = draw(st.sampled_from(["set", "add", "replace", "append", "prepend", "cas"]))
    key = draw(keys)
    flags = draw(st.integers(0, 2**32 - 1))
    exptime = draw(st.integers(-2**31, 2**31 - 1))
    value = draw(st.binary(max_size=300) | st.sampled_from([b"\r\n", b"a\r\nb", b"\n\n"]))
    cas_unique = draw(st.integers(0, 2**64 - 1)) if cmd == "cas" else None
    noreply = draw(noreplies)
    line = b"%s %s %d %d %d" % (cmd.encode(), key, flags, exptime, len(value))
    if cas_unique is not None:
        line += b" %d" % cas_unique
    line += (b" noreply" if noreply else b"") + draw(eols) + value + b"\r\n"
    return line, [Store(cmd, key, flags, exptime, value, noreply, cas_unique)]


@st.composite
def deletes(draw):
    key, zero, noreply = draw(keys), draw(st.booleans()), draw(noreplies)
    line = b"delete " + key + (b" 0" if zero else b"") + (b" noreply" if noreply else b"")
    return line + draw(eols), [Delete(key, noreply)]


@st.composite
def touches(draw):
    key, exptime, noreply = draw(keys), draw(st.integers(-2**31, 2**31 - 1)), draw(noreplies)
    line = b"touch %s %d%s" % (key, exptime, b" noreply" if noreply else b"")
    return line + draw(eols), [Touch(key, exptime, noreply)]


simple = st.sampled_from([
    (b"version\r\n", [Version()]),
    (b"stats\r\n", [Stats(())]),
    (b"stats slabs\n", [Stats((b"slabs",))]),
    (b"quit\r\n", [Quit()]),
])

# Refused commands, whose recovery must not depend on how the bytes arrive either.
refused = st.sampled_from([
    (b"\r\n", [Unknown(b"")]),
    (b"frob k 1\r\n", [Unknown(b"frob")]),
    (b"incr k -1 noreply\r\n", [ClientError("invalid numeric delta argument", True)]),
    (b"flush_all x\r\n", [ClientError("invalid exptime argument")]),
    (b"w" * 2100 + b"\r\n", [ClientError("line too long")]),
    (b"get " + KEY_251 + b"\r\n", [BAD_FORMAT]),
    (b"set " + KEY_251 + b" 0 0 5\r\nhello\r\n", [BAD_FORMAT, Unknown(b"hello")]),
    (b"set k 0 0 300\r\n" + b"v" * 300 + b"\r\n", [ServerError(TOO_LARGE, key=b"k")]),
    (b"set k 0 0 2\r\nabcd\r\n", [ClientError("bad data chunk")]),
    (b"touch k x\r\n", [ClientError("invalid exptime argument")]),
])

commands = st.one_of(retrievals(), storages(), deletes(), touches(), simple)
PIPELINE_OPTIONS = {"item_size_max": 299}  # 300-byte values are refused, smaller ones not


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _pipeline(parts):
    return b"".join(p[0] for p in parts), [e for p in parts for e in p[1]]


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, min_size=1, max_size=12), st.data())
def test_valid_pipeline_any_split(parts, data):
    wire, expected = _pipeline(parts)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    assert parse_whole(wire, **PIPELINE_OPTIONS) == expected
    assert parse_chunks(_split(wire, cuts), **PIPELINE_OPTIONS) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(commands | refused, min_size=1, max_size=12), st.data())
def test_pipeline_with_refusals_any_split(parts, data):
    wire, expected = _pipeline(parts)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    assert parse_whole(wire, **PIPELINE_OPTIONS) == expected
    assert parse_chunks(_split(wire, cuts), **PIPELINE_OPTIONS) == expected


_fragments = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"get ", b"set ", b"cas ", b"delete ", b"touch ", b"k", b" 0", b" 3",
                     b" -1", b" noreply", b"\r\n", b"\n", b"\r", b"  ", b"x" * 1200]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragments, max_size=30).map(b"".join), st.data())
def test_garbage_never_raises_and_splits_agree(wire, data):
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    options = {"item_size_max": 8}
    parser = MemcacheParser(**options)
    parser.receive_data(wire)
    whole = list(parser.events())
    split = MemcacheParser(**options)
    events = []
    for chunk in _split(wire, cuts):
        split.receive_data(chunk)
        events.extend(split.events())
    assert events == whole


# Answers.

def test_constants():
    assert (END, STORED, NOT_STORED, EXISTS, NOT_FOUND, DELETED, TOUCHED, ERROR) == (
        b"END\r\n", b"STORED\r\n", b"NOT_STORED\r\n", b"EXISTS\r\n", b"NOT_FOUND\r\n",
        b"DELETED\r\n", b"TOUCHED\r\n", b"ERROR\r\n")


def test_value_line():
    assert value_line(b"k", 5, b"abc") == b"VALUE k 5 3\r\nabc\r\n"
    assert value_line(b"k", 0, b"", cas=42) == b"VALUE k 0 0 42\r\n\r\n"
    assert value_line(b"caf\xc3\xa9", 4294967295, b"a\r\nb", cas=0) == (
        b"VALUE caf\xc3\xa9 4294967295 4 0\r\na\r\nb\r\n")


def test_error_lines():
    assert client_error("bad data chunk") == b"CLIENT_ERROR bad data chunk\r\n"
    assert server_error("object too large for cache") == (
        b"SERVER_ERROR object too large for cache\r\n")
    # A line break in a message (say an exception's text) must not end the answer early.
    assert server_error("source failed:\r\nboom\nagain") == (
        b"SERVER_ERROR source failed: boom again\r\n")


@pytest.mark.parametrize("line, event", [
    (b"lru_crawler metadump all\r\n", Metadump(b"all")),
    (b"lru_crawler metadump 1,2\r\n", Metadump(b"1,2")),
    (b"lru_crawler metadump\r\n", Unknown(b"lru_crawler")),  # memcached's ERROR
    (b"lru_crawler crawl all\r\n", Unknown(b"lru_crawler")),  # no crawler to start
])
def test_lru_crawler_metadump_and_nothing_else_of_it(line, event):
    assert parse_whole(line + TRAILER) == [event, Version()]


def test_version_line():
    assert version_line("1.6.21-ringcache") == b"VERSION 1.6.21-ringcache\r\n"


def test_stat_lines():
    assert stat_lines([("pid", 12), ("version", "0.1.0"), ("rusage_user", 0.5)]) == (
        b"STAT pid 12\r\nSTAT version 0.1.0\r\nSTAT rusage_user 0.5\r\nEND\r\n")
    assert stat_lines([]) == b"END\r\n"


NOW = 1_700_000_000.25


@pytest.mark.parametrize("exptime, ttl", [
    (0, None),
    (1, 1.0),
    (60, 60.0),
    (2_592_000, 2_592_000.0),  # 30 days: still relative
    (1_700_000_010, 9.75),  # absolute, in the future
    (1_700_000_000, EXPIRED),  # absolute, in the past
    (2_592_001, EXPIRED),  # absolute, 1970
    (-1, EXPIRED),
    (-2**31, EXPIRED),
])
def test_exptime_to_ttl(exptime, ttl):
    assert exptime_to_ttl(exptime, NOW) == ttl


def test_exptime_absolute_now_is_expired():
    assert exptime_to_ttl(1_700_000_000, 1_700_000_000.0) == EXPIRED
    assert EXPIRED == "expired"
