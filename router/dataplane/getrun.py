"""Gets routed a batch at a time: the compiled router.dataplane._getrun when it is built,
else its pure-Python twin router.dataplane.getrun_py (also forced by
RINGCACHE_PURE_PYTHON=1).

``take_gets`` routes the plain get lines at the head of a client's buffer; ``route_gets``
routes gets whose keys the text parser already split, so every get takes this one path.
"""

from __future__ import annotations

import os

if os.environ.get("RINGCACHE_PURE_PYTHON"):
    from router.dataplane.getrun_py import *  # noqa: F401,F403
else:
    try:
        from router.dataplane._getrun import *  # noqa: F401,F403
    except ImportError:
        from router.dataplane.getrun_py import *  # noqa: F401,F403


def route_gets(gets, table, answer_max: int, take_gets=take_gets):  # noqa: F405
    """The GetRun of ``gets`` (each with ``keys``, legal memcached keys, and ``with_cas``):
    the gets the parser read itself (odd spacing, more keys than take_gets takes in one
    line), written back as plain lines and routed by ``take_gets`` (the selected twin's
    unless a test names one) as every other get is."""
    text = b"".join((b"gets " if g.with_cas else b"get ") + b" ".join(g.keys) + b"\r\n"
                    for g in gets)
    most = max(len(g.keys) for g in gets)
    pos, run = take_gets(bytearray(text), 0, table, len(text), most, answer_max)
    if run is None or pos != len(text):
        raise ValueError("route_gets was given keys that are not memcached keys")
    return run
