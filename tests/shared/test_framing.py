"""The sans-I/O frame codec: whole buffers, one byte at a time, any split, bounded size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import ringcache_pb2 as pb
from shared.framing import (
    MAX_FRAME,
    FrameDecoder,
    FrameError,
    decode_payload,
    encode_batch,
    encode_frame,
)

PAYLOADS = [b"first", b"", b"\x00\x00\x00\x05", b"x" * 300]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def decode_chunks(chunks, max_frame=MAX_FRAME) -> tuple[list[bytes], FrameDecoder]:
    decoder = FrameDecoder(max_frame)
    payloads = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        payloads.extend(decoder.frames())
    return payloads, decoder


def test_encode_frame_is_a_big_endian_length_then_the_payload():
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_whole_buffer():
    payloads, decoder = decode_chunks([STREAM])
    assert payloads == PAYLOADS
    assert decoder.buffered == 0


def test_one_byte_at_a_time():
    payloads, decoder = decode_chunks([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert payloads == PAYLOADS
    assert decoder.buffered == 0


@given(st.data())
def test_any_split(data):
    cuts = sorted(data.draw(st.sets(st.integers(1, len(STREAM) - 1))))
    edges = [0, *cuts, len(STREAM)]
    payloads, decoder = decode_chunks([STREAM[a:b] for a, b in zip(edges, edges[1:])])
    assert payloads == PAYLOADS
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=50), max_size=10), st.data())
def test_any_payloads_any_split(payloads, data):
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)))))
    edges = [0, *cuts, len(stream)]
    assert decode_chunks([stream[a:b] for a, b in zip(edges, edges[1:])])[0] == payloads


@pytest.mark.parametrize("partial", [b"\x00\x00", b"\x00\x00\x00\x04ab"], ids=["header", "payload"])
def test_trailing_partial_frame_waits_for_the_rest(partial):
    payloads, decoder = decode_chunks([STREAM + partial])
    assert payloads == PAYLOADS
    assert decoder.buffered == len(partial)
    assert decoder.next_frame() is None
    decoder.receive_data(b"\x00\x00\x00\x04abcd"[len(partial):])
    assert list(decoder.frames()) == [b"abcd"]
    assert decoder.buffered == 0


def test_exactly_max_frame_is_accepted():
    payloads, _ = decode_chunks([encode_frame(b"y" * 16, max_frame=16)], max_frame=16)
    assert payloads == [b"y" * 16]


def test_over_max_frame_raises_as_soon_as_the_header_is_in():
    decoder = FrameDecoder(max_frame=16)
    decoder.receive_data(b"\x00\x00\x00\x11")  # 17: no payload byte needed to know
    with pytest.raises(FrameError, match="frame of 17 bytes exceeds the limit of 16"):
        decoder.next_frame()


def test_default_limit_is_max_frame():
    decoder = FrameDecoder()
    decoder.receive_data((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        decoder.next_frame()
    decoder = FrameDecoder()
    decoder.receive_data(MAX_FRAME.to_bytes(4, "big"))
    assert decoder.next_frame() is None  # accepted, waiting for the payload


def test_encoding_over_max_frame_is_our_bug_not_a_frame_error():
    with pytest.raises(ValueError, match="exceeds MAX_FRAME 16"):
        encode_frame(b"z" * 17, max_frame=16)


def test_batches_round_trip():
    requests = [pb.Request(id=1, op=pb.GET, group="g", key=b"k"), pb.Request(id=2, op=pb.PING)]
    responses = [pb.Response(id=1, value=b"v", flags=3)]
    decoder = FrameDecoder()
    decoder.receive_data(encode_batch(requests=requests) + encode_batch(responses=responses))
    first, second = (decode_payload(p) for p in decoder.frames())
    assert list(first.requests) == requests and not first.responses
    assert list(second.responses) == responses and not second.requests


def test_an_undecodable_payload_is_a_frame_error():
    with pytest.raises(FrameError, match="undecodable frame"):
        decode_payload(b"garbage!")


def test_a_frame_read_whole_is_handed_out_without_a_copy():
    decoder = FrameDecoder()
    data = encode_frame(b"first") + encode_frame(b"second")
    decoder.receive_data(data)
    first, second = decoder.frames()
    assert isinstance(first, memoryview) and first.obj is data
    assert (bytes(first), bytes(second)) == (b"first", b"second")
    assert decoder.buffered == 0


def test_a_frame_split_over_reads_is_gathered_and_copied_once():
    decoder = FrameDecoder()
    data = encode_frame(b"x" * 100)
    decoder.receive_data(data[:30])
    assert decoder.next_frame() is None
    assert decoder.buffered == 30
    decoder.receive_data(data[30:] + encode_frame(b"y"))
    whole, after = decoder.frames()
    assert (type(whole), whole) == (bytes, b"x" * 100)
    assert bytes(after) == b"y"


def test_a_frame_that_ends_the_buffer_is_handed_out_as_the_buffer_itself():
    decoder = FrameDecoder()
    data = encode_frame(b"x" * 100)
    decoder.receive_data(data[:30])
    assert decoder.next_frame() is None
    decoder.receive_data(data[30:])
    (whole,) = decoder.frames()
    assert isinstance(whole, memoryview) and bytes(whole) == b"x" * 100
    decoder.receive_data(encode_frame(b"next")[:3])  # a new buffer: the old one is the frame's
    decoder.receive_data(encode_frame(b"next")[3:])
    assert [bytes(p) for p in decoder.frames()] == [b"next"]
    assert bytes(whole) == b"x" * 100


def test_what_a_reader_left_unread_comes_before_the_next_read():
    # The node stops taking frames while a peer does not read its answers.
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"a") + encode_frame(b"b"))
    assert bytes(decoder.next_frame()) == b"a"
    decoder.receive_data(encode_frame(b"c"))
    assert [bytes(p) for p in decoder.frames()] == [b"b", b"c"]


def test_missing_says_how_much_of_a_frame_is_still_to_come():
    decoder = FrameDecoder()
    assert decoder.missing == 0
    data = encode_frame(b"x" * 100)
    decoder.receive_data(data[:2])  # not even the length yet
    assert decoder.missing == 0
    decoder.receive_data(data[2:30])
    assert decoder.next_frame() is None
    assert decoder.missing == 104 - 30
    decoder.receive_data(data[30:])
    assert bytes(decoder.next_frame()) == b"x" * 100
    assert decoder.missing == 0
