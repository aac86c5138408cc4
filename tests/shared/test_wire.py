"""shared/wire.py against the protobuf library: the same bytes out, on random requests and
responses (tests/shared/wire_strategies.py, which also drive tests/shared/test_codec.py)."""

from __future__ import annotations

from hypothesis import given, settings

from shared import ringcache_pb2 as pb
from shared import wire
from tests.shared.wire_strategies import pb_request, requests


def ours_request(r) -> bytes:
    return wire.encode_request(r["rid"], r["op"], r["group"].encode(), r["key"], r["value"],
                               r["ttl"], r["flags"], r["negative"], r["keys"],
                               wire.encode_groups(r["groups"]), r["cas"], r["delta"],
                               r["lease"], r["lease_ttl"], r["meta"])


@given(requests())
@settings(max_examples=300)
def test_a_request_is_encoded_byte_for_byte_as_protobuf_does(r):
    assert ours_request(r) == pb_request(r).SerializeToString()






def test_the_tags_are_the_schemas():
    fields = {f.name: f for f in pb.Request.DESCRIPTOR.fields}
    wire_type = {fields["ttl"].TYPE_DOUBLE: 1, fields["key"].TYPE_BYTES: 2,
                 fields["group"].TYPE_STRING: 2, fields["groups"].TYPE_MESSAGE: 2}
    for name, tag in vars(wire.Tag).items():
        if name.isupper():
            field = fields[name.lower()]
            assert tag == field.number << 3 | wire_type.get(field.type, 0), name
    frame = {f.name: f.number for f in pb.Frame.DESCRIPTOR.fields}
    assert (wire.REQUESTS, wire.RESPONSES) == (frame["requests"] << 3 | 2,
                                                 frame["responses"] << 3 | 2)


def test_frames_of_ours_are_read_by_the_library():
    payload = (wire.len_field(wire.REQUESTS, wire.encode_request(1, pb.GET_MANY, b"g",
                                                                   keys=[b"a", b"", b"c"]))
               + wire.len_field(wire.REQUESTS, wire.encode_request(2, pb.SET, b"g", b"k",
                                                                     b"v", 1.5, 3)))
    frame = pb.Frame.FromString(payload)
    assert frame.requests[0] == pb.Request(id=1, op=pb.GET_MANY, group="g", keys=[b"a", b"", b"c"])
    assert frame.requests[1] == pb.Request(id=2, op=pb.SET, group="g", key=b"k", value=b"v",
                                           ttl=1.5, flags=3)


