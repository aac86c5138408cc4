"""memcached's meta commands (mg ms md ma mn me): their command lines read into events, and
their answers written, without I/O. memcache_parser.py hands this module the tokens of a
line starting with a meta command; router/memcache/meta_commands.py carries the events out.

Following memcached 1.6's protocol.txt: a command is two letters, a key, then flags of one
letter each, some with a token (``T30``, ``Oabc``). Answers echo the requested flags in
the order they were asked. The anti-stampede flags are memcached's: mg ``N`` (vivify on a
miss), ``R`` (win a recache), answers with ``W``/``X``/``Z``, md ``I`` (mark stale) and
``T``, ms ``I`` (storage_node/meta_ops.py keeps the item bits). Flags ringcache cannot
honour (``E``, ``h``, ``l``, ``x``) are refused with memcached's ``CLIENT_ERROR invalid
flag`` rather than ignored, except ``u`` (no LRU bump), which changes nothing a client can
see.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from router.memcache.keys import KEY_MAX_LENGTH, has_illegal_byte
from router.memcache.numbers import strtol32, strtoul32, strtoull

OPAQUE_MAX = 32
_INT32_MAX = (1 << 31) - 1

# The flags each command takes, and the kind of token each flag carries: None for none,
# "int" a 32-bit signed number, "u32"/"u64" unsigned, "text" any token, "mode" one letter.
_FLAGS = {
    "mg": {"b": None, "c": None, "f": None, "k": None, "O": "text", "q": None, "s": None,
           "t": None, "u": None, "v": None, "T": "int", "N": "int", "R": "int"},
    "ms": {"b": None, "c": None, "k": None, "O": "text", "q": None, "s": None, "I": None,
           "T": "int", "F": "u32", "C": "u64", "M": "mode"},
    "md": {"b": None, "k": None, "O": "text", "q": None, "I": None, "C": "u64", "T": "int"},
    "ma": {"b": None, "c": None, "k": None, "O": "text", "q": None, "t": None, "v": None,
           "N": "int", "J": "u64", "D": "u64", "T": "int", "M": "mode"},
    "me": {},
}
_NUMBERS = {"int": strtol32, "u32": strtoul32, "u64": strtoull}
MODES = {"ms": {"E": "add", "A": "append", "P": "prepend", "R": "replace", "S": "set"},
         "ma": {"I": "incr", "i": "incr", "+": "incr", "D": "decr", "d": "decr", "-": "decr"}}


@dataclass(frozen=True, slots=True)
class Meta:
    """One meta command. ``flags`` maps each flag given to its token (None for a bare
    flag); ``order`` is the flags in the order given, for the answer. ``key`` is the
    key to use (base64-decoded under ``b``), ``wire_key`` the key as sent."""

    command: str
    key: bytes = b""
    wire_key: bytes = b""
    flags: dict | None = None
    order: str = ""
    value: bytes = b""

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def get(self, flag: str, default=None):
        token = self.flags.get(flag)
        return default if token is None else token

    @property
    def quiet(self) -> bool:
        return "q" in self.flags


class MetaError(ValueError):
    """A meta command refused: its text is memcached's CLIENT_ERROR message; ``skip`` is
    the length of an ms data block to discard, if one follows."""

    def __init__(self, message: str, skip: int | None = None):
        super().__init__(message)
        self.skip = skip


def parse(tokens: list[bytes]) -> tuple[Meta, int | None]:
    """The Meta for one command line's tokens, and for ``ms`` the length of the data
    block that follows (None otherwise). Raises MetaError, with the byte count of a data
    block still to be skipped in ``args[1]`` when there is one."""
    command = tokens[0].decode()
    if command == "mn":
        return Meta("mn", flags={}), None
    if len(tokens) < 2:
        raise LookupError(command)  # no key: memcached's ERROR
    nbytes = None
    rest = tokens[2:]
    if command == "ms":
        # memcached refuses these before it knows the data block's size: none is skipped.
        nbytes = strtol32(tokens[2]) if len(tokens) > 2 else None
        if len(tokens[1]) > KEY_MAX_LENGTH or nbytes is None or not 0 <= nbytes <= _INT32_MAX - 2:
            raise MetaError("bad command line format")
        rest = tokens[3:]
    try:
        flags, order = _flags(command, rest)
        key = _key(tokens[1], "b" in flags)
    except MetaError as exc:
        raise MetaError(str(exc), nbytes) from None
    return Meta(command, key, tokens[1], flags, order), nbytes


def _key(token: bytes, b64: bool) -> bytes:
    if b64:
        try:
            key = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            raise MetaError("error decoding key") from None
        if not key:
            raise MetaError("error decoding key")
        return key
    if len(token) > KEY_MAX_LENGTH or has_illegal_byte(token):
        raise MetaError("bad command line format")
    return token


def _flags(command: str, tokens: list[bytes]) -> tuple[dict, str]:
    allowed = _FLAGS[command]
    strict = command in ("md", "ma")  # their refusals have one wording in memcached
    flags: dict = {}
    order = []
    for token in tokens:
        flag = chr(token[0])
        kind = allowed.get(flag, "?")
        if kind == "?" or flag in flags:
            if strict:
                raise MetaError("invalid or duplicate flag")
            raise MetaError("duplicate flag" if flag in flags else "invalid flag")
        arg = token[1:]
        flags[flag] = None if kind is None else _token(command, flag, kind, arg, strict)
        order.append(flag)
    return flags, "".join(order)


def _token(command: str, flag: str, kind: str, arg: bytes, strict: bool):
    if kind == "text":
        if len(arg) > OPAQUE_MAX:
            raise MetaError("opaque token too long")
        return arg
    if kind == "mode":
        mode = MODES[command].get(arg.decode("latin-1"))
        if mode is None or len(arg) != 1:
            raise MetaError(f"invalid mode for {command} M token")
        return mode
    value = _NUMBERS[kind](arg)
    if value is not None:
        return value
    if strict:
        raise MetaError("invalid or duplicate flag")
    if command == "ms" and flag in "FC":
        raise MetaError("bad command line format")
    raise MetaError("bad token in command line format")


# -- answers ------------------------------------------------------------------------------

MN = b"MN\r\n"
EN = b"EN\r\n"


def answer(code: bytes, meta: Meta, item: dict) -> bytes:
    """``code`` (HD, VA, NF, NS, EX) with the return flags ``meta`` asked for, taken from
    ``item`` (c: cas, f: flags, s: size, t: ttl, v: value; k, O and b come from the
    request), then the value block for VA. A flag the item has no value for is left out."""
    parts = [code]
    if code == b"VA":
        parts.append(b"%d" % len(item["v"]))
    for flag in meta.order:
        if flag == "k":
            parts.append(b"k" + meta.wire_key)
            if "b" in meta.flags:
                parts.append(b"b")
        elif flag == "O":
            parts.append(b"O" + meta.flags["O"])
        elif flag in "cfst" and flag in item:
            parts.append(b"%b%d" % (flag.encode(), item[flag]))
    for extra in item.get("extra", ()):
        parts.append(extra)
    line = b" ".join(parts) + b"\r\n"
    if code == b"VA":
        return line + item["v"] + b"\r\n"
    return line


def key_token(key: bytes, b64: bool) -> bytes:
    return base64.b64encode(key) if b64 else key
