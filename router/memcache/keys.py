"""memcached's rule for a key, for every protocol and the data plane: at most
KEY_MAX_LENGTH bytes, none of them a space or a control byte; and how many distinct keys
one get may name.

The compiled data plane (router/dataplane/_getrun.c) reads these at import too.
"""

from __future__ import annotations

KEY_MAX_LENGTH = 250

NOT_IN_KEYS = bytes(range(0x21)) + b"\x7f"  # controls, space, DEL

# Distinct keys one get may name: each is a node read and maybe a source load.
MAX_KEYS_PER_GET = 4096


def has_illegal_byte(data: bytes) -> bool:
    """Whether ``data`` (a key, or keys joined) holds a byte no key may hold."""
    return len(data.translate(None, NOT_IN_KEYS)) != len(data)
