"""The snapshot file format (shared/snapshot.py): blocks round-trip, and a file that is cut,
flipped or foreign anywhere is refused, never half read."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import entry
from shared.snapshot import (
    HAS_DEADLINE,
    MAGIC,
    NO_RANK,
    CutShort,
    GroupHeader,
    Header,
    Reader,
    SnapshotError,
    Trailer,
    decode_entries,
    encode_entries,
    read_blocks,
)


def header(groups=2) -> Header:
    return Header(node="node-a", created_at=1_700_000_000.5,
                  groups=[GroupHeader(f"g{i}", "adaptive", 1 << 20, None) for i in range(groups)],
                  journal=7, final=True)


def entries_block(group=0, n=3, key_size=3, value_size=5) -> tuple[bytes, list[tuple]]:
    keys = [bytes([65 + i % 26]) * key_size + b"%d" % i for i in range(n)]
    stored = [entry.pack(b"v" * value_size, flags=i, cas=100 + i) for i in range(n)]
    ranks = bytearray((i % 4) | (HAS_DEADLINE if i % 2 else 0) for i in range(n))
    deadlines = [1_700_000_100.25 + i for i in range(n) if i % 2]
    expected = [(keys[i], stored[i], 1_700_000_100.25 + i if i % 2 else None, i % 4)
                for i in range(n)]
    return encode_entries(group, keys, stored, ranks, deadlines), expected


def a_file(blocks=2, per_block=3) -> tuple[bytes, list]:
    data, all_entries = bytearray(MAGIC + header().encode()), []
    for b in range(blocks):
        block, expected = entries_block(group=b % 2, n=per_block)
        data += block
        all_entries.append((b % 2, expected))
    counts = [sum(len(e) for g, e in all_entries if g == i) for i in range(2)]
    data += Trailer(entries=counts, blocks=blocks, cas=500).encode()
    return bytes(data), all_entries


def read_all(data: bytes):
    reader = Reader(io.BytesIO(data).read)
    return reader, list(reader.entry_blocks())


def test_a_file_reads_back_whole():
    data, expected = a_file()
    reader, blocks = read_all(data)
    assert reader.header == header()
    assert blocks == expected
    assert reader.trailer == Trailer(entries=[3, 3], blocks=2, cas=500)


def test_an_entry_block_keeps_keys_entries_deadlines_and_ranks():
    block, expected = entries_block(n=50)
    ((kind, payload),) = list(read_blocks(io.BytesIO(MAGIC + block).read))
    assert decode_entries(payload, groups=1) == (0, expected)


def test_long_keys_and_entries_take_wide_lengths():
    key, stored = b"k" * 70_000, b"\x00" + b"v" * 70_000
    block = encode_entries(0, [key, b"s"], [stored, b"\x00x"], bytearray([NO_RANK, 1]), [])
    ((_, payload),) = list(read_blocks(io.BytesIO(MAGIC + block).read))
    assert decode_entries(payload, groups=1) == (0, [(key, stored, None, None), (b"s", b"\x00x", None, 1)])


def test_the_file_is_about_its_entries_bytes():
    # 1,000 entries of a 20-byte key and an 80-byte value (+ kind and CAS unique): the
    # format's own bytes are 5 per entry (lengths and rank), 8 more with a deadline.
    keys = [b"key:%016d" % i for i in range(1000)]
    stored = [entry.pack(b"v" * 80, cas=i + 1) for i in range(1000)]
    block = encode_entries(0, keys, stored, bytearray(1000), [])
    raw = sum(map(len, keys)) + sum(map(len, stored))
    assert len(block) == raw + 5 * 1000 + 9 + 7


@pytest.mark.parametrize("cut", [0, 3, 8, 12, 40, -40, -1])
def test_a_cut_file_is_refused(cut):
    data, _ = a_file()
    with pytest.raises(SnapshotError):
        read_all(data[:cut])


def test_a_file_cut_at_a_block_boundary_lacks_its_trailer():
    data, _ = a_file()
    trailer = len(Trailer(entries=[3, 3], blocks=2, cas=500).encode())
    with pytest.raises(SnapshotError, match="no trailer"):
        read_all(data[:-trailer])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(data):
    whole, _ = a_file()
    at = data.draw(st.integers(0, len(whole) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(whole)
    damaged[at] ^= 1 << bit
    with pytest.raises(SnapshotError):
        read_all(bytes(damaged))


@pytest.mark.parametrize("data, problem", [
    (b"", "empty file"),
    (b"PK\x03\x04 a zip file, say", "no magic"),
    (MAGIC, "no header block"),
])
def test_a_foreign_file_is_refused(data, problem):
    with pytest.raises(SnapshotError, match=problem):
        read_all(data)


def test_a_newer_format_version_is_refused():
    newer = Header(node="n", created_at=0, groups=[], format=2)
    with pytest.raises(SnapshotError, match="format version 2"):
        read_all(MAGIC + newer.encode() + Trailer().encode())


def test_data_after_the_trailer_is_refused():
    data, _ = a_file()
    block, _ = entries_block()
    with pytest.raises(SnapshotError, match="after the trailer"):
        read_all(data + block)


def test_a_trailer_that_disagrees_is_refused():
    data = MAGIC + header().encode() + entries_block()[0] + Trailer(entries=[2, 0], blocks=1).encode()
    with pytest.raises(SnapshotError, match="disagree"):
        read_all(data)


def test_an_entry_block_naming_a_group_the_header_has_not_is_refused():
    data = MAGIC + header(groups=1).encode() + entries_block(group=1)[0] + Trailer([0], 1).encode()
    with pytest.raises(SnapshotError, match="names group 1 of 1"):
        read_all(data)


def test_a_block_cut_inside_is_cut_short():
    block, _ = entries_block()
    with pytest.raises(CutShort):
        list(read_blocks(io.BytesIO(MAGIC + block[:-1]).read))
