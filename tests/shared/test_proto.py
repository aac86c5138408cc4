"""The committed wire module is exactly what the schema generates."""

from __future__ import annotations


def test_schema_has_the_ops_and_room_for_more():
    from shared import ringcache_pb2 as pb

    ops = set(pb.Op.keys())
    assert {"GET", "SET", "DELETE", "TOUCH", "PING", "STATS", "CONFIGURE", "ADD", "REPLACE"} <= ops
    assert {"DUMP", "RESTORE"} <= ops  # 10 and 11: a group's entries out and back in
    # Op numbers 12-15 are the leases' and memcached's meta get; 16-19 stay free.
    assert {"LEASE_GET", "LEASE_FILL", "LEASE_RELEASE", "META_GET"} <= ops
    assert [pb.Op.Value(n) for n in ("LEASE_GET", "LEASE_FILL", "LEASE_RELEASE", "META_GET")] == [
        12, 13, 14, 15]
    from google.protobuf import descriptor_pb2

    schema = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(schema)
    op_enum = next(e for e in schema.enum_type if e.name == "Op")
    assert [(r.start, r.end) for r in op_enum.reserved_range] == [(16, 19)]
    # A batch round-trips through one Frame.
    frame = pb.Frame()
    frame.requests.add(id=1, op=pb.GET, group="g", key=b"k")
    frame.requests.add(id=2, op=pb.SET, group="g", key=b"k", value=b"v", ttl=1.5, flags=7)
    again = pb.Frame.FromString(frame.SerializeToString())
    assert [(r.id, r.op, r.value, r.ttl, r.flags) for r in again.requests] == [
        (1, pb.GET, b"", 0.0, 0), (2, pb.SET, b"v", 1.5, 7)]
