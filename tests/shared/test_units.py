"""Sizes and durations as topology.yaml and the command line write them."""

from __future__ import annotations

import pytest

from shared.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    "text, size",
    [
        ("64MiB", 64 << 20),
        ("1GiB", 1 << 30),
        ("512KiB", 512 << 10),
        ("2TiB", 2 << 40),
        ("10B", 10),
        ("10", 10),
        ("0", 0),
        ("1.5KiB", 1536),
        (" 2 mib ", 2 << 20),
        ("1KB", 1000),
        ("3mb", 3_000_000),
        ("1GB", 10**9),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "MiB", "abc", "-1", "10XB", "1,5MiB", "1e3", -1, 1.5, True, None, b"1"])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_parse_size_error_says_what_was_expected():
    with pytest.raises(ValueError, match=r"expected a size like 512KiB, 64MiB or 1GiB, got '12XB'"):
        parse_size("12XB")


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2", 2.0),
        (" 10 MS ", 0.01),
        (2, 2.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize("bad", ["", "s", "5d", "-1s", "1m30s", -1, -0.5, True, None, [5]])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_duration_error_says_what_was_expected():
    with pytest.raises(ValueError, match=r"expected a duration like 500ms, 30s, 5m or 1h, got '5d'"):
        parse_duration("5d")


@pytest.mark.parametrize(
    "n, text",
    [(0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1536B"), (64 << 20, "64MiB"), (3 << 30, "3GiB")],
)
def test_format_size(n, text):
    assert format_size(n) == text
    assert parse_size(text) == n
