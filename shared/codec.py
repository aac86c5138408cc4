"""The node wire's hot operations: the compiled shared._codec when it is built, else its
pure-Python twin shared.codec_py (also forced by RINGCACHE_PURE_PYTHON=1). Both read and
write exactly what shared/ringcache.proto's messages serialize to."""

from __future__ import annotations

import os

if os.environ.get("RINGCACHE_PURE_PYTHON"):
    from shared.codec_py import *  # noqa: F401,F403
else:
    try:
        from shared._codec import *  # noqa: F401,F403
    except ImportError:
        from shared.codec_py import *  # noqa: F401,F403
