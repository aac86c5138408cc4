"""Hypothesis strategies for the router-node wire: random requests and responses, and the
protobuf messages they must equal."""

from __future__ import annotations

from hypothesis import strategies as st

from shared import ringcache_pb2 as pb

ids = st.integers(0, 2**64 - 1)
names = st.text(max_size=20)
blobs = st.binary(max_size=300)
ops = st.sampled_from(list(pb.Op.values()))
statuses = st.sampled_from(list(pb.Status.values()))
ttls = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e9))
configs = st.lists(st.builds(pb.GroupConfig, name=names, policy=names,
                             max_bytes=st.integers(0, 2**64 - 1),
                             stale_while_revalidate=ttls, stale_if_error=ttls), max_size=3)


@st.composite
def requests(draw):
    return dict(rid=draw(ids), op=draw(ops), group=draw(names), key=draw(blobs),
                value=draw(blobs), ttl=draw(ttls), flags=draw(st.integers(0, 2**32 - 1)),
                negative=draw(st.booleans()), keys=draw(st.lists(blobs, max_size=5)),
                groups=draw(configs), cas=draw(ids), delta=draw(ids), lease=draw(ids),
                lease_ttl=draw(ttls), meta=draw(st.integers(0, 2**32 - 1)))


def pb_request(r) -> pb.Request:
    return pb.Request(id=r["rid"], op=r["op"], group=r["group"], key=r["key"], value=r["value"],
                      ttl=r["ttl"], flags=r["flags"], negative=r["negative"], keys=r["keys"],
                      groups=r["groups"], cas=r["cas"], delta=r["delta"], lease=r["lease"],
                      lease_ttl=r["lease_ttl"], meta=r["meta"])


@st.composite
def responses(draw):
    stats = draw(st.one_of(st.none(), st.builds(
        pb.NodeStats, max_memory=st.integers(0, 2**40), uptime=st.floats(0, 1e6),
        groups=st.lists(st.builds(pb.GroupStats, name=names, items=st.integers(0, 99)),
                        max_size=2))))
    return dict(rid=draw(ids), status=draw(statuses), value=draw(blobs), error=draw(names),
                flags=draw(st.integers(0, 2**32 - 1)), stats=stats,
                negative=draw(st.booleans()), values=draw(st.lists(blobs, max_size=5)),
                cas=draw(ids), ttl=draw(st.floats(0, 1e9)), lease=draw(ids),
                stale=draw(st.sampled_from(list(pb.Stale.values()))),
                meta=draw(st.integers(0, 2**32 - 1)))


def pb_response(r) -> pb.Response:
    return pb.Response(id=r["rid"], status=r["status"], value=r["value"], error=r["error"],
                       flags=r["flags"], stats=r["stats"], negative=r["negative"],
                       values=r["values"], cas=r["cas"], ttl=r["ttl"], lease=r["lease"],
                       stale=r["stale"], meta=r["meta"])
