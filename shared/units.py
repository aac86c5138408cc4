"""Parse human sizes ("64MiB") and durations ("500ms") as topology.yaml and the CLI write them."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4, "": 1,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: an int, or a number with B/KiB/MiB/GiB (KB/MB/GB are decimal)."""
    if isinstance(text, bool):
        raise ValueError(f"expected a size like 64MiB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative, got {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a size like 64MiB, got {text!r}")
    m = _NUMBER_UNIT.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 512KiB, 64MiB or 1GiB, got {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``: a number of seconds, or a number with ms/s/m/h."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like 500ms, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text}")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like 500ms, got {text!r}")
    m = _NUMBER_UNIT.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _DURATION_UNITS:
        raise ValueError(f"expected a duration like 500ms, 30s, 5m or 1h, got {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[unit]


def format_size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"
