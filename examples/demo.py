"""The demo's slow database: a few fixed scores, a computed one for any number, a pause per load."""

from __future__ import annotations

import time

SCORES = {"Tom": "630", "Jack": "589", "Sam": "567"}
# Long enough to see read-through (the first get is slow, the next fast) and singleflight
# (many concurrent gets of one key cost one pause); the router runs this in the source's
# own threads.
LOAD_DELAY = 0.1  # seconds


def score(key: str) -> str | None:
    """The score stored under ``key``, after a database-like pause; None when there is none."""
    time.sleep(LOAD_DELAY)
    if key in SCORES:
        return SCORES[key]
    if key.isascii() and key.isdigit():
        # int(key) * 7 % 1000 from the last three digits alone, so that no key is too long to convert.
        return f"score-{key}-{int(key[-3:]) * 7 % 1000}"
    return None
