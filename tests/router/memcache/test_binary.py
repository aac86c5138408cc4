"""The sans-I/O binary-protocol parser and encoder: every request parsed whole, a byte at a
time, with trailing data and split anywhere (Hypothesis), and answers byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.memcache import binary as mb
from router.memcache.binary import BinaryParser, Invalid, ProtocolError, Request
from tests.router.memcache.binary_packets import ARITH, STORE, packet

MAX_BODY = 1000





CASES = {
    "get": (packet(mb.GET, b"k"), Request(mb.GET, b"k", b"", b"", 0xDEADBEEF, 0)),
    "getkq": (packet(mb.GETKQ, b"key"), Request(mb.GETKQ, b"key", b"", b"", 0xDEADBEEF, 0)),
    "set with cas": (packet(mb.SET, b"k", STORE, b"value", cas=99),
                     Request(mb.SET, b"k", STORE, b"value", 0xDEADBEEF, 99)),
    "empty value": (packet(mb.ADDQ, b"k", STORE), Request(mb.ADDQ, b"k", STORE, b"", 0xDEADBEEF, 0)),
    "append": (packet(mb.APPEND, b"k", value=b"tail"),
               Request(mb.APPEND, b"k", b"", b"tail", 0xDEADBEEF, 0)),
    "incr": (packet(mb.INCR, b"n", ARITH), Request(mb.INCR, b"n", ARITH, b"", 0xDEADBEEF, 0)),
    "flush bare": (packet(mb.FLUSH), Request(mb.FLUSH, b"", b"", b"", 0xDEADBEEF, 0)),
    "flush delay": (packet(mb.FLUSHQ, extras=b"\0\0\0\x05"),
                    Request(mb.FLUSHQ, b"", b"\0\0\0\x05", b"", 0xDEADBEEF, 0)),
    "stat with key": (packet(mb.STAT, b"items"), Request(mb.STAT, b"items", b"", b"", 0xDEADBEEF, 0)),
    "noop": (packet(mb.NOOP, opaque=1), Request(mb.NOOP, b"", b"", b"", 1, 0)),
    "gat": (packet(mb.GATKQ, b"k", b"\0\0\0\x01"),
            Request(mb.GATKQ, b"k", b"\0\0\0\x01", b"", 0xDEADBEEF, 0)),
    "key of 250": (packet(mb.DELETE, b"k" * 250), Request(mb.DELETE, b"k" * 250, b"", b"", 0xDEADBEEF, 0)),
    # Refused, the connection going on.
    "unknown opcode": (packet(0x55, b"k"), Invalid(0x55, 0xDEADBEEF, mb.UNKNOWN_COMMAND)),
    "sasl": (packet(0x20), Invalid(0x20, 0xDEADBEEF, mb.UNKNOWN_COMMAND)),
    "get with extras": (packet(mb.GET, b"k", b"abcd"), Invalid(mb.GET, 0xDEADBEEF, mb.EINVAL)),
    "get with value": (packet(mb.GET, b"k", value=b"v"), Invalid(mb.GET, 0xDEADBEEF, mb.EINVAL)),
    "get without key": (packet(mb.GET), Invalid(mb.GET, 0xDEADBEEF, mb.EINVAL)),
    "set without extras": (packet(mb.SET, b"k", value=b"v"), Invalid(mb.SET, 0xDEADBEEF, mb.EINVAL)),
    "noop with key": (packet(mb.NOOP, b"k"), Invalid(mb.NOOP, 0xDEADBEEF, mb.EINVAL)),
    "key too long": (packet(mb.GET, b"k" * 251), Invalid(mb.GET, 0xDEADBEEF, mb.EINVAL)),
    "lengths past the body": (packet(mb.GET, b"k", keylen=5), Invalid(mb.GET, 0xDEADBEEF, mb.EINVAL)),
    "body too large": (packet(mb.SET, b"k", STORE, b"v" * MAX_BODY),
                       Invalid(mb.SET, 0xDEADBEEF, mb.E2BIG)),
}
TRAILER = packet(mb.NOOP, opaque=7)
TRAILER_EVENT = Request(mb.NOOP, b"", b"", b"", 7, 0)


def parse_chunks(chunks) -> list:
    parser = BinaryParser(MAX_BODY)
    events = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not None:
            events.append(event)
    assert parser.buffered == 0 and not parser.mid_command
    return events


@pytest.mark.parametrize("name", CASES)
def test_parses_whole(name):
    data, event = CASES[name]
    assert parse_chunks([data]) == [event]


@pytest.mark.parametrize("name", CASES)
def test_parses_a_byte_at_a_time(name):
    data, event = CASES[name]
    assert parse_chunks([data[i:i + 1] for i in range(len(data))]) == [event]


@pytest.mark.parametrize("name", CASES)
def test_parses_with_trailing_data(name):
    data, event = CASES[name]
    assert parse_chunks([data + TRAILER]) == [event, TRAILER_EVENT]


def test_an_oversized_body_is_skipped_as_it_arrives_not_held():
    parser = BinaryParser(MAX_BODY)
    parser.receive_data(packet(mb.SET, b"k", STORE, bodylen=10_000_000))
    assert parser.next_event() == Invalid(mb.SET, 0xDEADBEEF, mb.E2BIG)
    sent = len(STORE) + 1  # the extras and key came with the header
    for _ in range(99):
        parser.receive_data(b"x" * 100_000)
        assert parser.next_event() is None
        assert parser.buffered == 0
        sent += 100_000
    parser.receive_data(b"x" * (10_000_000 - sent) + TRAILER)
    assert parser.next_event() == TRAILER_EVENT


def test_a_partial_request_is_mid_command():
    parser = BinaryParser(MAX_BODY)
    parser.receive_data(packet(mb.GET, b"key")[:-1])
    assert parser.next_event() is None
    assert parser.mid_command and parser.buffered == 26


@pytest.mark.parametrize("magic", [0x81, 0x00, ord("g")])
def test_a_header_that_is_not_a_request_is_a_protocol_error(magic):
    parser = BinaryParser(MAX_BODY)
    parser.receive_data(TRAILER + packet(mb.NOOP, magic=magic))
    assert parser.next_event() == TRAILER_EVENT
    with pytest.raises(ProtocolError):
        parser.next_event()


_requests = st.sampled_from([c for c in CASES.values() if not isinstance(c[1], Invalid)
                             or c[1].status != mb.E2BIG])


@settings(max_examples=200, deadline=None)
@given(st.lists(_requests, min_size=1, max_size=10), st.data())
def test_a_pipeline_split_anywhere_parses_the_same(parts, data):
    wire = b"".join(p[0] for p in parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    bounds = [0, *cuts, len(wire)]
    chunks = [wire[a:b] for a, b in zip(bounds, bounds[1:])]
    assert parse_chunks(chunks) == [p[1] for p in parts]


def test_response_layout():
    assert mb.response(mb.GETK, 0x01020304, key=b"k", extras=b"\0\0\0\x07", value=b"val",
                       cas=5) == (b"\x81\x0c\x00\x01\x04\x00\x00\x00\x00\x00\x00\x08"
                                  b"\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x05"
                                  b"\x00\x00\x00\x07kval")


def test_error_answers_carry_memcacheds_words_and_nothing_else():
    answer = mb.error(mb.INCR, 9, mb.DELTA_BADVAL)
    magic, opcode, keylen, extlen, _, status, bodylen, opaque, cas = mb.HEADER.unpack_from(answer)
    assert (magic, opcode, keylen, extlen, status, opaque, cas) == (0x81, mb.INCR, 0, 0, 6, 9, 0)
    assert answer[24:] == b"Non-numeric server-side value for incr or decr"
    assert bodylen == len(answer) - 24
    assert mb.error(mb.GET, 1, mb.KEY_ENOENT)[24:] == b"Not found"
    assert mb.error(mb.GET, 1, mb.ETMPFAIL, b"node x down")[24:] == b"node x down"
