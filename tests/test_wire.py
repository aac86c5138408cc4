"""shared/wire.py against the protobuf library: the same bytes out, the same messages in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import ringcache_pb2 as pb
from shared import wire

ids = st.integers(0, 2**64 - 1)
names = st.text(max_size=20)
blobs = st.binary(max_size=300)
ops = st.sampled_from(list(pb.Op.values()))
statuses = st.sampled_from(list(pb.Status.values()))
ttls = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e9))
configs = st.lists(st.builds(pb.GroupConfig, name=names, policy=names,
                             max_bytes=st.integers(0, 2**64 - 1)), max_size=3)


@st.composite
def requests(draw):
    return dict(rid=draw(ids), op=draw(ops), group=draw(names), key=draw(blobs),
                value=draw(blobs), ttl=draw(ttls), flags=draw(st.integers(0, 2**32 - 1)),
                negative=draw(st.booleans()), keys=draw(st.lists(blobs, max_size=5)),
                groups=draw(configs), cas=draw(ids), delta=draw(ids))


def pb_request(r) -> pb.Request:
    return pb.Request(id=r["rid"], op=r["op"], group=r["group"], key=r["key"], value=r["value"],
                      ttl=r["ttl"], flags=r["flags"], negative=r["negative"], keys=r["keys"],
                      groups=r["groups"], cas=r["cas"], delta=r["delta"])


def ours_request(r) -> bytes:
    return wire.encode_request(r["rid"], r["op"], r["group"].encode(), r["key"], r["value"],
                               r["ttl"], r["flags"], r["negative"], r["keys"],
                               wire.encode_groups(r["groups"]), r["cas"], r["delta"])


@given(requests())
@settings(max_examples=300)
def test_a_request_is_encoded_byte_for_byte_as_protobuf_does(r):
    assert ours_request(r) == pb_request(r).SerializeToString()


@given(requests())
@settings(max_examples=300)
def test_a_request_protobuf_wrote_decodes_to_the_same_fields(r):
    frame = pb.Frame(requests=[pb_request(r), pb.Request(id=7, op=pb.PING)]).SerializeToString()
    first, second = wire.decode_requests(frame)
    assert (first.id, first.op, first.group, first.key, first.value, first.ttl, first.flags,
            first.negative, first.keys, first.groups, first.cas, first.delta) == (
        r["rid"], r["op"], r["group"], r["key"], r["value"], r["ttl"], r["flags"],
        r["negative"], r["keys"], r["groups"], r["cas"], r["delta"])
    assert (second.id, second.op, second.key) == (7, pb.PING, b"")


@st.composite
def responses(draw):
    stats = draw(st.one_of(st.none(), st.builds(
        pb.NodeStats, max_memory=st.integers(0, 2**40), uptime=st.floats(0, 1e6),
        groups=st.lists(st.builds(pb.GroupStats, name=names, items=st.integers(0, 99)),
                        max_size=2))))
    return dict(rid=draw(ids), status=draw(statuses), value=draw(blobs), error=draw(names),
                flags=draw(st.integers(0, 2**32 - 1)), stats=stats,
                negative=draw(st.booleans()), values=draw(st.lists(blobs, max_size=5)),
                cas=draw(ids))


def pb_response(r) -> pb.Response:
    return pb.Response(id=r["rid"], status=r["status"], value=r["value"], error=r["error"],
                       flags=r["flags"], stats=r["stats"], negative=r["negative"],
                       values=r["values"], cas=r["cas"])


@given(responses())
@settings(max_examples=300)
def test_a_response_is_encoded_byte_for_byte_as_protobuf_does(r):
    stats = r["stats"].SerializeToString() if r["stats"] is not None else b""
    ours = wire.encode_response(r["rid"], r["status"], r["value"], r["error"], r["flags"],
                                stats, r["negative"], r["values"], r["cas"])
    theirs = pb_response(r).SerializeToString()
    if r["stats"] is not None and not stats:
        # The library writes a present but empty sub-message; ours leaves it out.
        theirs = theirs.replace(b"\x32\x00", b"", 1)
    assert ours == theirs


@given(responses())
@settings(max_examples=300)
def test_a_response_protobuf_wrote_decodes_to_the_same_fields(r):
    frame = pb.Frame(responses=[pb_response(r)]).SerializeToString()
    (ours,) = wire.decode_responses(frame)
    assert (ours.id, ours.status, ours.value, ours.error, ours.flags, ours.negative,
            ours.values, ours.cas) == (r["rid"], r["status"], r["value"], r["error"],
                                       r["flags"], r["negative"], r["values"], r["cas"])
    assert ours.stats == (r["stats"] or pb.NodeStats())


def test_frames_of_ours_are_read_by_the_library():
    payload = (wire.frame_field(wire.REQUESTS, wire.encode_request(1, pb.GET_MANY, b"g",
                                                                   keys=[b"a", b"", b"c"]))
               + wire.frame_field(wire.REQUESTS, wire.encode_request(2, pb.SET, b"g", b"k",
                                                                     b"v", 1.5, 3)))
    frame = pb.Frame.FromString(payload)
    assert frame.requests[0] == pb.Request(id=1, op=pb.GET_MANY, group="g", keys=[b"a", b"", b"c"])
    assert frame.requests[1] == pb.Request(id=2, op=pb.SET, group="g", key=b"k", value=b"v",
                                           ttl=1.5, flags=3)


def test_unknown_fields_are_skipped_as_protobuf_does():
    # Field 15 (varint), 16 (length-delimited), 17 (fixed32), 18 (fixed64) in a Response.
    message = (b"\x08\x05" + b"\x78\x01" + b"\x82\x01\x02hi" + b"\x8d\x01abcd"
               + b"\x91\x01" + b"12345678" + b"\x1a\x01v")
    (response,) = wire.decode_responses(wire.frame_field(wire.RESPONSES, message))
    assert (response.id, response.value) == (5, b"v")
    assert pb.Response.FromString(message).value == b"v"


@pytest.mark.parametrize("payload", [
    b"\x12\x05\x08",  # a message longer than what is left
    b"\x12\x02\x08\x80",  # a varint cut short
    b"\x12\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint over 64 bits
    b"\x12\x02\x23\x00",  # wire type 3 (groups) is not supported
    b"\x12\x03\x22\x01\xff",  # an error string that is not UTF-8
    b"\x12\x02\x1b\x00",  # value with the wrong wire type
    b"\x10\x01",  # Frame.responses as a varint
    b"\x12\x01\x00",  # field number 0
])
def test_malformed_bytes_raise_wire_error(payload):
    with pytest.raises(wire.WireError):
        wire.decode_responses(payload)


def test_large_ids_and_flags_survive():
    message = wire.encode_request(2**64 - 1, pb.GET, b"g", b"k", flags=2**32 - 1)
    (request,) = wire.decode_requests(wire.frame_field(wire.REQUESTS, message))
    assert (request.id, request.flags) == (2**64 - 1, 2**32 - 1)
