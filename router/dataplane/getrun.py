"""Gets routed a batch at a time: the compiled router.dataplane._getrun when it is built, else its
pure-Python twin router.getrun_py (also forced by RINGCACHE_PURE_PYTHON=1)."""

from __future__ import annotations

import os

if os.environ.get("RINGCACHE_PURE_PYTHON"):
    from router.dataplane.getrun_py import *  # noqa: F401,F403
else:
    try:
        from router.dataplane._getrun import *  # noqa: F401,F403
    except ImportError:
        from router.dataplane.getrun_py import *  # noqa: F401,F403
