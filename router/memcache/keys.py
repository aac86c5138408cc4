"""memcached's rules for a key, for every protocol and the data plane: at most
KEY_MAX_LENGTH bytes, none of them a space or a control byte; ``GROUP:KEY`` names a group;
and how many distinct keys one get may name.

The compiled data plane (router/dataplane/_getrun.c) reads these at import too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import quote_from_bytes

KEY_MAX_LENGTH = 250

NOT_IN_KEYS = bytes(range(0x21)) + b"\x7f"  # controls, space, DEL

# Distinct keys one get may name: each is a node read and maybe a source load.
MAX_KEYS_PER_GET = 4096


Group = TypeVar("Group")


def split_group(key: bytes, groups: Mapping[bytes, Group], default: Group) -> tuple[Group, bytes]:
    """The group a client key addresses and the key within it: ``GROUP:KEY`` is KEY of
    ``groups[GROUP]`` when there is such a group; any other key, whole, is in ``default``."""
    prefix, sep, rest = key.partition(b":")
    group = groups.get(prefix) if sep else None
    if group is None:
        return default, key
    return group, rest


def client_key(group: str, key: bytes, default: str) -> bytes:
    """The client key that reads ``key`` of ``group`` (split_group's inverse): GROUP:KEY,
    or the key alone in the default group."""
    return key if group == default else group.encode() + b":" + key


def uri_encoded(key: bytes) -> bytes:
    """A key as memcached's listings print it (metadump, cachedump, watch): %-encoded."""
    return quote_from_bytes(key, safe="").encode()


def has_illegal_byte(data: bytes) -> bool:
    """Whether ``data`` (a key, or keys joined) holds a byte no key may hold."""
    return len(data.translate(None, NOT_IN_KEYS)) != len(data)
