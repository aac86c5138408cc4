"""shared/codec's hot wire operations, every test run against both twins: the compiled
shared._codec and the pure-Python shared.codec_py. What they write is what the protobuf
library writes; what the library writes they read back field for field."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings

from shared import codec_py
from shared import ringcache_pb2 as pb
from shared.wire import REQUESTS, RESPONSES, WireError, encode_groups, len_field
from tests.shared.wire_strategies import pb_request, pb_response, requests, responses


def _compiled():
    try:
        return importlib.import_module("shared._codec")
    except ImportError as exc:  # the build compiles it; its absence is a failure here
        pytest.fail(f"shared._codec is not built ({exc}): run `make install`")


@pytest.fixture(params=["compiled", "pure"])
def codec(request):
    return _compiled() if request.param == "compiled" else codec_py


BOTH = [pytest.param("compiled", id="compiled"), pytest.param("pure", id="pure")]


def pick(name):
    return _compiled() if name == "compiled" else codec_py


def test_the_selector_takes_the_compiled_module():
    from shared import codec

    assert codec.COMPILED is True and codec.append_request is _compiled().append_request


@pytest.mark.parametrize("name", BOTH)
@given(r=requests())
@settings(max_examples=200)
def test_append_request_writes_what_protobuf_serializes(name, r):
    buf = bytearray(b"head")
    pick(name).append_request(buf, r["rid"], r["op"], r["group"], r["key"], r["value"],
                              r["ttl"], r["flags"], r["negative"], r["keys"],
                              encode_groups(r["groups"]), r["cas"], r["delta"], r["lease"],
                              r["lease_ttl"], r["meta"])
    assert bytes(buf) == b"head" + len_field(REQUESTS, pb_request(r).SerializeToString())


def test_append_prepared_puts_the_id_first(codec):
    buf = bytearray()
    body = b"\x10\x15" + b"\x1a\x01g" + b"\x52\x01a"  # op GET_MANY, group g, key a
    codec.append_prepared(buf, 300, body)
    assert bytes(buf) == len_field(REQUESTS, pb.Request(
        id=300, op=pb.GET_MANY, group="g", keys=[b"a"]).SerializeToString())


@pytest.mark.parametrize("name", BOTH)
@given(r=responses())
@settings(max_examples=200)
def test_append_response_writes_what_protobuf_serializes(name, r):
    buf = bytearray()
    stats = r["stats"].SerializeToString() if r["stats"] is not None else b""
    pick(name).append_response(buf, r["rid"], r["status"], r["value"], r["error"], r["flags"],
                               stats, r["negative"], r["values"], r["cas"], r["lease"],
                               r["stale"], r["meta"])
    expected = pb_response({**r, "ttl": 0.0})  # (a ttl is answered by a message: storage_node/ops.py)
    if r["stats"] is not None and not stats:
        expected.ClearField("stats")  # an empty sub-message is not written by ours
    assert bytes(buf) == len_field(RESPONSES, expected.SerializeToString())


@pytest.mark.parametrize("name", BOTH)
@given(r=requests())
@settings(max_examples=200)
def test_decode_requests_reads_what_protobuf_wrote(name, r):
    payload = pb.Frame(requests=[pb_request(r), pb.Request(id=7, op=pb.PING)]).SerializeToString()
    first, second = pick(name).decode_requests(payload)
    assert (first.id, first.op, first.group, first.key, first.value, first.ttl, first.flags,
            first.negative, list(first.keys), list(first.groups), first.cas, first.delta,
            first.lease, first.lease_ttl, first.meta) == (
        r["rid"], r["op"], r["group"], r["key"], r["value"], r["ttl"], r["flags"],
        r["negative"], r["keys"], r["groups"], r["cas"], r["delta"], r["lease"],
        r["lease_ttl"], r["meta"])
    assert (second.id, second.op, second.key, list(second.keys)) == (7, pb.PING, b"", [])


@pytest.mark.parametrize("name", BOTH)
@given(r=responses())
@settings(max_examples=200)
def test_decode_responses_reads_what_protobuf_wrote(name, r):
    payload = pb.Frame(responses=[pb_response(r)]).SerializeToString()
    (ours,) = pick(name).decode_responses(payload)
    assert (ours.id, ours.status, ours.value, ours.error, ours.flags, ours.negative,
            list(ours.values), ours.cas, ours.ttl, ours.lease, ours.stale, ours.meta) == (
        r["rid"], r["status"], r["value"], r["error"], r["flags"], r["negative"], r["values"],
        r["cas"], r["ttl"], r["lease"], r["stale"], r["meta"])
    assert ours.stats == (r["stats"] or pb.NodeStats())


def test_values_read_as_a_sequence_of_bytes(codec):
    payload = pb.Frame(responses=[pb.Response(id=1, values=[b"\x00a", b"", b"\x00bc"])]
                       ).SerializeToString()
    (response,) = codec.decode_responses(payload)
    values = response.values
    assert len(values) == 3
    assert (values[0], values[1], values[-1]) == (b"\x00a", b"", b"\x00bc")
    assert list(values) == [b"\x00a", b"", b"\x00bc"]


def test_a_known_field_of_another_wire_type_is_skipped_as_protobuf_does(codec):
    # Frame.responses as a varint, Response.value (3) as a varint, then a real response.
    payload = b"\x10\x01" + len_field(RESPONSES, b"\x08\x02\x18\x07\x10\x01")
    assert pb.Frame.FromString(payload).responses[0].value == b""
    (response,) = codec.decode_responses(payload)
    assert (response.id, response.status, response.value) == (2, 1, b"")


def test_unknown_fields_are_skipped_as_protobuf_does(codec):
    # Fields 15 (varint), 16 (length-delimited), 17 (fixed32), 18 (fixed64) in a Response.
    message = (b"\x08\x05" + b"\x78\x01" + b"\x82\x01\x02hi" + b"\x8d\x01abcd"
               + b"\x91\x01" + b"12345678" + b"\x1a\x01v")
    assert pb.Response.FromString(message).value == b"v"
    (response,) = codec.decode_responses(len_field(RESPONSES, message))
    assert (response.id, response.value) == (5, b"v")


@pytest.mark.parametrize("payload", [
    b"\x12\x05\x08",  # a message longer than what is left
    b"\x12\x02\x08\x80",  # a varint cut short
    b"\x12\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint over 64 bits
    b"\x12\x03\x22\x01\xff",  # an error string that is not UTF-8
    b"\x12\x02\x0b\x00",  # wire type 3 (groups) in a Response
])
def test_malformed_payloads_raise_wire_error(codec, payload):
    with pytest.raises(WireError):
        codec.decode_responses(payload)


def test_malformed_requests_raise_wire_error(codec):
    with pytest.raises(WireError):
        codec.decode_requests(b"\x0a\x04\x1a\x02\xc3\x28")  # a group that is not UTF-8


class Core:
    """A core's get, recording the keys asked."""

    def __init__(self, entries):
        self.entries = entries
        self.asked = []

    def get(self, key):
        self.asked.append(key)
        return self.entries.get(key)


def test_append_get_many_answers_each_key_in_order(codec):
    core = Core({b"a": b"\x00A", b"c": b"\x00CC"})
    buf = bytearray(b"x")
    hits, added = codec.append_get_many(buf, 9, core.get, [b"a", b"b", b"c", b"a"], 1000)
    assert core.asked == [b"a", b"b", b"c", b"a"]
    expected = len_field(RESPONSES, pb.Response(
        id=9, values=[b"\x00A", b"", b"\x00CC", b"\x00A"]).SerializeToString())
    assert (hits, added, bytes(buf)) == (3, len(expected), b"x" + expected)


def test_append_get_many_over_its_room_adds_nothing(codec):
    core = Core({b"a": b"\x00" + b"A" * 100})
    buf = bytearray(b"x")
    assert codec.append_get_many(buf, 9, core.get, [b"a", b"a"], 150) is None
    assert bytes(buf) == b"x"
    assert codec.append_get_many(buf, 9, core.get, [b"a"], 150) is not None


@pytest.mark.parametrize("rid", [9, 0])
def test_append_get_many_leaves_large_entries_apart_in_pieces(codec, rid):
    # The node sends such an answer without copying its large entries into the frame:
    # put back at their offsets, they make exactly the answer written whole.
    big, bigger = b"\x00" + b"B" * 300, b"\x00" + b"C" * 20000
    core = Core({b"a": b"\x00A", b"b": big, b"c": bigger})
    keys = [b"b", b"a", b"missing", b"c", b"b"]
    whole = bytearray(b"x")
    expected = codec.append_get_many(whole, rid, core.get, keys, 100000)
    buf, pieces = bytearray(b"x"), []
    assert codec.append_get_many(buf, rid, core.get, keys, 100000, pieces, 300) == expected
    assert [entry for _, entry in pieces] == [big, bigger, big]
    joined, at = b"", 0
    for offset, entry in pieces:
        joined += bytes(buf[at:offset]) + entry
        at = offset
    assert joined + bytes(buf[at:]) == bytes(whole)
    # Nothing that large, or no list: written whole.
    small, none = bytearray(), []
    codec.append_get_many(small, rid, core.get, keys, 100000, none, 30000)
    assert (bytes(small), none) == (bytes(whole[1:]), [])


def test_append_get_many_lets_a_core_error_through_adding_nothing(codec):
    def broken(key):
        if key == b"b":
            raise RuntimeError("disk on fire")
        return b"\x00v"

    buf = bytearray(b"x")
    with pytest.raises(RuntimeError, match="disk on fire"):
        codec.append_get_many(buf, 1, broken, [b"a", b"b"], 1000)
    assert bytes(buf) == b"x"


def test_large_ids_and_flags_survive(codec):
    buf = bytearray()
    codec.append_request(buf, 2**64 - 1, pb.GET, "g", b"k", flags=2**32 - 1)
    (request,) = codec.decode_requests(bytes(buf))
    assert (request.id, request.flags) == (2**64 - 1, 2**32 - 1)


def test_a_payload_may_be_a_view_into_what_was_read(codec):
    frame = pb.Frame(responses=[pb.Response(id=4, values=[b"\x00abc", b""])]).SerializeToString()
    read = b"HEAD" + frame + b"TAIL"
    (response,) = codec.decode_responses(memoryview(read)[4:4 + len(frame)])
    assert (response.id, list(response.values)) == (4, [b"\x00abc", b""])
